"""Tuning progress on the terminal, and the time budget, from a MetaSchedule measure callback."""

from __future__ import annotations

import contextlib
import time

from .. import log


class OutOfTime(Exception):
    """Raised from the measure callback when the time budget is spent or the model stopped improving."""


class Progress:
    """Progress on the terminal from a MetaSchedule measure callback, and the time budget."""

    def __init__(self, tasks, total: int, budget: float | None, best: dict, show: bool, t0: float,
                 plateau: float | None = None):
        """``budget`` counts from ``t0``, the start of the command: import, task extraction and the
        default schedules' measurements are part of it. ``plateau``: stop once the estimated latency
        improved by less than 1% over the last this many seconds of search (``--tune auto``)."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.tasks, self.total, self.budget = tasks, total, budget
        self.best = dict(best)
        self.start = set(best)
        self.weights = {t.task_name: t.weight for t in tasks}
        self.trials = 0
        self.out_of_time = False
        self.stopped_by: str | None = None  # "time budget" or "no gain"
        self.t0 = t0
        self.plateau = plateau
        self.history: list[tuple[float, float]] = []  # (seconds into the search, estimated ms)
        self.t_search = time.perf_counter()
        self.bar = Progress(TextColumn("tuning"), BarColumn(), TextColumn("{task.completed}/{task.total} trials"),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=log.console,
                            disable=not show, transient=False)
        self.tid = None

    def __enter__(self):
        self.bar.__enter__()
        self.tid = self.bar.add_task("tune", total=self.total, info="")
        self.t_search = time.perf_counter()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def update(self, scheduler, task_id: int, results) -> None:
        self.trials += len(results)
        name = self.tasks[task_id].task_name
        good = [sum(float(x) for x in r.run_secs) / len(r.run_secs) for r in results
                if r.run_secs and r.error_msg is None]
        if good:
            cand = min(good) * self.weights[name]
            self.best[name] = min(self.best.get(name, cand), cand)
        done = sum(1 for r in scheduler.tasks_ if r.is_terminated)
        elapsed = time.perf_counter() - self.t0
        est = sum(self.best.values()) * 1e3
        info = f"tasks done {done}/{len(self.tasks)}  est. latency {est:.2f} ms"
        if self.budget:
            info += f"  left {max(0, self.budget - elapsed) / 60:.1f} min"
        self.bar.update(self.tid, completed=min(self.trials, self.total), info=info)
        searched = time.perf_counter() - self.t_search
        # the plateau is judged on the kernels measured when the search began: a kernel's first
        # record raises the sum without anything getting slower
        self.history.append((searched, sum(self.best[n] for n in self.start) * 1e3 if self.start else est))
        if self.budget and elapsed > self.budget:
            self.stopped_by = "time budget"
        elif self.plateau and not improving(self.history, self.plateau):
            self.stopped_by = "no gain"
        if self.stopped_by:
            # MetaSchedule has no time limit and asserts if tasks are terminated behind its back:
            # stop it by raising from the callback, after this batch's records were committed
            self.out_of_time = True
            raise OutOfTime()

    def callback(self):
        from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
        from tvm.ir.utils import derived_object

        progress = self

        @derived_object
        class ProgressCallback(PyMeasureCallback):
            def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
                progress.update(task_scheduler, task_id, runner_results)

        return ProgressCallback()


def improving(history: list[tuple[float, float]], window: float) -> bool:
    """False once the estimate (history: (seconds, ms) in order) is within 1% of where it stood
    ``window`` seconds ago; True until the search has run that long."""
    now, est = history[-1]
    before = [e for s, e in history if s <= now - window]
    return not before or est < 0.99 * before[-1]


@contextlib.contextmanager
def stops_on(progress: Progress):
    """Swallow the error that OutOfTime becomes on its way through TVM's C++ scheduler."""
    try:
        yield
    except Exception:
        if not progress.out_of_time:
            raise
