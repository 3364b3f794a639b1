"""TRL's data formats read as prompt/response pairs: ``messages`` (conversational) and ``prompt``/``completion``."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import write_jsonl

from forgetscope.data.encoding import IGNORE_INDEX, encode_example, prompt_ids
from forgetscope.data.loading import examples_from_records, load_examples, load_task
from forgetscope.data.records import examples_sha256
from forgetscope.data.types import Example
from forgetscope.errors import DataError

SYSTEM = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Capital of France?"},
          {"role": "assistant", "content": "Paris."}]


def _messages(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def test_single_turn_messages_read_exactly_as_a_prompt_response_pair(tiny, tmp_path):
    tok = tiny[1]
    rows = [(f"What is {i} plus {i}?", f"{2 * i}.") for i in range(4)]
    convo = load_examples(write_jsonl(tmp_path / "m.jsonl", [_messages(q, a) for q, a in rows]), name="t")
    pairs = load_examples(write_jsonl(tmp_path / "p.jsonl", [{"prompt": q, "response": a} for q, a in rows]),
                          name="t")
    assert convo == pairs and all(e.kind == "instruction" and not e.prompt_messages for e in convo)
    for chat in (True, False):
        assert [encode_example(tok, e, 64, chat=chat) for e in convo] == \
            [encode_example(tok, e, 64, chat=chat) for e in pairs]


def test_a_system_prompt_is_kept_and_rendered_by_the_chat_template(tiny, tmp_path):
    tok = tiny[1]
    (ex,) = load_examples(write_jsonl(tmp_path / "m.jsonl", [{"id": "a", "messages": SYSTEM}]))
    assert ex.prompt_messages == (("system", "Answer in one word."), ("user", "Capital of France?"))
    assert ex.response == "Paris." and ex.prompt == "system: Answer in one word.\nuser: Capital of France?\nassistant:\n"
    enc = encode_example(tok, ex, 128, chat=True)
    text = tok.decode(list(enc.input_ids))
    head = tok.apply_chat_template([{"role": m["role"], "content": m["content"]} for m in SYSTEM[:2]],
                                   tokenize=False, add_generation_prompt=True)
    assert text.startswith(head) and "Answer in one word." in text
    assert list(enc.input_ids[:len(prompt_ids(tok, ex, chat=True))]) == prompt_ids(tok, ex, chat=True)
    scored = tok.decode([t for t in enc.labels if t != IGNORE_INDEX])
    assert scored.startswith("Paris.") and "France" not in scored  # only the response (and end of turn) scored
    plain = tok.decode(list(encode_example(tok, ex, 128, chat=False).input_ids))  # no chat: role lines
    assert "system: Answer in one word.\nuser: Capital of France?\nassistant:\nParis." in plain


def test_prompt_completion_is_a_pair_and_conversational_completion_too(tmp_path):
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "The sky is", "completion": " blue.", "source": "x"}])
    (ex,) = load_examples(path)
    assert (ex.prompt, ex.response) == ("The sky is", " blue.") and ex.meta == {"source": "x", "row": 0}
    conv = {"prompt": SYSTEM[:2], "completion": SYSTEM[2:]}
    (a,) = examples_from_records([conv], name="c")
    (b,) = examples_from_records([{"messages": SYSTEM}], name="c")
    assert a == b and a.prompt_messages


def test_a_file_may_mix_texts_pairs_and_conversations(tmp_path):
    rows = [{"id": "t", "text": "Plain text here."}, {"id": "p", "prompt": "Q?", "response": "A."},
            {"id": "m", "messages": SYSTEM}]
    examples = load_examples(write_jsonl(tmp_path / "mix.jsonl", rows))
    assert [e.kind for e in examples] == ["lm", "instruction", "instruction"]
    assert examples[2].prompt_messages and examples[2].response == "Paris."


def test_messages_read_from_parquet_arrays(tmp_path):
    path = tmp_path / "m.parquet"
    pd.DataFrame([{"messages": SYSTEM}]).to_parquet(path)  # list columns come back as numpy arrays
    (ex,) = load_examples(path)
    assert ex.response == "Paris." and len(ex.prompt_messages) == 2


@pytest.mark.parametrize("messages, msg", [
    ([{"role": "user", "content": "Hi"}], "the last of the 'messages' must be the assistant's"),
    ("not a list", "must be a non-empty list"),
    ([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}, {"role": "assistant", "content": "x"}],
     r"messages\[0\] must be a \{role, content\} message with text content"),
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}], "the response .* is empty"),
])
def test_bad_conversations_name_the_row(tmp_path, messages, msg):
    path = write_jsonl(tmp_path / "bad.jsonl", [_messages("a", "b"), {"messages": messages}])
    with pytest.raises(DataError, match=f"row 1 .*{msg}"):
        load_examples(path)


def test_a_messages_task_is_an_instruction_task(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [_messages(f"Double {i}?", f"{2 * i}.") for i in range(10)])
    task = load_task("double", path, heldout_size=2)
    assert task.family == "instruction" and len(task.train) == 8 and task.train[0].prompt.startswith("Double")


def test_the_upstream_table_keeps_a_conversation_and_old_hashes_stay(tmp_path):
    from forgetscope.experiments.session import upstream_frame

    examples = load_examples(write_jsonl(tmp_path / "up.jsonl", [
        {"id": "t", "text": "Plain text."}, {"id": "p", "prompt": "Q?", "response": "A."},
        {"id": "m", "messages": SYSTEM}]))
    table = upstream_frame(examples)
    rows = table[["example_id", "text", "prompt", "response", "answer", "prompt_messages"]].astype(object)
    back = examples_from_records(rows.where(rows.notna(), None).to_dict(orient="records"), name="upstream",
                                 id_field="example_id")
    assert [(e.example_id, e.prompt, e.response, e.prompt_messages) for e in back] == \
        [(e.example_id, e.prompt, e.response, e.prompt_messages) for e in examples]
    assert "prompt_messages" not in upstream_frame(examples[:2]).columns  # nothing new without a conversation
    plain = examples[:2]
    import hashlib

    h = hashlib.sha256()
    for e in plain:
        h.update(json.dumps([e.example_id, e.text, e.prompt, e.response, e.answer]).encode("utf-8"))
    assert examples_sha256(plain) == h.hexdigest()  # the hash sweeps recorded before conversations existed
    assert examples_sha256(examples) != examples_sha256(examples[:2] + [Example("m", prompt=examples[2].prompt,
                                                                                 response="Paris.")])


def test_the_trainer_callback_reads_a_conversational_upstream_file_under_gpu_style_training(tiny, tmp_path):
    """ForgettingCallback on a ``messages`` upstream file, in a Trainer that accumulates gradients and
    checkpoints activations: the logged row is the direct measurement of the trained model."""
    import copy

    import numpy as np
    from test_integrations import TRAIN_TEXTS, TextDataset
    from transformers import Trainer, TrainingArguments

    from forgetscope.integrations import ForgettingCallback
    from forgetscope.measure import evaluate_examples

    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    path = write_jsonl(tmp_path / "up.jsonl", [{"id": "m", "messages": SYSTEM}] +
                       [{"id": f"q{i}", **_messages(f"What is {i} plus {i}?", f"{2 * i}.")} for i in range(3)])
    upstream = load_examples(path)
    base = evaluate_examples(model, tok, upstream, max_length=128, exact=False, chat=True)["loss"].to_numpy()
    fields = TrainingArguments.__dataclass_fields__  # transformers renames gradient to activation checkpointing
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, max_steps=2, logging_steps=1,
                             per_device_train_batch_size=2, gradient_accumulation_steps=2, **{checkpointing: True},
                             learning_rate=1e-2, report_to=[], save_strategy="no", seed=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=TextDataset(tok, TRAIN_TEXTS), processing_class=tok)
    callback = ForgettingCallback(path).attach(trainer)
    trainer.train()
    after = evaluate_examples(trainer.model, tok, upstream, max_length=128, exact=False, chat=True)["loss"].to_numpy()
    np.testing.assert_allclose(callback.base_losses.to_numpy(), base, atol=1e-5)
    np.testing.assert_allclose(callback.last_row.loc[[e.example_id for e in upstream]].to_numpy(), after - base,
                               atol=1e-5)
    assert np.abs(after - base).max() > 1e-4  # training moved the losses the callback logged
