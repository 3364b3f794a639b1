"""Apply a finished dose pilot's pre-registered rule: the replay budget at which oracle replay beats random
replay by the most, or none when no budget shows headroom.

    python benchmarks/dose_selection.py configs/replay_dose_pilot.yaml   # writes OUTPUT/compare/selection.json

The rule is the one the config's header fixes (forgetscope.experiments.compare.dose). The chosen budget is
what `compare.budget` of configs/replay_completion.yaml takes; with none chosen that comparison is not run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    args = ap.parse_args()
    from forgetscope.errors import ForgetscopeError
    from forgetscope.experiments.compare import load_compare_config
    from forgetscope.experiments.compare.dose import write_selection
    from forgetscope.store.layout import SweepLayout

    try:
        cfg = load_compare_config(args.config)
        result = write_selection(cfg, SweepLayout(cfg.output))
    except ForgetscopeError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
