"""The whole int8 step on a cleaned-up ONNX model: calibrate, write QDQ, gate the accuracy."""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from .. import log
from ..errors import DeployError
from ..frontend.specs import graph_inputs
from . import calibrate as cal
from .accuracy import accuracy, format_accuracy
from .qdq import activation_tensors, check_exclude, gemm_to_matmul, has_qdq, insert_qdq, node_name, quantizable


@dataclass
class Int8Result:
    model: onnx.ModelProto          # the QDQ model to import
    held_out: list[dict]            # samples for the accuracy report
    reference: list[dict]           # float outputs on them
    info: dict                      # for the manifest
    serves: dict[str, list[str]] = field(default_factory=dict)  # QDQ node -> the layers it serves
    float_model: onnx.ModelProto | None = None  # the float model it quantizes (the check's second opinion)


@dataclass
class Calibrated:
    """What calibration measured, once: every later choice of layers quantizes from it."""
    model: onnx.ModelProto          # the cleaned-up float model (Gemm as MatMul + Add)
    ranges: dict | None             # activation tensor -> (lo, hi); None: dynamic (scales at run time)
    held_out: list[dict]
    reference: list[dict]           # float outputs on the held-out samples
    outputs: list[str]
    calibrator: str
    samples: int
    digest: str


def calibrate_int8(model: onnx.ModelProto, specs: list[dict], calibration, calibrator: str = "minmax",
                   random_calibration: bool = False, dynamic: bool = False) -> Calibrated:
    """Load (or make) the samples and collect the activation ranges of every quantizable layer.

    ``dynamic``: no ranges (the scales are computed at run time); the samples (the user's, else
    seeded random inputs, which is sound here: nothing is fitted to them) only measure accuracy."""
    cal.check_calibrator(calibrator)
    if has_qdq(model):
        raise DeployError("this model is already quantized (it has QuantizeLinear/DequantizeLinear nodes)",
                          hint="compile it without --quantize: its QDQ pairs are compiled to int8 as they are")
    if dynamic:
        samples, digest = (cal.load_calibration(calibration, specs) if calibration is not None
                           else (cal.random_calibration(specs, n=4), "random"))
        samples = samples[:8]
        model = gemm_to_matmul(model)
        reference = cal.run_onnx(model, samples)
        return Calibrated(model, None, samples, reference, list(reference[0]), "dynamic", 0, digest)
    if calibration is None:
        if not random_calibration:
            raise DeployError("--quantize int8 needs calibration data",
                              hint="pass --calibration DATA (.npz or a directory of .npy/.npz keyed by input name); "
                                   "--random-calibration uses random inputs, for testing only")
        log.warn("calibrating on random inputs: the int8 model's accuracy is meaningless")
        samples, digest = cal.random_calibration(specs), "random"
    else:
        samples, digest = cal.load_calibration(calibration, specs)
    calib, held = cal.split(samples)
    model = gemm_to_matmul(model)
    ranges = cal.collect_ranges(model, activation_tensors(model), calib, calibrator)
    reference = cal.run_onnx(model, held)
    return Calibrated(model, ranges, held, reference, list(reference[0]), calibrator, len(calib), digest)


def prepare_int8(model: onnx.ModelProto, specs: list[dict], calibration, calibrator: str = "minmax",
                 per_channel: bool = True, exclude: list[str] | None = None,
                 max_accuracy_drop: float | None = None, random_calibration: bool = False) -> Int8Result:
    """Calibrate, write the QDQ model, and (with a gate) fall back the most sensitive layers to float."""
    c = calibrate_int8(model, specs, calibration, calibrator, random_calibration)
    return quantize_calibrated(c, per_channel, exclude, max_accuracy_drop)


def quantize_calibrated(c: Calibrated, per_channel: bool = True, exclude: list[str] | None = None,
                        max_accuracy_drop: float | None = None, kept_float: dict[str, str] | None = None) -> Int8Result:
    """The QDQ model of every quantizable layer but ``exclude`` (and ``kept_float``: layer -> why,
    chosen by measured speed), with the accuracy gate's fall-backs."""
    exclude = list(exclude or [])
    kept_float = dict(kept_float or {})
    model, held, reference, outputs = c.model, c.held_out, c.reference, c.outputs
    check_exclude(model, exclude)

    def measure(qm):
        return accuracy(reference, cal.run_onnx(qm, held, outputs))

    ranges = c.ranges
    skip = set(exclude) | set(kept_float)
    q = insert_qdq(model, ranges, per_channel, skip)
    qm, done = q.model, q.layers
    acc = measure(qm)
    fallback: list[str] = []
    sensitivity: dict[str, float] = {}
    if max_accuracy_drop is not None and acc["drop"] > max_accuracy_drop:
        log.info(f"  accuracy drop {acc['drop']:.4f} > {max_accuracy_drop}: measuring each layer's sensitivity")
        errors: dict[str, float] = {}
        for name in done:
            only = set(done) - {name} | skip
            m = measure(insert_qdq(model, ranges, per_channel, only).model)
            sensitivity[name], errors[name] = m["drop"], m["error"]
        # each layer alone in int8: the largest drop falls back first, then (where few held-out
        # samples give most layers the same drop, often 0) the largest error
        order = sorted(done, key=lambda n: (-sensitivity[n], -errors[n]))
        for name in order:
            fallback.append(name)
            q = insert_qdq(model, ranges, per_channel, skip | set(fallback))
            qm = q.model
            acc = measure(qm)
            log.info(f"  {name} falls back to float (sensitivity {sensitivity[name]:.4f}): drop now {acc['drop']:.4f}")
            if acc["drop"] <= max_accuracy_drop:
                break
        done = [n for n in done if n not in fallback]
        if acc["drop"] > max_accuracy_drop:
            raise DeployError(f"int8 accuracy gate failed: drop {acc['drop']:.4f} > --max-accuracy-drop "
                              f"{max_accuracy_drop} even with every layer in float\n    " + format_accuracy(acc),
                              hint="raise --max-accuracy-drop, use more representative calibration data, or "
                                   "compile without --quantize")
    log.info(f"  quantized {len(done)} layer(s) "
             + ("dynamically (activation scales at run time)" if ranges is None
                else f"with {c.calibrator} on {c.samples} sample(s)")
             + (f"; in float: {', '.join(fallback + exclude + list(kept_float))}"
                if fallback or exclude or kept_float else ""))
    precision = {n: {"precision": "int8"} for n in done}
    precision.update({n: {"precision": "float32", "why": "--exclude"} for n in exclude})
    precision.update({n: {"precision": "float32", "why": f"accuracy gate (sensitivity {sensitivity[n]:.4f})"}
                      for n in fallback})
    precision.update({n: {"precision": "float32", "why": why} for n, why in kept_float.items()})
    weights = "weights int8 symmetric per-" + ("channel" if per_channel else "tensor")
    info = {"scheme": (f"int8 dynamic: MatMuls only; {weights}, activations uint8 with a scale and zero point "
                       "computed at run time per tensor; int32 accumulation" if ranges is None else
                       f"int8 static: {weights}, activations int8 symmetric per-tensor; int32 accumulation"),
            "calibrator": c.calibrator, "calibration_sha256": c.digest,
            "calibration_samples": c.samples, "held_out_samples": len(held),
            "quantized_layers": done, "excluded": exclude, "fallback": fallback,
            "kept_float_for_speed": sorted(kept_float),
            "sensitivity": sensitivity, "max_accuracy_drop": max_accuracy_drop,
            "layers": precision,
            "quantized_weight_bytes": q.weight_bytes,
            "simulated_accuracy": acc}
    return Int8Result(qm, held, reference, info, q.serves, c.model)


class Int8Hook:
    """The ONNX hook that quantizes a cleaned-up model: compile and tune run it on the same
    cleaned-up graph, so tuning sees the int8 kernels compile builds. It calibrates once; a
    later build with more layers kept in float (``keep_float``) re-quantizes from those ranges."""

    def __init__(self, calibration, calibrator: str = "minmax", per_channel: bool = True,
                 exclude: list[str] | None = None, max_accuracy_drop: float | None = None,
                 random_calibration: bool = False, dynamic: bool = False):
        self.calibration, self.calibrator, self.random_calibration = calibration, calibrator, random_calibration
        self.dynamic = dynamic
        self.per_channel, self.exclude, self.max_accuracy_drop = per_channel, list(exclude or []), max_accuracy_drop
        self.kept_float: dict[str, str] = {}
        self.original: dict[str, str] = {}  # the user's graph: names and output tensors -> node (prepare sets it)
        self.calibrated: Calibrated | None = None
        self.result: Int8Result | None = None

    def keep_float(self, layers: dict[str, str]) -> None:
        """Keep these layers (name -> why) in float in the next build."""
        self.kept_float = dict(layers)
        self.result = None

    def __call__(self, cleaned: onnx.ModelProto) -> onnx.ModelProto:
        if self.calibrated is None:
            specs = [s.to_dict() for s in graph_inputs(cleaned)]
            self.calibrated = calibrate_int8(cleaned, specs, self.calibration, self.calibrator,
                                             self.random_calibration, self.dynamic)
        if self.result is None:
            self.result = quantize_calibrated(self.calibrated, self.per_channel, self.user_names(self.exclude),
                                              self.max_accuracy_drop, self.kept_float)
        return self.result.model

    def user_name(self, layer: str) -> str:
        """The user's name of a node of the cleaned-up model (clean-up may leave it unnamed, and
        it is then called after its output tensor)."""
        from ..frontend import provenance

        return (provenance.original_node(layer, self.original) or layer) if self.original else layer

    def user_names(self, names: list[str]) -> list[str]:
        """``names`` (the user's, or the cleaned-up model's) as the cleaned-up model's."""
        if not self.original or self.calibrated is None:
            return list(names)
        back = {self.user_name(node_name(n)): node_name(n) for n in quantizable(self.calibrated.model)}
        return [back.get(n, n) for n in names]
