"""ONNX Runtime, the reference: one way to open a session, run a model and get its outputs.

Used to verify artifacts (``verify``), to time the baseline (``bench``) and to run the float
model during int8 calibration (``quantize.calibrate``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DeployError


def ort_session(model, threads: int = 0, optimize: bool = True, options=None):
    """An ONNX Runtime CPU session of ``model`` (a path, or an onnx.ModelProto); ``threads=0`` is ORT's
    default. ``optimize=False`` turns off ORT's graph optimizations (calibration observes tensors by name);
    ``options``: SessionOptions to start from (the profiler's)."""
    import onnxruntime as ort

    from ..frontend import tflite

    if tflite.is_tflite(model):  # a .tflite model's reference is LiteRT (frontend/tflite.py)
        return tflite.LiteRTSession(model, threads)
    opts = options or ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    try:
        return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        what = model if isinstance(model, (str, Path)) else "the model"
        raise DeployError(f"ONNX Runtime cannot load {what}: {str(e)[:300]}",
                          hint="pass the .onnx file the artifact was compiled from")


def reference_name(model) -> str:
    """The reference engine of ``model`` (a path or an onnx.ModelProto), as messages name it."""
    from ..frontend import tflite

    return "LiteRT" if tflite.is_tflite(model) else "ONNX Runtime"


def reference_outputs(model_path: str | Path, inputs: dict[str, np.ndarray], threads: int = 0) -> dict[str, np.ndarray]:
    sess = ort_session(model_path, threads)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, inputs)))


def ort_deviations(model) -> dict[str, str]:
    """Outputs of ``model`` (a path or ModelProto) where ONNX Runtime is known to differ from ONNX's
    own definition, mapped to why: the built-in check cannot hold the artifact to them."""
    import onnx

    from ..frontend import tflite

    if tflite.is_tflite(model):
        return {}
    m = onnx.load(str(model), load_external_data=False) if isinstance(model, (str, Path)) else model
    out = {}
    for n in m.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Attention" and attrs.get("is_causal") and len(n.output) > 3 and n.output[3]:
            out[n.output[3]] = ("ONNX Runtime leaves the causal mask out of Attention's qk_matmul_output "
                                "(its other outputs are checked)")
    return out
