"""The whole int8 step on a cleaned-up ONNX model: calibrate, write QDQ, gate the accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from .. import log
from ..errors import DeployError
from ..frontend.specs import graph_inputs
from . import calibrate as cal
from .accuracy import accuracy, format_accuracy
from .qdq import activation_tensors, check_exclude, gemm_to_matmul, has_qdq, insert_qdq


@dataclass
class Int8Result:
    model: onnx.ModelProto          # the QDQ model to import
    held_out: list[dict]            # samples for the accuracy report
    reference: list[dict]           # float outputs on them
    info: dict                      # for the manifest


def prepare_int8(model: onnx.ModelProto, specs: list[dict], calibration, calibrator: str = "minmax",
                 per_channel: bool = True, exclude: list[str] | None = None,
                 max_accuracy_drop: float | None = None, random_calibration: bool = False) -> Int8Result:
    """Calibrate, write the QDQ model, and (with a gate) fall back the most sensitive layers to float."""
    exclude = list(exclude or [])
    cal.check_calibrator(calibrator)
    if has_qdq(model):
        raise DeployError("this model is already quantized (it has QuantizeLinear/DequantizeLinear nodes)",
                          hint="compile it without --quantize: its QDQ pairs are compiled to int8 as they are")
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
    check_exclude(model, exclude)
    acts = activation_tensors(model)
    ranges = cal.collect_ranges(model, acts, calib, calibrator)
    reference = cal.run_onnx(model, held)
    outputs = list(reference[0])

    def measure(qm):
        return accuracy(reference, cal.run_onnx(qm, held, outputs))

    skip = set(exclude)
    q = insert_qdq(model, ranges, per_channel, skip)
    qm, done = q.model, q.layers
    acc = measure(qm)
    fallback: list[str] = []
    sensitivity: dict[str, float] = {}
    if max_accuracy_drop is not None and acc["drop"] > max_accuracy_drop:
        log.info(f"  accuracy drop {acc['drop']:.4f} > {max_accuracy_drop}: measuring each layer's sensitivity")
        for name in done:
            only = set(done) - {name} | skip
            sensitivity[name] = measure(insert_qdq(model, ranges, per_channel, only).model)["drop"]
        order = sorted(done, key=lambda n: -sensitivity[n])
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
    log.info(f"  quantized {len(done)} layer(s) with {calibrator} on {len(calib)} sample(s)"
             + (f"; in float: {', '.join(fallback + exclude)}" if fallback or exclude else ""))
    info = {"scheme": "int8 symmetric, weights per-" + ("channel" if per_channel else "tensor")
                      + ", activations per-tensor; int32 accumulation",
            "calibrator": calibrator, "calibration_sha256": digest,
            "calibration_samples": len(calib), "held_out_samples": len(held),
            "quantized_layers": done, "excluded": exclude, "fallback": fallback,
            "sensitivity": sensitivity, "max_accuracy_drop": max_accuracy_drop,
            "quantized_weight_bytes": q.weight_bytes,
            "simulated_accuracy": acc}
    return Int8Result(qm, held, reference, info)


class Int8Hook:
    """The ONNX hook that quantizes a cleaned-up model (calibration and QDQ, once): compile and
    tune run it on the same cleaned-up graph, so tuning sees the int8 kernels compile builds."""

    def __init__(self, calibration, calibrator: str = "minmax", per_channel: bool = True,
                 exclude: list[str] | None = None, max_accuracy_drop: float | None = None,
                 random_calibration: bool = False):
        self.kw = dict(calibration=calibration, calibrator=calibrator, per_channel=per_channel,
                       exclude=list(exclude or []), max_accuracy_drop=max_accuracy_drop,
                       random_calibration=random_calibration)
        self.result: Int8Result | None = None

    def __call__(self, cleaned: onnx.ModelProto) -> onnx.ModelProto:
        if self.result is None:
            specs = [s.to_dict() for s in graph_inputs(cleaned)]
            self.result = prepare_int8(cleaned, specs, **self.kw)
        return self.result.model
