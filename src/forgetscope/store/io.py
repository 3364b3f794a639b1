"""Atomic writes: every artifact goes to a temporary name beside its target and is renamed into place.

A crash or Ctrl-C therefore never leaves a half-written file; readers see the old file or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; results should be as readable as any file
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=json_default, sort_keys=False))


def write_csv(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """Refuse, in one line and before any work, an output folder that is a file or cannot be written in
    (read-only, no permission); writes nothing (the folder is made when the first file is written)."""
    from forgetscope.errors import StoreError

    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = f"output {path}" if existing == path else f"output {path}: {existing}"
        raise StoreError(f"{where} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".forgetscope-write-check.", dir=existing)
    except OSError as exc:
        where = f"the output directory {path}" if existing == path else \
            f"{existing} (to create the output {path})"
        raise StoreError(f"cannot write in {where}: {exc.strerror}") from None
    os.close(fd)
    os.unlink(probe)
    return path


def sha256_of(path: Path) -> str:
    """Content hash of a stored file (per-run files are small: read whole)."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
