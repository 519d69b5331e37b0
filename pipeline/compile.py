"""The compile: one dataclass of arguments, shown before work starts, and a short list of steps.

load -> clean-up -> import -> optimize (prepare.py) -> [quantize] -> schedules (tuning records,
defaults) -> build -> package (manifest) -> [int8 accuracy], written atomically into place.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import layers, log
from .backends import for_family, for_preset
from .build import build_library, check_toolchain
from .frontend.dims import Dim, parse_dims
from .errors import CheckFailed, CodegenError, DeployError, last_line
from .files import write_json
from .manifest import LIB_NAME, MANIFEST, make_manifest
from .package import atomic_dir, check_output
from .prepare import Steps, prepare_module
from .quantize import options as quant_options
from .quantize.options import QuantOptions
from .runtime import Artifact, read_npz
from .schedule import apply_database
from .targets import Preset, get_preset
from .tune.database import path_for


@dataclass
class CompileArgs:
    model: Path
    target: str
    output: Path | None = None
    input_shapes: dict[str, list] = field(default_factory=dict)  # sizes, or dim names (a range in dims)
    dims: dict[str, Dim] = field(default_factory=dict)  # dynamic dims: name -> range (frontend.dims)
    opt_level: int = 3
    dump_ir: Path | None = None
    force: bool = False
    db: Path | None = None          # tuning database root; default: the per-user one
    runner: bool | None = None      # the C++ runner + TVM runtime in the artifact; default: ARM CPU targets
    tune_budget: float | None = None  # seconds of tuning before the build (records kept in db)
    precision: str = "fp32"         # fp32 | fp16 | int8 (calibrated post-training quantization)
    quant: QuantOptions = field(default_factory=QuantOptions)  # how int8 is calibrated and gated
    check: bool | None = None       # compare with ONNX Runtime before writing; None: where it runs natively
    check_inputs: Path | None = None  # .npz of inputs for the check (default: seeded random)
    report: bool = False            # print the layer report (kernels, their ONNX nodes, schedules)

    def display(self) -> None:
        log.info("[bold]deploy compile[/bold]")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "dims":
                if value:
                    log.info(f"  {'dims':<13} {' '.join(str(d) for d in value.values())}")
                continue
            if f.name == "quant":
                if self.int8:
                    for k, v in value.display().items():
                        log.info(f"  {k:<13} {v}")
                continue
            if value not in (None, {}, False, []) or f.name in ("opt_level",):
                log.info(f"  {f.name:<13} {value}")

    @property
    def int8(self) -> bool:
        return self.precision == "int8"


def default_output(model: Path, target: str) -> Path:
    return Path("artifacts") / f"{model.stem}-{target}"


def compile_model(args: CompileArgs, show: bool = True) -> Artifact:
    """Compile an ONNX model for a target preset into an artifact directory."""
    t0 = time.perf_counter()
    preset: Preset = get_preset(args.target)
    out = Path(args.output) if args.output else default_output(Path(args.model), preset.name)
    if not 0 <= args.opt_level <= 3:
        raise DeployError(f"--opt-level {args.opt_level} is out of range", hint="use 0, 1, 2 or 3")
    check_output(out, args.force)
    check_toolchain(preset)
    backend = for_preset(preset)
    want_runner = args.runner if args.runner is not None else (preset.is_cross and backend.supports_runner)
    if want_runner and not backend.supports_runner:
        raise DeployError(f"the runner runs CPU artifacts only; '{preset.name}' is a {preset.family} target",
                          hint="use a CPU preset (for Jetson Orin's CPU: --target jetson-orin-cpu)")
    if want_runner:
        backend.check_runner(preset)  # fetch the runtime (once) before the long part, to fail fast offline
    quant_options.check(args.precision, args.quant)
    if args.check_inputs is not None:
        read_npz(args.check_inputs, "--check-inputs")  # a wrong file fails now, not after the build
    args.dims = parse_dims(args.dims)
    if args.dims and args.int8:
        raise DeployError("--quantize int8 takes static shapes only: calibration runs one shape",
                          hint="compile int8 with --input-shape sizes (one artifact per shape), or fp32/fp16 with --dim")
    backend.check_precision(preset, args.precision)
    if show:
        args.display()
    if args.int8 and args.quant.speed_check and backend.timed_here(preset):
        return _int8_by_measured_speed(args, preset, backend, out, show, want_runner)
    return _compile(args, preset, out, backend, want_runner, show, t0)


def _compile(args: CompileArgs, preset: Preset, out: Path, backend, want_runner: bool, show: bool,
             t0: float, final: bool = True) -> Artifact:
    hook = args.quant.hook() if args.int8 else None
    precision = "fp16" if args.precision == "fp16" else "fp32"  # int8 builds on a float32 graph
    if args.tune_budget:
        from .tune import TuneArgs, tune_model

        tune_model(TuneArgs(model=Path(args.model), target=args.target, input_shapes=args.input_shapes,
                            dims=args.dims, trials=10**6, time_budget=args.tune_budget, db=args.db,
                            # the budget is the limit: a kernel worth more trials gets them
                            trials_per_task=10**4,
                            opt_level=args.opt_level,
                            precision=args.precision, quant=args.quant), show=show)
    step = Steps()
    prep = prepare_module(Path(args.model), preset, args.input_shapes, args.opt_level, args.dump_ir, step,
                          onnx_hook=hook, precision=precision, dims=args.dims)
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
            manifest = _write_artifact(tmp, mod, **parts)
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
            manifest = _write_artifact(tmp, mod, **parts)
    if not final:  # a candidate of _int8_by_measured_speed
        log.info(f"  built the {args.precision} candidate ({time.perf_counter() - t0:.1f} s)")
        return Artifact(out)
    log.info(f"[green]wrote[/green] {out}  ({manifest['library']['bytes'] / 1e6:.1f} MB, "
             f"{time.perf_counter() - t0:.1f} s)")
    if args.report:
        from .profile import print_layers

        print_layers(out)
    return Artifact(out)


def _int8_by_measured_speed(args: CompileArgs, preset: Preset, backend, out: Path, show: bool,
                            want_runner: bool) -> Artifact:
    """int8 only where it pays (quantize/select.py): build int8 and float32, keep the layers int8
    makes slower in float, rebuild, and write whichever build is faster end to end."""
    import os
    import tempfile

    from .bench import compare
    from .profile import profile
    from .quantize.select import select

    t0 = time.perf_counter()
    plain = dict(force=True, report=False)
    hook = args.quant.hook()
    with atomic_dir(out, args.force) as tmp:
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.candidates-", dir=tmp.parent))
        try:
            def build(name: str, **changes) -> Artifact:
                a = dataclasses.replace(args, output=work / name, **plain, **changes)
                return _compile(a, preset, work / name, backend, want_runner, show, time.perf_counter(), final=False)

            q = build("int8")
            layers_q = list(hook.result.info["quantized_layers"])
            # the layer report names kernels after the user's nodes; clean-up may have renamed them
            user = {name: hook.user_name(name) for name in layers_q}
            serves = {k: [user.get(u, u) for u in v] for k, v in hook.result.serves.items()}
            log.info("[bold]int8 where it pays[/bold]: the float32 build, to time both layer by layer")
            f = build("fp32", precision="fp32", quant=QuantOptions(), tune_budget=None, dump_ir=None)
            kern = {n: profile(a, None, runs=10, warmup=3)["deploy"]["kernels"] for n, a in (("fp32", f), ("int8", q))}
            sel = select(kern["fp32"], kern["int8"], [user[n] for n in layers_q], serves)
            kept = sel.kept_float()  # the user's names
            slow = dict(zip(hook.user_names(list(kept)), kept.values()))  # the cleaned-up model's
            for name, why in kept.items():
                log.info(f"  {name}: kept in float32 ({why})")
            candidates = {"float32": f.path, "int8": q.path}
            if slow and len(slow) < len(layers_q):
                log.info(f"  rebuilding int8 with {len(slow)} of {len(layers_q)} layer(s) in float32")
                hook.keep_float(slow)
                chosen = build("int8-chosen", tune_budget=None)
                # per-kernel times are noisy: the all-int8 build stays a candidate, end to end decides
                candidates = {"float32": f.path, "int8": chosen.path, "int8 (all layers)": q.path}
            ms = compare(candidates)
            if "int8 (all layers)" in ms:
                if ms["int8 (all layers)"] < ms["int8"]:
                    log.info(f"  all layers in int8 are faster end to end ({ms['int8 (all layers)']:.3f} vs "
                             f"{ms['int8']:.3f} ms): the per-layer choice is dropped")
                    kept, slow = {}, {}
                    ms["int8 (layers kept float)"] = ms.pop("int8")
                    ms["int8"] = ms.pop("int8 (all layers)")
                else:
                    q = chosen
            pays = bool(layers_q) and len(slow) < len(layers_q) and ms["int8"] < ms["float32"]
            why = (f"int8 {ms['int8']:.3f} ms vs float32 {ms['float32']:.3f} ms end to end, both built here "
                   "and timed in alternating turns")
            if pays:
                log.info(f"  [green]int8 pays[/green]: {why} ({ms['float32'] / ms['int8']:.2f}x)")
            else:
                log.warn("int8 does not pay on this target: " + ("no layer is faster in int8" if len(slow) == len(layers_q)
                                                                 else why) + "; the artifact is the float32 build")
            win = q if pays else f
            layer_times = sel.to_dict()
            manifest = dict(win.manifest)
            manifest["precision"] = dict(manifest["precision"], requested="int8", selection={
                "chosen": "int8" if pays else "fp32", "why": why, "end_to_end_ms": {k: round(v, 4) for k, v in ms.items()},
                # named as quantization.layers names them (the cleaned-up model's nodes)
                "layers": dict(zip(hook.user_names(list(layer_times)), layer_times.values())),
                "kept_float_for_speed": slow})
            if not pays:
                manifest["precision"]["int8_candidate"] = hook.result.info
            manifest["build"]["seconds"] = dict(manifest["build"]["seconds"], total=round(time.perf_counter() - t0, 3))
            write_json(win.path / MANIFEST, manifest)
            for p in win.path.iterdir():
                os.rename(p, tmp / p.name)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log.info(f"[green]wrote[/green] {out}  ({Artifact(out).manifest['library']['bytes'] / 1e6:.1f} MB, "
             f"{time.perf_counter() - t0:.1f} s)")
    if args.report:
        from .profile import print_layers

        print_layers(out)
    return Artifact(out)


def _write_artifact(tmp: Path, mod, *, args, preset, prep, quantized, tuning, want_runner, step, t0,
                    sources) -> dict:
    """build -> runner -> package -> int8 accuracy -> check, all inside the artifact's temp dir."""
    with step("build"):
        lib = tmp / LIB_NAME
        plan = build_library(mod, preset, lib)
    with step("layer report"):
        try:
            layer_report = layers.report(layers.kernel_sites(mod, prep.collector), sources, layers.kernel_flops(mod, prep.mod),
                                         prep.loaded.model.graph)
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
        if prep.notes:
            manifest["notes"] = prep.notes
        # a model that brings its own QDQ pairs computes in int8 whatever was asked
        manifest["precision"] = {"compute": "int8" if prep.int8 and args.precision != "fp16" else args.precision}
        if prep.check_precision and manifest["precision"]["compute"] != prep.check_precision:
            manifest["precision"]["check"] = prep.check_precision  # the tolerance ORT's int8 ops need
        if quantized is not None:
            manifest["quantization"] = dict(quantized.info, **_int8_reference(tmp, quantized.model))
        if device_info is not None:
            manifest["device"] = device_info
        manifest["build"]["seconds"] = dict(step.seconds, total=round(time.perf_counter() - t0, 3))
        write_json(tmp / MANIFEST, manifest)
    if quantized is not None:
        # measured on the artifact before it is moved into place: a failed gate leaves nothing
        with step("quantize: accuracy"):
            _int8_report(tmp, quantized, args.quant.max_accuracy_drop)
    record = _check(tmp, args, prep, quantized, step)
    manifest = Artifact(tmp).manifest
    manifest["check"] = record
    manifest["build"]["seconds"] = dict(step.seconds, total=round(time.perf_counter() - t0, 3))
    write_json(tmp / MANIFEST, manifest)
    return manifest


REFERENCE = "reference.onnx"


def _int8_reference(out: Path, qdq_model) -> dict:
    """Keep the QDQ model an int8 artifact computes (its int8 weights, a quarter of the float
    model's bytes): `deploy verify` and `deploy build` compare with ONNX Runtime running it, as
    the built-in check does, instead of with the float model."""
    from .files import sha256_file

    try:
        data = qdq_model.SerializeToString()
    except Exception as e:  # noqa: BLE001 - protobuf's 2 GB limit: verify falls back to the float model
        log.info(f"  the QDQ reference is not kept in the artifact ({type(e).__name__}: over protobuf's limit)")
        return {}
    (out / REFERENCE).write_bytes(data)
    return {"reference": {"file": REFERENCE, "sha256": sha256_file(out / REFERENCE)}}


def _int8_report(out: Path, res, gate: float | None) -> None:
    """Run the int8 artifact (in its temp dir ``out``) on the held-out samples against the float
    model; record the accuracy in its manifest and apply the gate."""
    from .quantize.accuracy import accuracy, format_accuracy

    art = Artifact(out)
    if not for_family(art.manifest["target"]["family"]).runs_here(art.manifest["target"]):
        log.info("  int8 accuracy (ONNX Runtime simulation; the artifact cannot run here) "
                 + format_accuracy(res.info["simulated_accuracy"]))
        _warn_if_poor(res.info["simulated_accuracy"], res.info.get("calibrator"), gate)
        return
    ours = [art.run(s) for s in res.held_out]
    acc = accuracy(res.reference, ours)
    log.info("  int8 accuracy " + format_accuracy(acc))
    _warn_if_poor(acc, res.info.get("calibrator"), gate)
    manifest = dict(art.manifest)
    manifest["quantization"] = dict(manifest["quantization"], accuracy=acc)
    write_json(out / MANIFEST, manifest)
    if gate is not None and acc["drop"] > gate:
        raise DeployError(f"int8 accuracy gate failed on the compiled artifact: drop {acc['drop']:.4f} > "
                          f"--max-accuracy-drop {gate}\n    " + format_accuracy(acc),
                          hint="raise --max-accuracy-drop, or exclude more layers with --exclude")


POOR_INT8_DROP = 0.05  # an int8 build this far from float32, with no gate asked for, is reported loudly


def _warn_if_poor(acc: dict, calibrator: str | None, gate: float | None) -> None:
    """A warning (not an error: the user asked for int8 and may accept it) where the int8 build,
    with no --max-accuracy-drop, is far from float32: 'entropy' calibration clipped MobileNetV2's
    ReLU6 outputs from 6 to 1.9 and kept 0% of its decisions, with only an info line to say so."""
    from .quantize.accuracy import format_accuracy

    if gate is not None or acc["drop"] <= POOR_INT8_DROP:
        return
    other = "minmax" if calibrator != "minmax" else "percentile"
    log.warn(f"int8 is far from float32 (drop {acc['drop']:.3f} > {POOR_INT8_DROP}) "
             + format_accuracy(acc)
             + f"\n  try --calibrator {other}, more representative --calibration samples, or "
               "--max-accuracy-drop 0.01 (the most sensitive layers fall back to float32)")


def _check(tmp: Path, args: CompileArgs, prep, quantized, step) -> dict:
    """The built-in check (check.py), where the artifact runs here or ``--check`` asks for it."""
    from .check import check_artifact, load_check_inputs

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
    with step("check against ONNX Runtime"):
        inputs = load_check_inputs(args.check_inputs, art.inputs, art.dims, art.unused_inputs) if args.check_inputs else None
        reference = quantized.model if quantized is not None else prep.loaded.path
        return check_artifact(art, reference, prep.check_precision or args.precision, inputs,
                              float_model=quantized.float_model if quantized is not None else None)

