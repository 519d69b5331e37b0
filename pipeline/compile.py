"""The compile: one frozen request (prepare.Request), shown before work starts, and its named steps.

The steps and their order are written once, in README.md ("The pipeline"); this module runs them.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from . import layers, log
from .backends import for_family, for_preset
from .build import build_library, check_toolchain
from .errors import CheckFailed, CodegenError, DeployError, last_line
from .files import write_json
from .manifest import LIB_NAME, MANIFEST, make_manifest
from .package import atomic_dir, check_output
from .prepare import Request, Steps
from .quantize.after_build import accuracy_gate, keep_reference
from .quantize.select import by_measured_speed
from .run.runtime import Artifact, read_npz
from .schedule import apply_database
from .targets import Preset, get_preset
from .tune.database import path_for
from .tune.tuner import tune_module, tuning_runner


@dataclass(frozen=True)
class CompileArgs(Request):
    """A compile: the shared request (prepare.Request) and where and how the artifact is made."""

    COMMAND: ClassVar[str] = "deploy compile"

    output: Path | None = None
    dump_ir: Path | None = None
    force: bool = False
    runner: bool | None = None      # the C++ runner + TVM runtime in the artifact; default: ARM CPU targets
    tune_budget: float | None = None  # seconds of tuning before the build (records kept in db)
    tune_auto: bool = False         # --tune auto: the budget where the time is lost, stopped at a plateau
    check: bool | None = None       # compare with ONNX Runtime before writing; None: where it runs natively
    check_inputs: Path | None = None  # .npz of inputs for the check (default: seeded random)
    report: bool = False            # print the layer report (kernels, their ONNX nodes, schedules)


def default_output(model: Path, target: str) -> Path:
    return Path("artifacts") / f"{model.stem}-{target}"


def compile_model(args: CompileArgs, show: bool = True) -> Artifact:
    """Compile an ONNX model for a target preset into an artifact directory."""
    t0 = time.perf_counter()
    preset: Preset = get_preset(args.target)
    out = Path(args.output) if args.output else default_output(Path(args.model), preset.name)
    args = args.checked()
    check_output(out, args.force)
    check_toolchain(preset)
    backend = for_preset(preset)
    want_runner = args.runner if args.runner is not None else (preset.is_cross and backend.supports_runner)
    if want_runner and not backend.supports_runner:
        raise DeployError(f"the runner runs CPU artifacts only; '{preset.name}' is a {preset.family} target",
                          hint="use a CPU preset (for Jetson Orin's CPU: --target jetson-orin-cpu)")
    if want_runner:
        backend.check_runner(preset)  # fetch the runtime (once) before the long part, to fail fast offline
    if args.check_inputs is not None:
        read_npz(args.check_inputs, "--check-inputs")  # a wrong file fails now, not after the build
    backend.check_precision(preset, args.precision)
    if show:
        args.display()
    if args.int8 and args.quant.speed_check and backend.timed_here(preset):
        t0 = time.perf_counter()
        with Steps()("quantize: int8 where it pays"):
            by_measured_speed(args, out, lambda a: _compile(a, preset, a.output, backend, want_runner, show,
                                                            time.perf_counter(), final=False))
        return _wrote(out, args, t0)
    return _compile(args, preset, out, backend, want_runner, show, t0)


def _compile(args: CompileArgs, preset: Preset, out: Path, backend, want_runner: bool, show: bool,
             t0: float, final: bool = True) -> Artifact:
    hook = args.quant.hook() if args.int8 else None
    t_tune = time.perf_counter()  # a tuning budget counts from here, the front half included
    runner = tuning_runner(preset) if args.tune_budget else None  # fails fast where nothing measures here
    step = Steps()
    prep = args.prepare(preset, step, args.dump_ir)
    if args.tune_budget:
        # the module just prepared is the one tuned: its tasks are the kernels this build looks up
        tune_module(prep, preset, runner, step, db=args.db, trials=10**6, time_budget=args.tune_budget,
                    # the budget is the limit: a kernel worth more trials gets them
                    trials_per_task=10**4, show=show, t0=t_tune, auto=args.tune_auto)
    sources: dict = {}
    with step("apply tuning"):
        mod, tuned, total = apply_database(prep.mod, preset, args.db, prep.fallbacks, sources=sources)
        mod = layers.carry_over(prep.collector, prep.mod, mod)
        log.info(f"  {tuned} of {total} kernels use tuning records, {total - tuned} use default schedules")
        prep.passes["apply tuning"] = ["MetaScheduleApplyDatabase"]
        tuning = {"database": str(path_for(preset, args.db)),
                  "tuned_kernels": tuned, "kernels": total}
    quantized = hook.result if hook is not None else None  # the calibration the build used
    parts = dict(args=args, preset=preset, prep=prep, quantized=quantized, tuning=tuning, want_runner=want_runner,
                 step=step, t0=t0, sources=sources)
    with atomic_dir(out, args.force) as tmp:
        try:
            _write_artifact(tmp, mod, **parts)
        except (CodegenError, CheckFailed) as e:
            # the default schedules are optimizations too: where the build fails on one or the
            # artifact's numbers are wrong, build the kernels without tuning records as TVM's plain
            # loops (slow, and what raw TVM runs) and check again
            if not (backend.has_default_schedules and tuned < total):
                raise
            reason = " ".join(ln.strip() for ln in e.message.splitlines()[:2])[:300]
            log.warn(f"falling back to TVM's plain loops for the kernels without tuning records ({reason})")
            prep.fallbacks.append({"stage": "default schedules", "reason": reason})
            sources.clear()
            with step("apply tuning (no default schedules)"):
                mod, _, _ = apply_database(prep.mod, preset, args.db, prep.fallbacks, default_schedules=False,
                                           sources=sources)
                mod = layers.carry_over(prep.collector, prep.mod, mod)
            for p in tmp.iterdir():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            _write_artifact(tmp, mod, **parts)
    if not final:  # a candidate of quantize.select.by_measured_speed
        log.info(f"  built the {args.precision} candidate ({time.perf_counter() - t0:.1f} s)")
        return Artifact(out)
    return _wrote(out, args, t0)


def _wrote(out: Path, args: CompileArgs, t0: float) -> Artifact:
    art = Artifact(out)
    log.info(f"[green]wrote[/green] {out}  ({art.manifest['library']['bytes'] / 1e6:.1f} MB, "
             f"{time.perf_counter() - t0:.1f} s)")
    if args.report:
        from .run.profile import print_layers

        print_layers(out)
    return art


def _write_artifact(tmp: Path, mod, *, args, preset, prep, quantized, tuning, want_runner, step, t0,
                    sources) -> dict:
    """build -> runner -> package -> int8 accuracy -> check, all inside the artifact's temp dir."""
    with step("build"):
        lib = tmp / LIB_NAME
        plan = build_library(mod, preset, lib)
    with step("layer report"):
        try:
            layer_report = layers.report(layers.kernel_sites(mod, prep.collector), sources,
                                         layers.kernel_flops(mod, prep.mod),
                                         getattr(prep.loaded.model, "graph", None))  # None: a .tflite
            write_json(tmp / layers.LAYERS, layer_report)
            memory = dict(params_bytes=layers.param_bytes(mod), **plan)
        except Exception as e:  # noqa: BLE001 - a report must never break a compile
            log.warn(f"the layer report could not be made ({last_line(e)[:200]}); the artifact has none")
            layer_report, memory = None, plan
    device_info = None
    if want_runner:
        with step("runner"):
            device_info = for_preset(preset).add_device_files(tmp, preset)
    with step("package"):
        manifest = make_manifest(args, preset, prep.loaded, prep.model, lib, prep.passes)
        manifest["tuning"] = tuning
        manifest["memory"] = memory
        if layer_report is not None:
            manifest["layers"] = {"file": layers.LAYERS, "kernel_calls": len(layer_report["kernels"])}
        if args.dims:
            manifest["dims"] = {n: d.to_dict() for n, d in args.dims.items()}
            manifest["functions"] = prep.specialized
        if prep.fallbacks:
            manifest["fallbacks"] = prep.fallbacks
        if prep.collector is not None and prep.collector.layout_kept:
            manifest["layout"] = {"kept": prep.collector.layout_kept}  # the rest of the model took the NHWC layout
        if prep.notes:
            manifest["notes"] = prep.notes
        # a model that brings its own QDQ pairs computes in int8 whatever was asked
        manifest["precision"] = {"compute": "int8" if prep.int8 and args.precision != "fp16" else args.precision}
        if prep.check_precision and manifest["precision"]["compute"] != prep.check_precision:
            manifest["precision"]["check"] = prep.check_precision  # the tolerance ORT's int8 ops need
        if quantized is not None:
            manifest["quantization"] = dict(quantized.info, **keep_reference(tmp, quantized.model))
        if device_info is not None:
            manifest["device"] = device_info
        manifest["build"]["seconds"] = dict(step.seconds, total=round(time.perf_counter() - t0, 3))
        write_json(tmp / MANIFEST, manifest)
    if quantized is not None:
        # measured on the artifact before it is moved into place: a failed gate leaves nothing
        accuracy_gate(tmp, quantized, args.quant.max_accuracy_drop, step)
    record = _check(tmp, args, prep, quantized, step)
    manifest = Artifact(tmp).manifest
    manifest["check"] = record
    manifest["build"]["seconds"] = dict(step.seconds, total=round(time.perf_counter() - t0, 3))
    write_json(tmp / MANIFEST, manifest)
    return manifest


def _check(tmp: Path, args: CompileArgs, prep, quantized, step) -> dict:
    """The built-in check (check.py), where the artifact runs here or ``--check`` asks for it."""
    from .run.check import check_artifact, load_check_inputs

    art = Artifact(tmp)
    target = art.manifest["target"]
    if args.check is False:
        return {"status": "skipped", "reason": "--no-check"}
    native = for_family(target["family"]).runs_here(target)  # this host's arch: never emulated
    if not native and not (args.check and art.device is not None):
        why = (f"a {target['arch']} artifact runs here only under emulation (--check runs it)" if art.emulated
               else f"a {target['family']} artifact for {target['preset']} cannot run on this machine")
        if args.check:
            raise DeployError(f"--check: {why}", hint="compile without --check, or check it where it runs "
                                                       "(`deploy verify ARTIFACT --model MODEL`)")
        return {"status": "skipped", "reason": why}
    from .run.reference import reference_name

    with step(f"check against {reference_name(prep.loaded.path)}"):
        inputs = load_check_inputs(args.check_inputs, art.inputs, art.dims, art.unused_inputs) if args.check_inputs else None
        reference = quantized.model if quantized is not None else prep.loaded.path
        return check_artifact(art, reference, prep.check_precision or args.precision, inputs,
                              float_model=quantized.float_model if quantized is not None else None)

