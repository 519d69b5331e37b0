"""IsInf honours detect_negative / detect_positive (TVM's converter ignored them: both infinities)."""

from __future__ import annotations

from .converter_base import replace


def install():
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as of

    def impl_v10(cls, bb, inputs, attr, params):
        neg, pos = attr.get("detect_negative", 1), attr.get("detect_positive", 1)
        x = inputs[0]
        inf = relax.op.isinf(x)
        if neg and pos:
            return inf
        dtype = str(x.ty.dtype)
        zero = relax.const(0, dtype)
        if not neg and not pos:
            return relax.op.logical_and(inf, relax.op.not_equal(x, x))  # all false
        side = relax.op.greater(x, zero) if pos else relax.op.less(x, zero)
        return relax.op.logical_and(inf, side)

    _, undo = replace(of.IsInf, "_impl_v10", impl_v10)
    return undo
