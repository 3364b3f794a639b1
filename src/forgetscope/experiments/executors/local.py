"""The ``local`` executor: runs one run after another in this process, with an overall progress bar."""

from __future__ import annotations

import time

from forgetscope.progress import progress_enabled


class SweepProgress:
    """Overall progress of a sweep: runs done of total, with an ETA from the mean run time."""

    def __init__(self, total: int, done: int):
        self.total, self.done = total, done
        self.bar = None
        if progress_enabled():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc="sweep", unit="run", position=0, dynamic_ncols=True)

    def advance(self, run_id: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(run_id)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class LocalExecutor:
    """Runs one run after another in this process."""

    name = "local"

    def run(self, session, specs, finished, *, total, done, experiment) -> None:
        from forgetscope.experiments.run import execute_run

        bar = SweepProgress(total, done)
        try:
            for spec in specs:
                t0 = time.perf_counter()
                record, rows = execute_run(session, spec, experiment)
                record.setdefault("wall_s", time.perf_counter() - t0)
                finished(spec, record, rows)
                bar.advance(spec.run_id)
        finally:
            bar.close()
