"""One writer per output directory: an advisory lock held for as long as a command writes there.

Two processes writing one sweep silently mix configs and rows (the manifest from one, a run from the
other). Every command that writes an output directory holds :class:`OutputLock` on it: an exclusive
``flock`` on ``<dir>/.forgetscope.lock``, which the kernel releases when the process ends however it ends
(Ctrl-C, SIGTERM, kill -9), so a lock is never stale on a local file system. The file records the holder
(pid, host, command, start time) so a refused second writer can say who holds it. ``flock`` is not
reliable on every network file system; on such a mount, run one command per output yourself.

A launch of several processes (``torchrun``, ``accelerate launch``) would start N writers on one
directory; :func:`refuse_multi_process` turns that into one line before any work.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from forgetscope.errors import StoreError

LOCK_NAME = ".forgetscope.lock"
F = TypeVar("F", bound=Callable[..., Any])


class OutputLock:
    """``with OutputLock(path):`` — exclusive writer of ``path``; a second holder is refused with one line.

    The directory is created if needed; if it was created here and nothing else was written into it by
    the time the lock is released (a command refused before writing), it is removed again."""

    def __init__(self, path: str | os.PathLike[str], command: str | None = None):
        self.path = Path(path)
        self.command = command or " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:200]
        self._fd: int | None = None
        self._created = False

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_NAME

    def holder(self) -> dict[str, Any]:
        """Who holds (or last held) the lock, as recorded in the lock file."""
        try:
            return json.loads(self.lock_file.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> OutputLock:
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"output {self.path} is a file, not a directory")
        if not self.path.exists():
            try:
                self.path.mkdir(parents=True)
            except OSError as exc:
                raise StoreError(f"cannot create the output directory {self.path}: {exc.strerror}") from None
            self._created = True
        try:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot write in the output directory {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = self.holder()
            who = (f"pid {h.get('pid')} on {h.get('host')} since {h.get('started')} ({h.get('command')})"
                   if h else "another process")
            raise StoreError(f"{self.path} is being written by {who}; one writer per output directory: wait "
                             "for it to finish or choose another output") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        if self._created and [p.name for p in self.path.iterdir()] == [LOCK_NAME]:
            self.lock_file.unlink(missing_ok=True)  # refused before writing anything: leave no trace
            self.path.rmdir()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def refuse_multi_process(what: str = "this command") -> None:
    """One line instead of N writers when started by ``torchrun`` / ``accelerate launch`` with several
    processes (``WORLD_SIZE`` > 1): runs are spread with the ``ray`` or ``slurm`` executor instead."""
    world = os.environ.get("WORLD_SIZE", "1")
    if world.isdigit() and int(world) > 1:
        raise StoreError(f"{what} was launched as {world} processes (WORLD_SIZE={world}): they would all write "
                         "one output directory. Start it once with `forgetscope ...` or `python`; to spread "
                         "runs over GPUs or nodes use `executor: ray` or `executor: slurm`")


def holds_output(what: str, *checks: Callable[[Any], Any]) -> Callable[[F], F]:
    """Decorate an entry function ``fn(config, ..., output=None, ...)`` so that it runs holding the lock of
    its output directory (``output`` or ``config.output``), after refusing a multi-process launch.

    ``checks`` (each called with the config, in order) are the entry's validation: they run first, so bad
    input is refused before the output directory is created."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def locked(config: Any, *args: Any, output: Any = None, **kwargs: Any) -> Any:
            for check in checks:
                check(config)
            refuse_multi_process(what)
            with OutputLock(Path(output or config.output)):
                return fn(config, *args, output=output, **kwargs)

        return locked  # type: ignore[return-value]

    return wrap


def has_content(path: Path) -> bool:
    """Whether a directory holds anything besides the lock file."""
    return path.is_dir() and any(p.name != LOCK_NAME for p in path.iterdir())


__all__ = ["LOCK_NAME", "OutputLock", "has_content", "holds_output", "refuse_multi_process"]
