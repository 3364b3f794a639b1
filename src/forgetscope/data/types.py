"""The two record types every pillar shares: an upstream/task example and a task.

An example is either plain text (pretraining-like; loss on every token) or a prompt/response pair
(instruction-like; loss on the response tokens only). Its :attr:`Example.kind` says which: ``"lm"`` or
``"instruction"`` (:data:`KINDS`). The two kinds are separate experiments: their losses measure
different things, so analysis and prediction treat their columns apart by default. ``answer`` is a
short gold answer for the exact-match check of the greedy continuation; it is optional.

A pair read from a conversation (TRL's ``messages`` format) whose prompt is more than one user turn (a
system prompt, earlier turns) keeps those turns in :attr:`Example.prompt_messages`, as ``(role, content)``
pairs: the chat template renders them, and ``prompt`` holds their plain rendering
(:func:`render_turns`) for models without a template and for display.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from forgetscope.errors import DataError

Kind = Literal["lm", "instruction"]
LM: Kind = "lm"
INSTRUCTION: Kind = "instruction"
#: The kinds of upstream example, in the order summaries list them.
KINDS: tuple[Kind, ...] = (LM, INSTRUCTION)
#: What a ``--kind`` option accepts: one kind, or every column together.
KIND_CHOICES: tuple[str, ...] = (*KINDS, "all")
#: Task families: instruction-format tasks (prompt -> response, as FLAN builds them) and plain-text tasks
#: (continued pretraining on a text domain). Runs record their task's family.
Family = Literal["instruction", "plain_text"]
FAMILIES: tuple[Family, ...] = ("instruction", "plain_text")
KIND_LABELS: dict[str, str] = {LM: "plain text (lm: loss over all tokens)",
                               INSTRUCTION: "prompt/response (instruction: loss on the response only)",
                               "all": "all upstream examples"}


@dataclass(frozen=True)
class Example:
    example_id: str
    text: str | None = None
    prompt: str | None = None
    response: str | None = None
    answer: str | None = None
    #: the conversation before the response, as (role, content) pairs, when it is more than one user turn
    prompt_messages: tuple[tuple[str, str], ...] = ()
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.prompt_messages and (self.prompt is None or not all(
                isinstance(t, tuple) and len(t) == 2 and all(isinstance(x, str) for x in t)
                for t in self.prompt_messages)):
            raise DataError(f"example {self.example_id!r}: prompt_messages are (role, content) string pairs "
                            "of a prompt/response pair")
        has_text = bool(self.text and self.text.strip())
        has_pair = self.prompt is not None and bool(self.response and self.response.strip())
        if has_text == has_pair:
            if self.text is None and self.prompt is not None:
                raise DataError(f"example {self.example_id!r} has an empty response; a prompt/response "
                                "pair needs a non-empty response")
            raise DataError(
                f"example {self.example_id!r} must have either non-empty 'text' or "
                "'prompt' + non-empty 'response'"
            )

    @property
    def is_pair(self) -> bool:
        return self.text is None

    @property
    def kind(self) -> Kind:
        """``"instruction"`` for a prompt/response pair, ``"lm"`` for plain text."""
        return INSTRUCTION if self.is_pair else LM

    @property
    def full_text(self) -> str:
        """The whole string the model reads (for embeddings and display)."""
        return self.text if self.text is not None else f"{self.prompt}{self.response}"


def render_turns(turns: Sequence[tuple[str, str]]) -> str:
    """The plain-text rendering of a conversation's prompt turns, for models without a chat template: one
    ``role: content`` line a turn, then ``assistant:`` and a newline, after which the response follows."""
    return "".join(f"{role}: {content.strip()}\n" for role, content in turns) + "assistant:\n"


@dataclass
class Task:
    """A fine-tuning data set: training examples and a held-out split to measure its learning."""

    name: str
    train: list[Example]
    heldout: list[Example]
    description: str = ""
    family: str = ""  # one of FAMILIES; empty: by format (pairs: instruction, texts: plain_text)
    control: str | None = None  # a control copy of a task (forgetscope.data.controls), recorded with its runs

    def __post_init__(self) -> None:
        if not self.train:
            raise DataError(f"task {self.name!r} has no training examples")
        if not self.heldout:
            raise DataError(f"task {self.name!r} has no held-out examples")
        if not self.family:
            self.family = "instruction" if all(e.is_pair for e in self.train) else "plain_text"
        elif self.family not in FAMILIES:
            raise DataError(f"task {self.name!r}: unknown family {self.family!r}; use one of {', '.join(FAMILIES)}")

    def text_summary(self, n_samples: int = 3, max_chars: int = 300) -> str:
        """What the task is about, as text: its description (else its name) and its first ``n_samples``
        training examples, each cut to ``max_chars``. Text-based predictors embed this."""
        head = self.description.strip() or self.name
        samples = [" ".join((ex.text if not ex.is_pair else f"{ex.prompt} {ex.response}").split())[:max_chars]
                   for ex in self.train[:n_samples]]
        return "\n".join([head, *samples])


def check_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`KIND_CHOICES`, else a one-line error naming the choices."""
    if kind not in KIND_CHOICES:
        raise DataError(f"unknown example kind {kind!r}; use one of {', '.join(KIND_CHOICES)}")
    return kind


def require_kind(examples: Sequence[Example], kind: str) -> str:
    """``kind`` if it is one of :data:`KIND_CHOICES` and, unless ``all``, the kind of at least one of
    ``examples`` (an upstream set); else a one-line error naming the kinds present."""
    check_kind(kind)
    if kind != "all" and not any(e.kind == kind for e in examples):
        present = ", ".join(f"{k} ({n})" for k in KINDS if (n := sum(e.kind == k for e in examples)))
        raise DataError(f"no {kind!r} examples in the upstream set; kinds present: {present}")
    return kind


def kind_option(v: str | None) -> str | None:
    """A pydantic validator for a ``kind`` field of a config block (the upstream examples its headline
    metric averages; None: the sweep's default kind), checked with :func:`check_kind`."""
    if v is not None:
        try:
            check_kind(v)
        except DataError as exc:
            raise ValueError(str(exc)) from None
    return v
