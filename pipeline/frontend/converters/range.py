"""Range over a size computed from a dynamic dim (torch's ``arange(x.shape[1])``) as ``arange(0, S)``.

TVM's converter evaluates such a limit as an int64 tensor and sizes the result with a fresh
var known only at run time; broadcasting the result against the input (positions + tokens) then
has no shape, and the next Reshape fails. Where start, limit and delta are shape computations
(frontend.symbolic), the result is sized by their expression instead.
"""

from __future__ import annotations

from .converter_base import replace


def install():
    from tvm import relax, tirx
    from tvm.relax.frontend.onnx import onnx_frontend as of

    from ..symbolic import ShapeValues

    def impl_v12(cls, bb, inputs, attr, params):
        values = ShapeValues(bb.lookup_binding)
        start, limit, delta = (values.scalar(x) for x in inputs[:3])
        dtype = str(getattr(getattr(inputs[0], "ty", None), "dtype", ""))
        if (any(v is None for v in (start, limit, delta)) or not isinstance(delta, tirx.IntImm) or int(delta) == 0
                or dtype not in ("int32", "int64") or all(isinstance(v, tirx.IntImm) for v in (start, limit))):
            return tvm_impl(cls, bb, inputs, attr, params)
        return relax.op.arange(start, limit, delta, dtype=dtype)

    tvm_impl, undo = replace(of.Range, "_impl_v12", impl_v12)
    return undo
