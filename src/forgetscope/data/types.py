"""The two record types every pillar shares: an upstream/task example and a task.

An example is either plain text (pretraining-like; loss on every token) or a prompt/response pair
(instruction-like; loss on the response tokens only). ``answer`` is a short gold answer for exact
match of the greedy continuation; it is optional.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from forgetscope.errors import DataError


@dataclass(frozen=True)
class Example:
    example_id: str
    text: str | None = None
    prompt: str | None = None
    response: str | None = None
    answer: str | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        has_text = bool(self.text)
        has_pair = self.prompt is not None and bool(self.response)
        if has_text == has_pair:
            raise DataError(
                f"example {self.example_id!r} must have either non-empty 'text' or "
                "'prompt' + non-empty 'response'"
            )

    @property
    def is_pair(self) -> bool:
        return self.text is None

    @property
    def full_text(self) -> str:
        """The whole string the model reads (for embeddings and display)."""
        return self.text if self.text is not None else f"{self.prompt}{self.response}"


@dataclass
class Task:
    """A fine-tuning data set: training examples and a held-out split to measure its learning."""

    name: str
    train: list[Example]
    heldout: list[Example]
    description: str = ""

    def __post_init__(self) -> None:
        if not self.train:
            raise DataError(f"task {self.name!r} has no training examples")
        if not self.heldout:
            raise DataError(f"task {self.name!r} has no held-out examples")

    def text_summary(self, n_samples: int = 3, max_chars: int = 300) -> str:
        """What the task is about, as text: its description (else its name) and its first ``n_samples``
        training examples, each cut to ``max_chars``. Text-based predictors embed this."""
        head = self.description.strip() or self.name
        samples = [" ".join((ex.text if not ex.is_pair else f"{ex.prompt} {ex.response}").split())[:max_chars]
                   for ex in self.train[:n_samples]]
        return "\n".join([head, *samples])
