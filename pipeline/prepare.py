"""The front half that compile and tune share, and the request both are given.

Its steps, in the order README.md ("The pipeline") lists them, steps 1-6. Both must see the same
module: tuning extracts its tasks from it, and compile looks the same fused TIR functions up in
the tuning database; ``compile --tune`` prepares it once and tunes that module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from . import layers, log
from .errors import DeployError, last_line
from .backends import for_preset
from .frontend import converters, qoperator
from .frontend.cleanup import cleanup
from .frontend.dims import bind_shape, function_name, parse_dims, point_text, specializations
from .frontend.importer import check_supported, import_model
from .frontend.load import load_model
from .frontend import provenance, tflite
from .frontend.specs import graph_inputs
from .optimize import pipeline_for, run_stage
from .quantize import options as quant_options
from .quantize.options import QuantOptions
from .quantize.after_import import PASSES as AFTER_IMPORT_PASSES
from .quantize.after_import import after_import
from .quantize.before_import import before_import
from .targets import Preset


@dataclass(frozen=True)
class Request:
    """What compile and tune are asked to do: the model, the target, and how the front half
    prepares it. ``compile.CompileArgs`` and ``tune.TuneArgs`` add their own fields; both are
    checked by ``checked()`` and shown by ``display()``, and neither is changed once made."""

    COMMAND: ClassVar[str] = "deploy"

    model: Path
    target: str
    input_shapes: dict[str, list] = field(default_factory=dict)  # sizes, or dim names (a range in dims)
    dims: dict = field(default_factory=dict)  # dynamic dims: name -> range (frontend.dims), or --dim texts
    opt_level: int = 3
    db: Path | None = None          # tuning database root; default: the per-user one
    precision: str = "fp32"         # fp32 | fp16 | int8 (calibrated post-training quantization)
    quant: QuantOptions = field(default_factory=QuantOptions)  # how int8 is calibrated (and gated)

    @property
    def int8(self) -> bool:
        return self.precision == "int8"

    @property
    def float_precision(self) -> str:
        """The float precision the graph is optimized for: int8 builds on a float32 graph."""
        return "fp16" if self.precision == "fp16" else "fp32"

    def checked(self) -> "Request":
        """The request with its dims parsed, or a DeployError naming what is wrong."""
        if not 0 <= self.opt_level <= 3:
            raise DeployError(f"--opt-level {self.opt_level} is out of range", hint="use 0, 1, 2 or 3")
        self.check_own()
        quant_options.check(self.precision, self.quant)
        dims = parse_dims(self.dims)
        if dims and self.int8:
            raise DeployError("--quantize int8 takes static shapes only: calibration runs one shape",
                              hint="compile int8 with --input-shape sizes (one artifact per shape), "
                                   "or fp32/fp16 with --dim")
        return dataclasses.replace(self, dims=dims)

    def check_own(self) -> None:
        """The checks of a subclass's own fields."""

    def display(self) -> None:
        log.info(f"[bold]{self.COMMAND}[/bold]")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "dims":
                if value:
                    log.info(f"  {'dims':<16} {' '.join(str(d) for d in value.values())}")
                continue
            if f.name == "quant":
                if self.int8:
                    for k, v in value.display().items():
                        log.info(f"  {k:<16} {v}")
                continue
            if value not in (None, {}, False, []) or f.name == "opt_level":
                log.info(f"  {f.name:<16} {value}")

    def prepare(self, preset: Preset, step=None, dump_ir: Path | None = None) -> "Prepared":
        """The front half (``prepare_module``) of this request."""
        return prepare_module(Path(self.model), preset, self.input_shapes, self.opt_level, dump_ir, step,
                              onnx_hook=self.quant.hook() if self.int8 else None,
                              precision=self.float_precision, dims=self.dims)


class Steps:
    """Prints each named step as it starts and records how long it took. An error that is not
    already a DeployError (TVM's, mostly) becomes one that names the step, with what to try."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        log.info(f"[cyan]>[/cyan] {name}")
        t0 = time.perf_counter()
        try:
            yield
        except DeployError:
            raise
        except Exception as e:  # noqa: BLE001 - no raw TVM error reaches the user
            raise DeployError(f"step '{name}' failed: {type(e).__name__}: {last_line(e)}"[:800],
                              hint="a lower --opt-level skips optimizations (2: no layout/Winograd, 1: no fusion); "
                                   "run with -v for TVM's full trace, and report the model if it persists") from e
        self.seconds[name] = round(time.perf_counter() - t0, 3)


class Dumper:
    """Writes the IR after each stage into a directory (``--dump-ir``), numbered in order."""

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
    """A model loaded, cleaned up, imported and optimized."""

    loaded: object          # frontend.load.LoadedModel
    model: object           # the cleaned-up onnx.ModelProto
    mod: object             # the optimized Relax IRModule
    passes: dict[str, list[str]]
    fallbacks: list[dict] = field(default_factory=list)  # optional stages skipped: {"stage", "reason"}
    int8: bool = False      # QDQ pairs (calibrated or in the model) compute in int8
    collector: object = None  # layers.Collector: the ONNX nodes of each fused kernel
    specialized: list[dict] = field(default_factory=list)  # {"name": "main_S128", "dims": {"S": 128}}
    notes: list[dict] = field(default_factory=list)  # how contrib ops compute: {"op", "nodes", "computes"}

    @property
    def check_precision(self) -> str | None:
        """"int8" where ONNX Runtime computes some op of the model in int8 (QDQ pairs, or a contrib
        op that quantizes its activations at run time), so the check takes int8's tolerance."""
        if self.int8 or any(n.get("reference") == "int8" for n in self.notes):
            return "int8"
        return None


def prepare_module(model: Path, preset: Preset, input_shapes: dict, opt_level: int,
                   dump_ir: Path | None = None, step=None, onnx_hook=None, precision: str = "fp32",
                   dims: dict | None = None) -> Prepared:
    """The front half (README.md, "The pipeline", steps 1-6), shared by compile and tune.

    ``onnx_hook``: the int8 hook (quantize/int8.py) ``quantize.before_import`` runs.
    ``precision`` is the float precision the graph is optimized for (fp32 under int8).
    ``dims`` (frontend.dims) keeps those input dims symbolic; each combination of their optimized
    sizes is imported again with the sizes bound, as a function of its own (``main_S128``).
    """
    step = step or (lambda name: contextlib.nullcontext())
    passes: dict[str, list[str]] = {}
    if tflite.is_tflite(model):  # the one place the file type picks the frontend
        return _prepare_tflite(model, preset, input_shapes, opt_level, dump_ir, step, onnx_hook, precision, dims)
    with step("load"):
        loaded = load_model(model)
        check_supported(loaded.model)
    dims = dims or {}
    with step("clean-up"):
        cleaned = cleanup(loaded.model, input_shapes, dims)
    notes = qoperator.notes(cleaned)
    cleaned = before_import(cleaned, onnx_hook, step, loaded.model.graph)
    backend, target = for_preset(preset), preset.tvm_target()
    kernels = backend.frontend_kernels(target)
    with step("import"):
        mod = import_model(cleaned, dims, kernels, backend.half_in_float32)
    notes += converters.notes()
    for n in notes:
        log.info(f"  {n['op']} ({len(n['nodes'])}x): {n['computes']}")
    specialized = []
    for binding in specializations(dims):
        name = function_name(binding)
        with step(f"import: {name} ({point_text(binding)})"):
            mod = _add_specialization(mod, name, loaded.model, input_shapes, dims, binding, onnx_hook,
                                      kernels, backend.half_in_float32)
        specialized.append({"name": name, "dims": binding})
    dump = Dumper(Path(dump_ir) if dump_ir else None)
    dump("imported", mod)
    mod, int8 = after_import(mod, cleaned, step)
    if int8:
        passes["quantize"] = list(AFTER_IMPORT_PASSES)
        dump("int8", mod)
    mod, passes, fallbacks, collector = _optimize(mod, backend, target, opt_level, precision, int8, passes, step, dump)
    return Prepared(loaded, cleaned, mod, passes, fallbacks, int8, collector, specialized, notes)


def _optimize(mod, backend, target, opt_level: int, precision: str, int8: bool, passes: dict, step, dump):
    """The backend's optimize stages; an optional one that fails is skipped and recorded."""
    fallbacks: list[dict] = []
    collector = layers.Collector()
    for stage, make, optional in pipeline_for(backend, target, opt_level, precision=precision, int8=int8):
        with step(f"optimize: {stage}"):
            stage_passes = make()
            try:
                with log.tvm_quiet():
                    mod = run_stage(mod, stage_passes, target, collector)
            except Exception as e:  # noqa: BLE001 - an optimization must never break a compile
                if not optional:
                    raise
                reason = last_line(e)[:300]
                log.warn(f"optimize: stage '{stage}' does not apply to this model and was skipped ({reason})")
                fallbacks.append({"stage": stage, "reason": reason})
                continue
            passes[stage] = [str(p.info.name) for p in stage_passes]
        for skip in collector.skipped:
            log.warn(f"optimize: {skip['stage']} does not apply to this model and was skipped ({skip['reason']})")
        fallbacks += collector.skipped
        collector.skipped = []
        dump(stage, mod)
    return mod, passes, fallbacks, collector


def _prepare_tflite(model: Path, preset: Preset, input_shapes: dict, opt_level: int, dump_ir, step, onnx_hook,
                    precision: str, dims) -> Prepared:
    """A .tflite model: load -> import (TVM's TFLite frontend) -> optimize. The ONNX clean-up and
    int8 calibration do not apply (a quantized .tflite computes with its own quantization)."""
    if onnx_hook is not None:
        tflite.refuse("int8 calibration (--precision int8)",
                      "convert the model to int8 with TensorFlow's full-integer post-training quantization "
                      "(a representative dataset) and compile that .tflite in fp32, or calibrate the ONNX export")
    if dims:
        tflite.refuse("--dim (a dynamic dim range)", "compile one artifact per shape with --input-shape")
    with step("load"):
        loaded = tflite.load_tflite(model)
        tflite.check_supported(loaded)
    backend, target = for_preset(preset), preset.tvm_target()
    with step("import"):
        mod = tflite.import_tflite(loaded, input_shapes)
    dump = Dumper(Path(dump_ir) if dump_ir else None)
    dump("imported", mod)
    mod, passes, fallbacks, collector = _optimize(mod, backend, target, opt_level, precision, False, {}, step, dump)
    notes = []
    if tflite.quantized(loaded):
        # the frontend dequantizes around each op: LiteRT's int8 kernels round differently
        notes.append({"op": "quantized TFLite ops", "nodes": [], "reference": "int8",
                      "computes": "dequantize -> float op -> quantize, as TVM's TFLite frontend lowers them"})
    return Prepared(loaded, None, mod, passes, fallbacks, False, collector, [], notes)


def _add_specialization(mod, name: str, model, input_shapes: dict, dims: dict, binding: dict, onnx_hook,
                        kernels=None, half_in_float32: bool = False):
    """``mod`` with one more function: the model imported with the dims in ``binding`` bound
    (clean-up folds what those sizes make constant, as for a static model)."""
    shapes = {s.name: bind_shape(input_shapes.get(s.name, s.shape), binding) for s in graph_inputs(model)}
    rest = {n: d for n, d in dims.items() if n not in binding}
    cleaned = before_import(cleanup(model, shapes, rest), onnx_hook)
    spec = import_model(cleaned, rest, kernels, half_in_float32)
    out = mod.clone()
    out[name] = spec["main"].with_attr("global_symbol", name)
    return out

