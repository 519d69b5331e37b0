"""Mod with fmod=0 on floats follows numpy's (and ONNX's) rule for an infinite divisor.

TVM's floor_mod computes x - floor(x / y) * y, which is NaN for y = +-inf; the reference gives x
when x and y have the same sign (or x is 0) and y otherwise, for finite x.
"""

from __future__ import annotations

from .converter_base import replace


def install():
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as of

    def impl_v10(cls, bb, inputs, attr, params):
        out = tvm_impl(cls, bb, inputs, attr, params)
        x, y = inputs[0], inputs[1]
        if attr.get("fmod", 0) != 0 or not isinstance(out, relax.Call):
            return out
        dtype = str(getattr(getattr(x, "ty", None), "dtype", ""))
        if not dtype.startswith(("float", "bfloat")):
            return out
        op = relax.op
        zero = relax.const(0, dtype)
        r = bb.normalize(out)
        inf_y = op.logical_and(op.isinf(y), op.logical_not(op.logical_or(op.isinf(x), op.isnan(x))))
        same_sign = op.logical_not(op.logical_xor(op.greater(x, zero), op.greater(y, zero)))  # no == on bools:
        keep_x = op.logical_or(op.equal(x, zero), same_sign)  # LLVM rejects fcmp on i1
        return op.where(inf_y, op.where(keep_x, x, y), r)

    tvm_impl, undo = replace(of.Mod, "_impl_v10", impl_v10)
    return undo
