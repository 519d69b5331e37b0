"""Tune: MetaSchedule (evolutionary search + XGBoost cost model) per target.

``tune_module`` tunes a prepared module (prepare.py), as TVM's static_shape_tuning_pipeline tunes
the module it is given: ``compile --tune`` passes the one it then builds, and ``tune_model``
(`deploy tune`) prepares the model through the same front half first, so the tasks are exactly the
fused TIR functions the compile will look up. Its tasks are extracted, tasks whose workload already
has enough records in the target's database are skipped (shared with other models, or done by
an earlier run that was interrupted), and the rest are tuned. Every measured candidate is
appended to the database as it is measured.

Settings chosen for 2-core machines (shared/TVM_NOTES.md): a build function that does not
re-import tensor intrinsics in every builder batch, population 128, short measurements.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from .. import log
from ..layers import func_flops
from ..backends import for_preset
from ..errors import DeployError, last_line
from ..prepare import Prepared, Request, Steps
from ..run.remote import connect, parse_tracker
from ..frontend.dims import static_shapes
from ..targets import Preset, get_preset
from . import database as tuning_db
from .build_pool import pool_builder
from .focus import NEAR_RATE, focus, lost_time, matmul_rate
from .progress import Progress, stops_on


@dataclass(frozen=True)
class TuneArgs(Request):
    """A tuning run: the shared request (prepare.Request) and how long and where to measure."""

    COMMAND: ClassVar[str] = "deploy tune"

    trials: int = 64 * 20            # measured candidates in all
    trials_per_task: int = 64
    time_budget: float | None = None  # seconds
    auto: bool = False                # --time-budget auto: rank by time lost against the matmul rate, stop at a plateau
    rpc_tracker: str | None = None    # HOST:PORT
    rpc_key: str | None = None
    seed: int = 0

    def check_own(self) -> None:
        if self.trials < 1 or self.trials_per_task < 1:
            raise DeployError("--trials must be at least 1", hint="e.g. --trials 1000")


@dataclass
class TuneSummary:
    target: str
    database: str
    tasks: int
    tasks_reused: int
    tasks_tuned: int
    trials: int
    seconds: float
    estimated_ms_before: float | None
    estimated_ms_after: float | None
    stopped_by: str


def fast_build(mod, target, _params):
    """MetaSchedule's default build minus the ~30 s tensor-intrinsic import per builder batch."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def parse_duration(text: str | None) -> float | None:
    """'20m' -> 1200.0; '90s', '1h', '45' (seconds)."""
    if text is None:
        return None
    t = text.strip().lower()
    try:
        mult = {"s": 1, "m": 60, "h": 3600}.get(t[-1:], None)
        return float(t[:-1]) * mult if mult else float(t)
    except ValueError:
        raise DeployError(f"bad duration '{text}'", hint="write it like 90s, 20m or 1h (or auto, auto:20m)")


AUTO_BUDGET = 600.0  # --tune auto: ten minutes, unless it says another (auto:20m)


def parse_budget(text: str | None) -> tuple[float | None, bool]:
    """A tuning budget as the CLI takes it: '10m' -> (600.0, False); 'auto' -> (600.0, True), the
    budget ranked by time lost against the matmul rate and ended at a plateau; 'auto:20m' -> (1200.0, True)."""
    if text is None:
        return None, False
    t = text.strip().lower()
    if t == "auto":
        return AUTO_BUDGET, True
    if t.startswith("auto:"):
        return parse_duration(t[5:]), True
    return parse_duration(t), False


def tuning_runner(preset: Preset, rpc_tracker: str | None = None, rpc_key: str | None = None):
    """What measures the candidates: the device at an RPC tracker, else this machine (or an error
    saying that the target cannot be measured here)."""
    from tvm.s_tir import meta_schedule as ms

    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=20, enable_cpu_cache_flush=False)
    if rpc_tracker:
        if not rpc_key:
            raise DeployError("--rpc-tracker needs --rpc-key", hint="pass the key the device registered with")
        host, port = parse_tracker(rpc_tracker)
        connect(rpc_tracker, rpc_key)
        cfg = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=rpc_key,
                                  session_timeout_sec=120)
        return ms.runner.RPCRunner(rpc_config=cfg, evaluator_config=evaluator, max_workers=1)
    for_preset(preset).check_measurable(preset)
    if for_preset(preset).host_timed:
        # in a model, a kernel's weights come from memory and its input from the kernel before:
        # each run starts with every argument but the first flushed from the caches, one run per
        # timing (a flush before a batch of runs would time warm weights). Timed warm, tuning
        # picked schedules that beat the defaults by 5% alone and lost to them by 10% in BERT.
        evaluator = ms.runner.EvaluatorConfig(number=1, repeat=10, min_repeat_ms=0, enable_cpu_cache_flush=True)
    return ms.runner.LocalRunner(evaluator_config=evaluator, timeout_sec=30)


def _records_for(db, task_mod) -> list[float]:
    """Best-first valid run times (s) recorded for a task's workload."""
    if not db.has_workload(task_mod):
        return []
    w = db.commit_workload(task_mod)
    out = []
    for r in db.get_top_k(w, 10**6):
        secs = [float(x) for x in (r.run_secs or [])]
        if secs and min(secs) < tuning_db.FAILED_RUN:
            out.append(sum(secs) / len(secs))
    return out


def _record_defaults(tasks, database, builder, runner, target, backend) -> tuple[int, list[str]]:
    """Measure each task's default schedule (the backend's) with the tuning builder and runner and
    store it as a tuning record, unless one is stored: compile picks the fastest record, so a
    kernel the search does not improve keeps its default. Returns (records stored, the tasks whose
    default could not be measured: they are not searched, since a searched record could then be
    slower than the default and still be picked)."""
    from tvm.s_tir import meta_schedule as ms

    todo, unmeasured = [], []
    for t in tasks:
        mod = t.dispatched[0]
        sch = backend.default_schedule(mod["main"], target)
        if sch is None:
            continue
        workload = database.commit_workload(mod)
        if any(str(r.trace) == str(sch.trace) for r in database.get_top_k(workload, 10**6)):
            continue
        # the arguments the scheduled kernel takes: pre-packed weights have their packed shape
        try:
            args = ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)
        except Exception as e:  # noqa: BLE001 - a pre-pack MetaSchedule cannot split off: not recorded
            # (weights padded to whole tiles at build time: 10 classes in two 8-float vectors)
            log.debug(f"the default schedule of {t.task_name} is not recorded: {last_line(e)[:200]}")
            unmeasured.append(t.task_name)
            continue
        todo.append((sch, workload, args))
    if not todo:
        return 0, unmeasured
    built = builder.build([ms.builder.BuilderInput(sch.mod, target) for sch, _, _ in todo])
    device = backend.tuning_device()
    ok = []
    for item, b in zip(todo, built):
        if b.error_msg:
            log.warn(f"the default schedule of a kernel did not build: {b.error_msg.strip().splitlines()[-1][:200]}")
        else:
            ok.append((item, b))
    futures = runner.run([ms.runner.RunnerInput(b.artifact_path, device, args) for (_, _, args), b in ok])
    n = 0
    for ((sch, workload, args), _), fut in zip(ok, futures):
        res = fut.result()
        if res.error_msg or not res.run_secs:
            err = res.error_msg or "no run time"
            log.warn(f"the default schedule of a kernel did not run: {err.strip().splitlines()[-1][:200]}")
            continue
        secs = [float(x) for x in res.run_secs]
        database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, secs, target, args))
        n += 1
    return n, unmeasured


def _estimate(tasks, records: dict[str, list[float]]) -> tuple[dict[str, float], float | None]:
    """Best weighted seconds per task with records, and their sum in ms once every task has one."""
    best = {t.task_name: records[t.task_name][0] * t.weight for t in tasks if records[t.task_name]}
    return best, (sum(best.values()) * 1e3 if len(best) == len(tasks) else None)


def tune_model(args: TuneArgs, show: bool = True) -> TuneSummary:
    """Prepare the model (prepare.py) and tune its kernels (``tune_module``)."""
    t0 = time.perf_counter()
    preset = get_preset(args.target)
    args = args.checked()
    runner = tuning_runner(preset, args.rpc_tracker, args.rpc_key)
    if show:
        args.display()
    step = Steps()
    prep = args.prepare(preset, step)
    return tune_module(prep, preset, runner, step, db=args.db, trials=args.trials,
                       trials_per_task=args.trials_per_task, time_budget=args.time_budget, seed=args.seed,
                       show=show, t0=t0, auto=args.auto, remote=bool(args.rpc_tracker))


def tune_module(prep: Prepared, preset: Preset, runner, step, *, db: Path | None, trials: int,
                trials_per_task: int, time_budget: float | None = None, seed: int = 0, show: bool = True,
                t0: float | None = None, auto: bool = False, remote: bool = False) -> TuneSummary:
    """Tune the kernels of a prepared module (as TVM's static_shape_tuning_pipeline tunes the module
    it is given): ``compile --tune`` passes the one it builds. ``t0``: where the time budget starts.
    ``auto`` (``--tune auto``): the budget goes to the kernels that lose the most time against this
    machine's matmul rate (focus.py), and the search stops when the estimated latency stops
    improving (progress.py); ``remote``: measured over RPC, where this machine's rate says nothing."""
    from tvm.s_tir import meta_schedule as ms

    t0 = time.perf_counter() if t0 is None else t0
    backend = for_preset(preset)
    target = preset.tvm_target()
    tdb = tuning_db.for_target(preset, db)
    database = tdb.open()
    with step("extract tasks"), log.tvm_quiet():
        tasks = ms.relax_integration.extract_tasks(prep.mod, target)
    tasks = [t for t in tasks if not t.mod.attrs or not t.mod.attrs.get("tirx.is_scheduled", False)]
    dynamic = [t for t in tasks if not static_shapes(t.dispatched[0]["main"])]
    if dynamic:
        tasks = [t for t in tasks if t not in dynamic]
        log.info(f"{len(dynamic)} kernel(s) have dynamic shapes: they keep their default schedules "
                 + ("(the optimized sizes' kernels are tuned)" if prep.specialized else
                    "(give optimized sizes, --dim S=1..512@128, to get kernels that tune)"))
    records = {t.task_name: _records_for(database, t.dispatched[0]) for t in tasks}
    _, est_before = _estimate(tasks, records)
    todo = [t for t in tasks if len(records[t.task_name]) < trials_per_task]
    reused = len(tasks) - len(todo)
    log.info(f"{len(tasks)} tasks: {reused} already tuned in {tdb.path}, {len(todo)} to tune")
    trials = min(trials, trials_per_task * len(todo))
    stopped_by = "nothing to tune"
    measured = 0
    if todo and trials > 0:
        work = tdb.path / "logs"
        work.mkdir(exist_ok=True)
        # MetaSchedule re-configures its logger per run: it trips over handlers of an earlier run,
        # and takes its console level from the logger's level, which its last run left at DEBUG
        logging.getLogger("tvm.s_tir.meta_schedule").handlers.clear()
        log.set_verbose(log.verbose())
        os.environ.setdefault("TMPDIR", str(work))
        backend.register_tuning_rules()
        builder = pool_builder(fast_build, max_workers=os.cpu_count() or 1, timeout_sec=60)
        try:
            if backend.has_default_schedules:
                with step("measure default schedules"), log.tvm_quiet():
                    n, unmeasured = _record_defaults(todo, database, builder, runner, target, backend)
                log.info(f"  {n} default schedules measured and recorded: tuned kernels never lose to them")
                if unmeasured:
                    todo = [t for t in todo if t.task_name not in unmeasured]
                    log.info(f"  {len(unmeasured)} kernel(s) keep their default schedules untuned: MetaSchedule cannot "
                             "time them (weights padded at build time), so a tuned record could lose to them unseen")
            measured_best = _estimate(tasks, {t.task_name: _records_for(database, t.dispatched[0]) for t in tasks})[0]
            cost = {t.task_name: measured_best[t.task_name] for t in todo if t.task_name in measured_best}
            what = "take {share:.0%} of the measured time"
            if time_budget and auto and backend.host_timed and not preset.is_cross and not remote:
                rate = matmul_rate()
                cost = lost_time(cost, {t.task_name: (func_flops(t.dispatched[0]["main"]) or 0.0) * t.weight
                                        for t in todo}, rate)
                what = f"lose {{share:.0%}} of the time lost against this machine's matmul rate ({rate / 1e9:.0f} GFLOP/s)"
            todo, left, share = focus(todo, cost if time_budget else {}, time_budget)  # only a budget chooses
            if left:
                log.info(f"  the budget goes to the {len(todo)} kernels that {what.format(share=share)}; "
                         f"{len(left)} keep their default schedules")
            trials = min(trials, trials_per_task * len(todo))
            if not todo:
                log.info(f"  every kernel runs at {NEAR_RATE:.0%} of the matmul rate or better: nothing worth a search")
                stopped_by = "nothing worth tuning"
            else:
                plateau = max(90.0, time_budget / 4) if auto and time_budget else None
                progress = Progress(todo, trials, time_budget, measured_best, show, t0, plateau=plateau)
                _search(todo, trials, trials_per_task, seed, work, builder, runner, database, progress, step)
                measured = progress.trials
                stopped_by = progress.stopped_by or "trial budget"
        finally:
            builder.close()
    _, est_after = _estimate(tasks, {t.task_name: _records_for(database, t.dispatched[0]) for t in tasks})
    summary = TuneSummary(preset.name, str(tdb.path), len(tasks), reused, len(todo), measured,
                          round(time.perf_counter() - t0, 1), est_before, est_after, stopped_by)
    log.info(f"[green]tuned[/green] {measured} trials in {summary.seconds:.0f} s; "
             + (f"estimated kernel time {est_after:.2f} ms" if est_after else "some tasks have no valid record yet"))
    return summary


def _search(todo, trials, trials_per_task, seed, work, builder, runner, database, progress: Progress, step) -> None:
    """MetaSchedule's evolutionary search over ``todo``, every measured candidate committed as it comes."""
    from tvm.s_tir import meta_schedule as ms

    ctxs, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        todo, work_dir=str(work), seed=seed,
        # no initial candidates replayed from the database: a default schedule's record with
        # pre-packed weights, replayed under the search's own layout-rewrite postprocessing,
        # stops the whole run (IndexMap "args.size() == initial_indices_orig.size()")
        strategy=ms.search_strategy.EvolutionarySearch(population_size=128, init_min_unmeasured=32,
                                                       init_measured_ratio=0.0),
        num_threads=os.cpu_count() or 1)
    with step("tune"), progress, log.tvm_quiet(), stops_on(progress):
        ms.tune.tune_tasks(
            tasks=ctxs, task_weights=weights, work_dir=str(work), max_trials_global=trials,
            max_trials_per_task=trials_per_task, num_trials_per_iter=_per_iter(trials, len(todo)), builder=builder,
            runner=runner, database=database, cost_model=ms.cost_model.XGBModel(num_tuning_cores=os.cpu_count() or 1),
            measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), progress.callback()],
            task_scheduler="gradient")


def summary_json(s: TuneSummary) -> str:
    return json.dumps(dataclasses.asdict(s), indent=2)


def _per_iter(trials: int, tasks: int) -> int:
    """Candidates measured per batch: small enough that every task gets a turn in the budget."""
    return max(4, min(16, trials // max(1, tasks) // 2))
