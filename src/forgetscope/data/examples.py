"""Turn raw records (one dict a row, as :mod:`forgetscope.data.records` reads them) into examples.

Two schemas:

* plain text: a ``text`` column (loss on every token);
* prompt/response: ``prompt`` and ``response`` columns, optional ``answer`` (a short gold answer
  for exact match).

TRL's data formats are read as prompt/response pairs:

* ``messages`` (conversational): a list of ``{role, content}``; the last message must be the
  assistant's and is the response, the messages before it are the prompt (one user turn: the prompt
  text itself; a system prompt or earlier turns: kept as ``Example.prompt_messages``, rendered by the
  chat template when chat is on, else as ``role: content`` lines);
* ``prompt`` / ``completion``: the completion is the response; a conversational prompt (a list of
  messages) with a completion of one assistant message is read as ``messages`` is.

``schema="auto"`` picks prompt/response when both of those columns exist, else plain text, else
``prompt``/``completion``, else ``messages`` (a file that loaded before reads the same); a row without
the chosen schema's fields but with ``messages`` is read as a conversation, so one file can mix them. Other
column names are mapped with ``text_field=``, ``prompt_field=``, ``response_field=``,
``answer_field=`` and ``id_field=``. An ``id`` column gives example ids; without one, ids are
``<name>-<row:05d>`` (row = position in the file, so ids are stable when ``limit`` subsamples).
Columns other than the mapped ones are kept in ``Example.meta`` (scalars only), with ``row``.

Also here, because both the file loaders (:mod:`forgetscope.data.loading`) and the shipped demo suite
(:mod:`forgetscope.data.demo`) need them: :func:`subsample` (a seeded subset) and
:func:`check_unique_ids`. Every problem a user can cause raises :class:`~forgetscope.errors.DataError`
naming the source, and where it applies the row and field.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from forgetscope.data.types import Example, render_turns
from forgetscope.errors import DataError

Schema = Literal["auto", "text", "pair", "messages"]

__all__ = ["PROMPT_MESSAGES", "TRL_COMPLETION", "TRL_MESSAGES", "Schema", "check_unique_ids",
           "examples_from_records", "subsample"]


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    try:  # pandas NA / NaT
        import pandas as pd

        if v is pd.NA or v is pd.NaT:
            return True
    except ImportError:  # pragma: no cover
        pass
    return False


def _as_str(v: Any, where: str, field: str) -> str | None:
    if _is_missing(v):
        return None
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    # numpy scalars
    item = getattr(v, "item", None)
    if callable(item):
        try:
            return _as_str(item(), where, field)
        except (TypeError, ValueError):
            pass
    raise DataError(f"{where}: field {field!r} must be a string, got {type(v).__name__}")


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def examples_from_records(
    rows: Iterable[Mapping[str, Any]],
    *,
    name: str,
    source: str | None = None,
    schema: Schema = "auto",
    text_field: str = "text",
    prompt_field: str = "prompt",
    response_field: str = "response",
    answer_field: str | None = "answer",
    id_field: str | None = "id",
) -> list[Example]:
    """Turn raw rows into :class:`Example` objects (all of them; no sampling); TRL's ``messages`` and
    ``prompt``/``completion`` rows become prompt/response pairs (module docstring)."""
    rows = list(rows)
    src = source or name
    if not rows:
        raise DataError(f"{src}: no rows (empty file or dataset)")
    if schema not in ("auto", "text", "pair", "messages"):
        raise DataError(f"{src}: unknown schema {schema!r}; expected 'auto', 'text', 'pair' or 'messages'")
    columns: set[str] = set()
    for r in rows:
        columns.update(r.keys())
    mixed = False
    # a file may also mix conversations in: a row whose own fields are missing but has messages is one
    conversations = schema == "auto" and TRL_MESSAGES in columns
    if schema == "auto":
        if prompt_field in columns and response_field in columns:
            schema = "pair"
            # A file may mix plain text and pairs (e.g. an upstream set): then each row decides.
            mixed = text_field in columns
        elif text_field in columns:
            schema = "text"
        elif prompt_field in columns and TRL_COMPLETION in columns:  # TRL's prompt-completion format
            schema, response_field = "pair", TRL_COMPLETION
        elif TRL_MESSAGES in columns:  # TRL's conversational format
            schema = "messages"
        else:
            raise DataError(
                f"{src}: no {text_field!r} column, no {prompt_field!r} + {response_field!r} columns and no "
                f"{TRL_MESSAGES!r} column (columns: {sorted(columns)}); map yours with text_field= / "
                "prompt_field= / response_field="
            )
    needed = {"text": [text_field], "pair": [prompt_field, response_field], "messages": [TRL_MESSAGES]}[schema]
    for col in needed if not mixed else ():
        if col not in columns:
            raise DataError(f"{src}: schema {schema!r} needs a column {col!r} (columns: {sorted(columns)})")
    use_ids = id_field is not None and id_field in columns
    mapped = {text_field, prompt_field, response_field, answer_field, id_field, TRL_MESSAGES}

    out: list[Example] = []
    for i, r in enumerate(rows):
        where = f"{src}: row {i}"
        if use_ids:
            ex_id = _as_str(r.get(id_field), where, id_field)
            if ex_id is None or not ex_id.strip():
                raise DataError(f"{where}: missing or empty field {id_field!r}")
        else:
            ex_id = f"{name}-{i:05d}"
        where = f"{src}: row {i} (id {ex_id!r})"
        meta = {k: v for k, v in r.items() if k not in mapped and _is_scalar(v)}
        meta["row"] = i
        row_schema = schema
        if mixed:
            row_schema = "text" if _is_missing(r.get(prompt_field)) and not _is_missing(r.get(text_field)) else "pair"
        if conversations and _as_list(r.get(TRL_MESSAGES)) is not None and _is_missing(
                r.get(text_field if row_schema == "text" else prompt_field)):
            row_schema = "messages"
        if row_schema == "messages" or (row_schema == "pair" and _as_list(r.get(prompt_field)) is not None):
            turns, response = _conversation(r, where, prompt_field, response_field, row_schema == "messages")
            answer = _as_str(r.get(answer_field), where, answer_field) if answer_field else None
            out.append(_from_turns(ex_id, turns, response, answer or None, meta, where))
        elif row_schema == "text":
            text = _as_str(r.get(text_field), where, text_field)
            if text is None or not text.strip():
                raise DataError(f"{where}: missing or empty field {text_field!r}")
            answer = _as_str(r.get(answer_field), where, answer_field) if answer_field else None
            out.append(Example(ex_id, text=text, answer=answer or None, meta=meta))
        else:
            prompt = _as_str(r.get(prompt_field), where, prompt_field)
            if prompt is None:
                raise DataError(f"{where}: missing field {prompt_field!r}")
            response = _as_str(r.get(response_field), where, response_field)
            if response is None or not response.strip():
                raise DataError(f"{where}: missing or empty field {response_field!r}")
            answer = _as_str(r.get(answer_field), where, answer_field) if answer_field else None
            turns = _stored_turns(r.get(PROMPT_MESSAGES), where)  # a sweep's upstream table, read back
            out.append(Example(ex_id, prompt=prompt, response=response, answer=answer or None,
                               prompt_messages=turns, meta=meta))
    check_unique_ids(out, src)
    return out


#: TRL's column names: the conversational format's ``messages``, the prompt-completion format's ``completion``.
TRL_MESSAGES = "messages"
TRL_COMPLETION = "completion"
#: The column a sweep's upstream table keeps a conversation's prompt turns in (JSON), when one has them.
PROMPT_MESSAGES = "prompt_messages"


def _as_list(value: Any) -> list | None:
    """A list column's value as a list (Parquet read through pandas gives arrays), else None."""
    if isinstance(value, (list, tuple)):
        return list(value)
    return list(value) if type(value).__name__ == "ndarray" and getattr(value, "ndim", 0) == 1 else None


def _turn_list(value: Any, where: str, field: str) -> list[tuple[str, str]]:
    """A list of ``{role, content}`` messages as (role, content) pairs; text content only."""
    value = _as_list(value)
    if not value:
        raise DataError(f"{where}: field {field!r} must be a non-empty list of {{role, content}} messages")
    turns = []
    for k, m in enumerate(value):
        role = m.get("role") if isinstance(m, Mapping) else None
        content = m.get("content") if isinstance(m, Mapping) else None
        if not isinstance(role, str) or not isinstance(content, str):
            raise DataError(f"{where}: {field}[{k}] must be a {{role, content}} message with text content")
        turns.append((role, content))
    return turns


def _conversation(r: Mapping[str, Any], where: str, prompt_field: str, completion_field: str,
                  messages: bool) -> tuple[list[tuple[str, str]], str]:
    """(prompt turns, response) of a conversational row: ``messages`` (the last message is the assistant's
    response) or a conversational ``prompt`` with a ``completion`` of one assistant message."""
    if messages:
        turns = _turn_list(r.get(TRL_MESSAGES), where, TRL_MESSAGES)
        last = turns[-1]
        if last[0] != "assistant":
            raise DataError(f"{where}: the last of the {TRL_MESSAGES!r} must be the assistant's (the response), "
                            f"not a {last[0]!r} message")
        return turns[:-1], last[1]
    turns = _turn_list(r.get(prompt_field), where, prompt_field)
    completion = r.get(completion_field)
    if _as_list(completion) is not None:
        reply = _turn_list(completion, where, completion_field)
        if len(reply) != 1 or reply[0][0] != "assistant":
            raise DataError(f"{where}: a conversational {completion_field!r} must be one assistant message")
        return turns, reply[0][1]
    response = _as_str(completion, where, completion_field)
    if response is None:
        raise DataError(f"{where}: missing field {completion_field!r}")
    return turns, response


def _from_turns(ex_id: str, turns: list[tuple[str, str]], response: str, answer: str | None,
                meta: dict, where: str) -> Example:
    """A pair from a conversation's prompt turns: one user turn is a plain prompt (encoded exactly as a
    prompt/response pair), anything more keeps its turns."""
    if not response.strip():
        raise DataError(f"{where}: the response (the assistant's last message) is empty")
    if not turns:
        return Example(ex_id, prompt="", response=response, answer=answer, meta=meta)
    if len(turns) == 1 and turns[0][0] == "user":
        return Example(ex_id, prompt=turns[0][1], response=response, answer=answer, meta=meta)
    return Example(ex_id, prompt=render_turns(turns), response=response, answer=answer,
                   prompt_messages=tuple(turns), meta=meta)


def _stored_turns(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    """Prompt turns kept in a sweep's upstream table (a JSON list of [role, content]); none when absent."""
    if _is_missing(value) or value == "":
        return ()
    import json

    try:
        turns = json.loads(value) if isinstance(value, str) else value
        return tuple((str(role), str(content)) for role, content in turns)
    except (ValueError, TypeError):
        raise DataError(f"{where}: field {PROMPT_MESSAGES!r} is not a JSON list of [role, content] pairs") from None


def check_unique_ids(examples: list[Example], src: str) -> None:
    counts = Counter(e.example_id for e in examples)
    dups = [k for k, c in counts.items() if c > 1]
    if dups:
        shown = ", ".join(repr(d) for d in dups[:5]) + (" ..." if len(dups) > 5 else "")
        raise DataError(f"{src}: duplicate example ids ({len(dups)}): {shown}")


def subsample(items: list, limit: int | None, seed: int, what: str) -> list:
    """A deterministic random subset of ``limit`` items, in their original order. Asking for more items
    than exist is refused, saying how many there are: a sweep never runs on fewer examples than its config
    says."""
    if limit is not None and limit > len(items):
        raise DataError(f"{what}: {limit} asked for, but there are only {len(items)}")
    if limit is None or limit == len(items):
        return list(items)
    if limit < 1:
        raise DataError(f"{what}: limit must be at least 1, got {limit}")
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]
