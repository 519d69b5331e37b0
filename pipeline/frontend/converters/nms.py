"""NonMaxSuppression with its thresholds fed at run time.

TVM's converter reads iou_threshold, score_threshold and max_output_boxes_per_class only when
they are constants, and otherwise silently uses 0.5, 0.0 and 0 (a wrong answer: every box over a
score of 0 is kept). deploy passes run-time thresholds to the NMS kernel as tensors, which it
takes, and refuses a run-time max_output_boxes_per_class (it sizes the output) with the fix.

TVM's kernel also suppresses a box whose IoU equals the threshold, where ONNX keeps it (it
suppresses above the threshold only): the threshold it is given is the next float32 up. And
without a score_threshold TVM drops every box scored 0 or less; ONNX drops none. TVM's kernel
marks suppressed boxes with a score of -1, so scores are moved above 0 first when any is not.
"""

from __future__ import annotations

from .converter_base import replace, runtime_input


def _scalar(bb, x):
    from tvm import relax

    x = bb.normalize(relax.op.astype(x, "float32")) if str(x.ty.dtype) != "float32" else x
    return bb.normalize(relax.op.reshape(x, ()))


def _const_value(x, params, default: float) -> float:
    import tvm

    if x is None:
        return default
    if isinstance(x, tvm.ir.GenericConst):
        return float(x.value.numpy().reshape(-1)[0])
    return float(params[1][x.name][1].numpy().reshape(-1)[0])


def _just_above(t):
    """The next float32 above a threshold (``iou >= that`` is ``iou > t``), from 0 up (ONNX Runtime
    refuses a threshold outside [0, 1]; TVM's kernel keeps no box at all below 0)."""
    from tvm import te
    from tvm import tirx as tir

    def f():
        v = tir.max(t(), tir.const(0.0, "float32"))
        return tir.reinterpret("float32", tir.reinterpret("int32", v) + tir.const(1, "int32"))

    return te.compute((), f, name="iou_threshold")


def _nms_call(bb, got):
    """The all_class_non_max_suppression call behind TVM's converter's result."""
    from tvm import relax

    for _ in range(3):
        if isinstance(got, relax.Var):
            got = bb.lookup_binding(got)
        elif isinstance(got, relax.TupleGetItem):
            got = got.tuple_value
        elif isinstance(got, relax.Call) and "non_max_suppression" in getattr(got.op, "name", ""):
            return got
        else:
            return None
    return got if isinstance(got, relax.Call) and "non_max_suppression" in getattr(got.op, "name", "") else None


def _wrap(original):
    def impl(cls, bb, inputs, attr, params):
        from tvm import relax

        from ...errors import DeployError

        opt = [inputs[i] if len(inputs) > i else None for i in (2, 3, 4)]
        if runtime_input(opt[0], params):
            raise DeployError("NonMaxSuppression's max_output_boxes_per_class is computed at run time; deploy needs "
                              "it constant (it sizes the output)",
                              hint="make it an initializer in the model (onnxslim folds it when it is computed from "
                                   "constants)")
        # TVM's converter for the constant parts (max boxes, box format), the thresholds after it
        stub = list(inputs[:2]) + [opt[0]] + [relax.const(0.5, "float32"), relax.const(0.0, "float32")]
        got = original(cls, bb, stub, attr, params)
        nms = _nms_call(bb, got)
        if nms is None:
            raise DeployError("NonMaxSuppression could not be converted",
                              hint="report the model; make iou_threshold and score_threshold initializers")
        args = list(nms.args)
        iou = _scalar(bb, opt[1]) if opt[1] is not None and runtime_input(opt[1], params) else \
            relax.const(_const_value(opt[1], params, 0.5), "float32")
        args[3] = bb.emit_te(_just_above, iou, primfunc_name_hint="nms_iou_threshold")
        # no score_threshold: no box is dropped for its score (TVM's converter drops scores <= 0)
        args[4] = _scalar(bb, opt[2]) if runtime_input(opt[2], params) else \
            relax.const(_const_value(opt[2], params, -3.4028234663852886e38), "float32")
        # TVM's kernel marks a suppressed box by its score -1 and takes a score <= 0 for no box: scores
        # (and the threshold) move up together until the smallest is 1, when any is <= 0 (order kept)
        low = bb.normalize(relax.op.min(args[1]))
        shift = bb.normalize(relax.op.where(relax.op.greater(low, relax.const(0.0, "float32")),
                                            relax.const(0.0, "float32"),
                                            relax.op.subtract(relax.const(1.0, "float32"), low)))
        args[1] = bb.normalize(relax.op.add(args[1], shift))
        args[4] = bb.normalize(relax.op.add(args[4], shift))
        out = bb.normalize(relax.Call(nms.op, args, nms.attrs, nms.ty_args))
        return bb.emit(relax.TupleGetItem(out, 0))

    return impl


def install():
    from tvm.relax.frontend.onnx import onnx_frontend as of

    original = of.NonMaxSuppression.__dict__["_impl_v10"].__func__
    return replace(of.NonMaxSuppression, "_impl_v10", _wrap(original))[1]
