"""How often a matrix with no task x example interaction clears the top of the interaction's shuffle band,
with each shuffle double-centred again (as forgetscope does) and without (as it did before).

    python benchmarks/interaction_band_check.py   # writes benchmarks/results/interaction_band_check.json

F = row effects + column effects + noise (40 x 200, no interaction); per matrix, 20 within-row shuffles of
its interaction; the rate at which the observed R²(k) lies above the shuffles' 97.5th percentile, per k
(nominal 2.5 %; with 20 shuffles the percentile is itself noisy, so about 5 % is expected).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from forgetscope.analysis.marginals import interaction, permutation_baseline

MATRICES, SHUFFLES, K = 40, 20, 5
OUT = Path(__file__).resolve().parent / "results" / "interaction_band_check.json"


def main() -> None:
    t0 = time.perf_counter()
    above = {"recentred": np.zeros(K), "not_recentred": np.zeros(K)}
    for r in range(MATRICES):
        rng = np.random.default_rng(100 + r)
        F = rng.normal(0, 1, (40, 1)) + rng.normal(0, 1, (1, 200)) + 0.3 * rng.normal(size=(40, 200))
        E = interaction(F)
        for name, recentre in (("recentred", interaction), ("not_recentred", None)):
            p = permutation_baseline(E, K, n_shuffles=SHUFFLES, seed=r, metrics=("global",), recentre=recentre)
            above[name] += p.above("global")
    out = {"matrices": MATRICES, "shape": [40, 200], "shuffles": SHUFFLES,
           "rate_above_band_by_k": {name: (v / MATRICES).round(4).tolist() for name, v in above.items()},
           "wall_s": round(time.perf_counter() - t0, 1)}
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
