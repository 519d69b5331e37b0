"""Schedules: tuning records where the database has them, the backend's defaults elsewhere.

Runs after optimization, before the build: every fused TIR function the target's database has
a record for gets its best recorded schedule; the backend then schedules the rest (for CPUs the
rules in backends/cpu/rules) and folds what the tuned layouts need (pre-packed weights).
"""

from __future__ import annotations

from pathlib import Path

from . import log
from .backends import for_preset
from .errors import last_line
from .layers import prepacked_base
from .targets import Preset
from .tune import database as tuning_db


def apply_database(mod, preset: Preset, root: Path | None, fallbacks: list | None = None,
                   default_schedules: bool = True, sources: dict | None = None):
    """Replace every fused TIR function the target's database has a record for with its best
    schedule; returns (module, tuned count, total count). Functions without a record get the
    backend's default schedules (unless ``default_schedules`` is False: TVM's plain loops). What was skipped is appended to ``fallbacks`` ({"stage", "reason"}); ``sources`` gets each
    kernel's schedule: "tuning record", "default: <rule>" or the backend's unscheduled kind."""
    import tvm
    from tvm import relax, tirx

    backend = for_preset(preset)
    # dlight's ApplyDefaultSchedule assigns into the module it is given: work on a copy, so the
    # caller's module stays unscheduled (compile falls back to it)
    mod = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs, global_infos=mod.global_infos)
    tdb_path = tuning_db.path_for(preset, root)
    funcs = [gv for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)]
    # kernels the frontend emitted already scheduled (the backend's own, e.g. cpu/recurrence.py)
    own = {gv.name_hint for gv in funcs if _scheduled(mod[gv])}
    if sources is not None:
        sources.update({n: "deploy kernel" for n in own})
    target = preset.tvm_target()
    tuned = 0
    with target, log.tvm_quiet(), tvm.transform.PassContext(opt_level=3):
        if (tdb_path / tuning_db.RECORDS).exists():
            with tuning_db.TargetDB(tdb_path).open():
                mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
            tuned_names = [gv.name_hint for gv, f in mod.functions.items()
                           if isinstance(f, tirx.PrimFunc) and _scheduled(f) and gv.name_hint not in own]
            tuned = len(tuned_names)
            if sources is not None:
                sources.update({n: "tuning record" for n in tuned_names})
        chosen: dict = {}
        unscheduled = {gv.name_hint: f for gv, f in mod.functions_items()}
        if default_schedules:
            mod = backend.apply_default_schedules(mod, target, chosen)
        else:
            mod = backend.fallback_schedules(mod, target, chosen)
        if sources is not None:
            for gv in funcs:
                rule = chosen.get(unscheduled.get(gv.name_hint))
                sources.setdefault(gv.name_hint, f"default: {rule}" if rule else backend.unscheduled)
        post = backend.post_tuning_passes(target)
        if post:
            try:
                mod, left = _per_function(mod, post)
                if left:
                    log.info(f"  weight prepacking left out {len(left)} kernel(s) it cannot take: {', '.join(left)}")
                    if fallbacks is not None:
                        fallbacks.append({"stage": "prepack weights", "functions": left,
                                          "reason": "TVM's layout-rewrite split fails on these kernels (no compute "
                                                    "block: CumSum, TopK, ScatterElements); the rest are prepacked"})
            except Exception as e:  # noqa: BLE001 - prepacking is an optimization
                # without it a kernel with a weight layout rewrite re-lays its weights on every call
                # instead of once at build time: slower, the same numbers
                last = last_line(e)[:200]
                log.warn(f"weight prepacking does not apply to this model and was skipped ({last})")
                if fallbacks is not None:
                    fallbacks.append({"stage": "prepack weights", "reason": last})
        if sources is not None:  # the split renames each kernel whose weights it pre-packs
            for gv in mod.get_global_vars():
                base = prepacked_base(gv.name_hint)
                if base and base in sources:
                    sources.setdefault(gv.name_hint, sources[base])
    return mod, tuned, len(funcs) - len(own)


def _per_function(mod, passes):
    """``passes`` run over ``mod`` one by one; where one fails, the kernels it cannot take alone
    (TVM's SplitLayoutRewritePreproc on a kernel without a compute block: CumSum, TopK,
    ScatterElements) sit out that pass behind a stand-in and come back unchanged after it, so
    one such kernel no longer costs every other kernel its prepacked weights (RoBERTa's position
    CumSum: 2.3x slower than ONNX Runtime without them, against BERT's 0.86x). Returns the
    module and the names of the kernels that sat out."""
    import tvm
    from tvm import te, tirx

    left: list[str] = []
    for p in passes:
        try:
            mod = p(mod)
            continue
        except Exception:  # noqa: BLE001 - find the kernels it cannot take
            pass
        bad = []
        for gv, f in mod.functions_items():
            if isinstance(f, tirx.PrimFunc):
                try:
                    p(tvm.IRModule({gv: f}))
                except Exception:  # noqa: BLE001
                    bad.append(gv)
        if not bad:
            raise RuntimeError("the pass fails on the module but on none of its kernels alone")
        a = te.placeholder((1,), "float32", "a")
        stand_in = te.create_prim_func([a, te.compute((1,), lambda i: a[i], "b")])
        staged = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs, global_infos=mod.global_infos)
        for gv in bad:
            staged[gv] = stand_in.with_attr("global_symbol", gv.name_hint)
        out = p(staged)
        for gv in bad:
            out[gv] = mod[gv]
        mod = out
        left += [gv.name_hint for gv in bad if gv.name_hint not in left]
    return mod, left


def _scheduled(func) -> bool:
    return bool(func.attrs and func.attrs.get("tirx.is_scheduled", False))
