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
from .tuning_db import default_root, target_key


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

    def display(self) -> None:
        log.info("[bold]deploy compile[/bold]")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value not in (None, {}, False) or f.name in ("opt_level",):
                log.info(f"  {f.name:<13} {value}")


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
                   dump_ir: Path | None = None, step=None) -> Prepared:
    """load -> clean-up -> import -> optimize, shared by compile and tune."""
    step = step or (lambda name: contextlib.nullcontext())
    passes: dict[str, list[str]] = {}
    with step("load"):
        loaded = load_model(model)
        check_supported(loaded.model)
    with step("clean-up"):
        cleaned = cleanup(loaded.model, input_shapes)
    with step("import"):
        mod = import_model(cleaned)
    dump = _Dumper(Path(dump_ir) if dump_ir else None)
    dump("imported", mod)
    target = preset.tvm_target()
    for stage, make in pipeline_for(preset.family, target, opt_level):
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
    if show:
        args.display()
    if args.tune_budget:
        from .tune import TuneArgs, tune_model

        tune_model(TuneArgs(model=Path(args.model), target=args.target, input_shapes=args.input_shapes,
                            trials=10**6, time_budget=args.tune_budget, db=args.db, opt_level=args.opt_level),
                   show=show)
    step = _Steps()
    prep = prepare_module(Path(args.model), preset, args.input_shapes, args.opt_level, args.dump_ir, step)
    with step("apply tuning"):
        mod, tuned, total = apply_database(prep.mod, preset, args.db)
        log.info(f"  {tuned} of {total} kernels have tuned schedules, {total - tuned} use defaults"
                 + ("" if tuned else " (run `deploy tune` first for speed)"))
        prep.passes["apply tuning"] = ["MetaScheduleApplyDatabase"]
        tuning = {"database": str((Path(args.db) if args.db else default_root()) / target_key(preset)),
                  "tuned_kernels": tuned, "kernels": total}
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
            if device_info is not None:
                manifest["device"] = device_info
            manifest["build"]["seconds"] = dict(step.seconds, total=round(time.perf_counter() - t0, 3))
            write_json(tmp / MANIFEST, manifest)
    log.info(f"[green]wrote[/green] {out}  ({manifest['library']['bytes'] / 1e6:.1f} MB, "
             f"{time.perf_counter() - t0:.1f} s)")
    return Artifact(out)


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
        "options": {"opt_level": args.opt_level, "input_shapes": args.input_shapes},
        "passes": passes,
        "versions": versions(),
        "build": {"time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "host": platform.machine()},
    }
