"""Progress bars for long loops (tqdm on stderr, with ETA), silent when disabled or not a terminal-ish run."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_enabled(requested: bool = True) -> bool:
    """Bars are on unless asked off or FORGETSCOPE_NO_PROGRESS is set (CI logs stay readable)."""
    return requested and not os.environ.get("FORGETSCOPE_NO_PROGRESS")


def progress_iter(items: Iterable[T], *, desc: str, enabled: bool = True, total_units: int | None = None,
                  units: Callable[[T], int] | None = None, unit: str = "tok") -> Iterator[T]:
    """Yield ``items`` while advancing a bar by ``units(item)`` (e.g. tokens) or by one per item."""
    if not progress_enabled(enabled):
        yield from items
        return
    from tqdm.auto import tqdm

    items = list(items)
    total = total_units if units is not None else len(items)
    with tqdm(total=total, desc=desc, unit=unit if units is not None else "it", unit_scale=True,
              leave=False, dynamic_ncols=True) as bar:
        for item in items:
            yield item
            bar.update(units(item) if units is not None else 1)
