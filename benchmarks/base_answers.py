"""The base model's greedy answers to a regime pilot's instruction pairs, as text, so the answers criterion
(how many answers the base model knows before any fine-tune) can be read and not only counted.

    FORGETSCOPE_NO_PROGRESS=1 python benchmarks/base_answers.py configs/regimes/gemma3.yaml   # OUTPUT/base_answers.json

Loads the pilot's base model exactly as its sweeps do (the first candidate's sweep config: model, load, eval,
upstream), generates the greedy answer to every pair with a gold answer (the continuation exact match
scores) and records, per pair, the prompt, the gold answer, the greedy text and whether it matches; beside
it, ``em_before`` as the pilot's first sweep recorded it, when that sweep exists (the two must agree).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("FORGETSCOPE_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_throughput import cpu_description  # noqa: E402
from regime_tables import read_pilot  # noqa: E402


def recorded_em(store) -> dict[str, float]:
    """``em_before`` per example id from a sweep's upstream table ({} without one)."""
    if not store.has_upstream():
        return {}
    table = store.read_upstream()
    if "em_before" not in table:
        return {}
    return {str(k): float(v) for k, v in zip(table["example_id"], table["em_before"], strict=True) if v == v}


def main(argv: list[str] | None = None) -> int:
    read = read_pilot(argv, __doc__.splitlines()[0])
    if read is None:
        return 2
    pilot, path = read
    from forgetscope.errors import ForgetscopeError
    from forgetscope.experiments.regime_pilot import candidate_configs
    from forgetscope.experiments.session import SweepSession
    from forgetscope.measure.nll import answer_matches
    from forgetscope.store import SweepStore

    try:
        config = next(iter(candidate_configs(pilot).values()))
        session = SweepSession.prepare(config)
    except ForgetscopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pairs = [e for e in session.upstream if e.is_pair and e.answer]
    if not pairs:
        print(f"error: the pilot {path} has no instruction pairs with a gold answer", file=sys.stderr)
        return 2
    base, _ = session.base()
    texts = session.evaluator.answers(base, pairs)
    recorded = recorded_em(SweepStore(config.output))
    rows = [{"example_id": e.example_id, "prompt": e.prompt, "answer": e.answer, "greedy": t,
             "matches": answer_matches(t or "", e.answer or ""), "em_before_recorded": recorded.get(e.example_id)}
            for e, t in zip(pairs, texts, strict=True)]
    known = sum(r["matches"] for r in rows)
    disagree = [r["example_id"] for r in rows if r["em_before_recorded"] is not None
                and bool(r["em_before_recorded"]) != r["matches"]]
    out = {"pilot": str(path), "model": pilot.model, "chat": session.chat, "n_pairs": len(rows),
           "known": known, "answers_min_known": pilot.criteria.answers_min_known,
           "disagree_with_recorded_em_before": disagree, "cpu": cpu_description(),
           "pairs": rows}
    dest = pilot.layout.base_answers
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"{known} of {len(rows)} answers known by {pilot.model}; {len(disagree)} disagree with em_before -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
