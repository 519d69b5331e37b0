"""The compile: one dataclass of arguments, shown before work starts, and a short list of steps.

load -> clean-up -> import -> optimize -> build -> package
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__, cpu, log
from .build import build_library, check_toolchain, elf_machine
from .errors import DeployError
from .cleanup import cleanup
from .importer import check_supported, import_model
from .load import load_model, sha256_file
from .modelinfo import graph_inputs, value_spec
from .optimize import pipeline_for, run_stage
from .package import LIB_NAME, MANIFEST, atomic_dir, check_output, write_json
from .runtime import Artifact
from .targets import Preset, get_preset
from .tune import apply_database
from .tuning_db import path_for


@dataclass
class CompileArgs:
    model: Path
    target: str
    output: Path | None = None
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    opt_level: int = 3
    dump_ir: Path | None = None
    force: bool = False
    db: Path | None = None          # tuning database root; default: the per-user one
    runner: bool | None = None      # the C++ runner + TVM runtime in the artifact; default: ARM CPU targets
    tune_budget: float | None = None  # seconds of tuning before the build (records kept in db)
    precision: str = "fp32"         # fp32 | fp16 | int8 (int8 is the same as quantize="int8")
    quantize: str | None = None     # "int8": calibrated post-training quantization
    calibration: Path | None = None  # .npz or directory of .npy/.npz samples keyed by input name
    calibrator: str = "minmax"      # minmax | percentile | entropy
    per_channel: bool = True        # per-channel weight scales (else per-tensor)
    exclude: list[str] = field(default_factory=list)  # ONNX node names kept in float
    max_accuracy_drop: float | None = None  # accuracy gate: fall back sensitive layers until it holds
    random_calibration: bool = False  # calibrate on random inputs (testing only)

    def display(self) -> None:
        log.info("[bold]deploy compile[/bold]")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value not in (None, {}, False, []) or f.name in ("opt_level",):
                if f.name in ("calibrator", "per_channel") and not self.int8:
                    continue
                log.info(f"  {f.name:<13} {value}")


    @property
    def int8(self) -> bool:
        return self.quantize == "int8" or self.precision == "int8"


PRECISIONS = ("fp32", "fp16", "int8")


def check_precision(args: CompileArgs, preset: Preset) -> None:
    if args.precision not in PRECISIONS:
        raise DeployError(f"unknown precision '{args.precision}'", hint=f"use one of {', '.join(PRECISIONS)}")
    if args.quantize not in (None, "int8"):
        raise DeployError(f"unknown --quantize '{args.quantize}'", hint="use --quantize int8")
    if args.quantize and args.precision == "fp16":
        raise DeployError("--precision fp16 and --quantize int8 cannot be combined",
                          hint="pick one: int8 layers fall back to float32, not float16")
    if not args.int8:
        given = [n for n, v in (("--calibration", args.calibration), ("--exclude", args.exclude),
                                ("--max-accuracy-drop", args.max_accuracy_drop),
                                ("--random-calibration", args.random_calibration)) if v]
        if given:
            raise DeployError(f"{', '.join(given)} only apply to --quantize int8", hint="add --quantize int8")
    if args.precision == "fp16" and preset.family == "cpu" and preset.arch == "x86_64":
        log.warn("fp16 on x86 CPUs: no native float16 arithmetic, every op converts; expect it slower than fp32")


def default_output(model: Path, target: str) -> Path:
    return Path("artifacts") / f"{model.stem}-{target}"


def versions() -> dict:
    import onnx
    import tvm
    import tvm_ffi
    from tvm.target import codegen

    return {
        "deploy": __version__,
        "tvm": tvm.__version__,
        "tvm_ffi": tvm_ffi.__version__,
        "llvm": str(codegen.llvm_version_major()),
        "onnx": onnx.__version__,
        "python": platform.python_version(),
    }


class _Dumper:
    def __init__(self, root: Path | None):
        self.root, self.n = root, 0
        if root:
            root.mkdir(parents=True, exist_ok=True)

    def __call__(self, stage: str, mod) -> None:
        if self.root:
            (self.root / f"{self.n:02d}-{stage}.py").write_text(mod.script(show_meta=False))
            self.n += 1


@dataclass
class Prepared:
    """The front half of the pipeline: a model loaded, cleaned up, imported and optimized."""

    loaded: object          # load.LoadedModel
    model: object           # the cleaned-up onnx.ModelProto
    mod: object             # the optimized Relax IRModule
    passes: dict[str, list[str]]


def prepare_module(model: Path, preset: Preset, input_shapes: dict, opt_level: int,
                   dump_ir: Path | None = None, step=None, onnx_hook=None, precision: str = "fp32") -> Prepared:
    """load -> clean-up -> import -> optimize, shared by compile and tune.

    ``onnx_hook`` transforms the cleaned-up ONNX model before import (int8 calibration writes
    QDQ there); QDQ pairs around conv2d/matmul become int8 compute right after import.
    """
    from . import qoperator
    from .quantize import has_qdq, int8_rewrite, log_stats

    step = step or (lambda name: contextlib.nullcontext())
    passes: dict[str, list[str]] = {}
    with step("load"):
        loaded = load_model(model)
        check_supported(loaded.model)
    with step("clean-up"):
        cleaned = cleanup(loaded.model, input_shapes)
    if qoperator.present(cleaned):
        with step("quantize: QOperator -> QDQ"):
            cleaned = qoperator.to_qdq(cleaned)
    if onnx_hook is not None:
        with step("quantize: calibrate"):
            cleaned = onnx_hook(cleaned)
    with step("import"):
        mod = import_model(cleaned)
    dump = _Dumper(Path(dump_ir) if dump_ir else None)
    dump("imported", mod)
    int8 = has_qdq(cleaned)
    if int8:
        with step("quantize: int8 rewrite"):
            mod, stats = int8_rewrite(mod)
            log_stats(stats)
            passes["quantize"] = ["Int8ConvMatmulRewrite", "DeadCodeElimination"]
        dump("int8", mod)
    target = preset.tvm_target()
    for stage, make in pipeline_for(preset.family, target, opt_level, precision=precision,
                                    int8=int8):
        with step(f"optimize: {stage}"):
            stage_passes = make()
            passes[stage] = [str(p.info.name) for p in stage_passes]
            with log.tvm_quiet():
                mod = run_stage(mod, stage_passes, target)
        dump(stage, mod)
    return Prepared(loaded, cleaned, mod, passes)


class _Steps:
    """Prints each named step as it starts and records how long it took."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        log.info(f"[cyan]>[/cyan] {name}")
        t0 = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t0, 3)


def compile_model(args: CompileArgs, show: bool = True) -> Artifact:
    """Compile an ONNX model for a target preset into an artifact directory."""
    t0 = time.perf_counter()
    preset: Preset = get_preset(args.target)
    out = Path(args.output) if args.output else default_output(Path(args.model), preset.name)
    if not 0 <= args.opt_level <= 3:
        raise DeployError(f"--opt-level {args.opt_level} is out of range", hint="use 0, 1, 2 or 3")
    check_output(out, args.force)
    check_toolchain(preset)
    want_runner = args.runner if args.runner is not None else (preset.is_cross and preset.family == "cpu")
    if want_runner and preset.family != "cpu":
        raise DeployError(f"the runner runs CPU artifacts only; '{preset.name}' is a {preset.family} target",
                          hint="use a CPU preset (for Jetson Orin's CPU: --target jetson-orin-cpu)")
    if want_runner:
        from . import device

        if device.supported(preset.arch):
            device.runtime_dir(preset.arch)  # fetch it (once) before the long part, to fail fast offline
            device.check_compiler(preset.cross_compiler or "g++", preset.cross_package or "g++")
    check_precision(args, preset)
    if show:
        args.display()
    hook = None
    if args.int8:
        from .quantize import Int8Hook

        hook = Int8Hook(args.calibration, args.calibrator, args.per_channel, args.exclude,
                        args.max_accuracy_drop, args.random_calibration)
    precision = "fp16" if args.precision == "fp16" else "fp32"  # int8 builds on a float32 graph
    if args.tune_budget:
        from .tune import TuneArgs, tune_model

        tune_model(TuneArgs(model=Path(args.model), target=args.target, input_shapes=args.input_shapes,
                            trials=10**6, time_budget=args.tune_budget, db=args.db, opt_level=args.opt_level,
                            precision=precision, onnx_hook=hook), show=show)
    step = _Steps()
    prep = prepare_module(Path(args.model), preset, args.input_shapes, args.opt_level, args.dump_ir, step,
                          onnx_hook=hook, precision=precision)
    with step("apply tuning"):
        mod, tuned, total = apply_database(prep.mod, preset, args.db)
        log.info(f"  {tuned} of {total} kernels use tuning records, {total - tuned} use default schedules")
        prep.passes["apply tuning"] = ["MetaScheduleApplyDatabase"]
        tuning = {"database": str(path_for(preset, args.db)),
                  "tuned_kernels": tuned, "kernels": total}
    quantized = hook.result if hook is not None else None  # the calibration the build used
    with atomic_dir(out, args.force) as tmp:
        with step("build"):
            lib = tmp / LIB_NAME
            build_library(mod, preset, lib)
        device_info = None
        if want_runner:
            with step("runner"):
                device_info = _device_files(tmp, preset)
        with step("package"):
            manifest = make_manifest(args, preset, prep.loaded, prep.model, lib, prep.passes)
            manifest["tuning"] = tuning
            manifest["precision"] = {"compute": "int8" if args.int8 else args.precision}
            if quantized is not None:
                manifest["quantization"] = quantized.info
            if device_info is not None:
                manifest["device"] = device_info
            manifest["build"]["seconds"] = dict(step.seconds, total=round(time.perf_counter() - t0, 3))
            write_json(tmp / MANIFEST, manifest)
        if quantized is not None:
            # measured on the artifact before it is moved into place: a failed gate leaves nothing
            with step("quantize: accuracy"):
                _int8_report(tmp, quantized, args.max_accuracy_drop)
    log.info(f"[green]wrote[/green] {out}  ({manifest['library']['bytes'] / 1e6:.1f} MB, "
             f"{time.perf_counter() - t0:.1f} s)")
    return Artifact(out)


def _int8_report(out: Path, res, gate: float | None) -> None:
    # ``out`` is the artifact's temp dir; the manifest is rewritten there with the accuracy
    """Run the int8 artifact on the held-out samples against the float model; gate and record it."""
    from .package import write_json
    from .quantize import accuracy, format_accuracy

    art = Artifact(out)
    if art.manifest["target"]["arch"] != cpu.host_arch() or art.manifest["target"]["family"] != "cpu":
        log.info("  int8 accuracy (ONNX Runtime simulation; the artifact cannot run here) "
                 + format_accuracy(res.info["simulated_accuracy"]))
        return
    ours = [art.run(s) for s in res.held_out]
    acc = accuracy(res.reference, ours)
    log.info("  int8 accuracy " + format_accuracy(acc))
    manifest = dict(art.manifest)
    manifest["quantization"] = dict(manifest["quantization"], accuracy=acc)
    write_json(out / MANIFEST, manifest)
    if gate is not None and acc["drop"] > gate:
        raise DeployError(f"int8 accuracy gate failed on the compiled artifact: drop {acc['drop']:.4f} > "
                          f"--max-accuracy-drop {gate}\n    " + format_accuracy(acc),
                          hint="raise --max-accuracy-drop, or exclude more layers with --exclude")


def _device_files(tmp: Path, preset: Preset) -> dict | None:
    from . import device

    if not device.supported(preset.arch):
        log.warn(f"no TVM runtime for {preset.arch} can be had here: the artifact is compile-only "
                 "(library and manifest, no runner)")
        return None
    return device.add_device_files(tmp, preset)


def make_manifest(args: CompileArgs, preset: Preset, loaded, model, lib: Path, passes: dict) -> dict:
    from . import cuda

    target_json = preset.target_json()
    gpu = cuda.gpu_code(lib.read_bytes()) if preset.family == "cuda" else []
    return {
        "format": 1,
        "model": {
            "name": loaded.name,
            "file": loaded.path.name,
            "sha256": loaded.sha256,
            "opset": next((o.version for o in loaded.model.opset_import if o.domain in ("", "ai.onnx")), None),
            "inputs": [s.to_dict() for s in graph_inputs(model)],
            "outputs": [value_spec(v).to_dict() for v in model.graph.output],
        },
        "target": {
            "preset": preset.name,
            "description": preset.description,
            "family": preset.family,
            "arch": preset.arch,
            "tvm_target": target_json,
            "cpu_features": cpu.required_features(preset.cpu_target()),
            "gpu_code": gpu,
            "cross_compiler": preset.cross_compiler,
        },
        "library": {"file": LIB_NAME, "sha256": sha256_file(lib), "bytes": lib.stat().st_size,
                    "elf_machine": elf_machine(lib)},
        "options": {"opt_level": args.opt_level, "input_shapes": args.input_shapes, "precision": args.precision,
                    "quantize": "int8" if args.int8 else None},
        "passes": passes,
        "versions": versions(),
        "build": {"time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "host": platform.machine()},
    }
