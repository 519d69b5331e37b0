"""Forms of common ops TVM's converters reject though ONNX allows them:

- Pad with its constant_value fed at run time (TVM reads only a constant): padded with 0, then
  the value put where the padding is (``pad(x) + v * (1 - pad(ones))``);
- Pow with an exponent of another type than the base: a float base takes the exponent in its
  type; an int base to a float power is computed in the float type and cast back (ONNX's result
  has the base's type);
- EyeLike with a ``dtype`` other than the input's (TVM's converter refuses it, and its
  legalization ignores the type): a constant of the static shape, in that type.
"""

from __future__ import annotations

import numpy as np

from .base import replace


def _runtime(x, params) -> bool:
    import tvm
    from tvm import relax

    if x is None or isinstance(x, tvm.ir.GenericConst):
        return False
    return not (isinstance(x, relax.Var) and x.name in params[1])


def _pad(original):
    def impl(cls, bb, inputs, attr, params):
        from tvm import relax

        mode = attr.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if len(inputs) < 3 or not _runtime(inputs[2], params) or mode != "constant":
            return original(cls, bb, inputs, attr, params)
        x, value = inputs[0], inputs[2]
        rest = list(inputs)
        rest[2] = None
        padded = bb.normalize(original(cls, bb, rest, attr, params))
        ones = list(rest)
        ones[0] = bb.normalize(relax.op.ones_like(x))
        mask = bb.normalize(original(cls, bb, ones, attr, params))  # 1 inside, 0 in the padding
        dtype = str(x.ty.dtype)
        v = bb.normalize(relax.op.astype(relax.op.reshape(value, ()), dtype))
        border = relax.op.multiply(v, relax.op.subtract(relax.const(1, dtype), mask))
        return relax.op.add(padded, border)

    return impl


def _pow(original):
    def impl(cls, bb, inputs, attr, params):
        from tvm import relax

        base, exp = inputs[0], inputs[1]
        bt, et = str(getattr(base.ty, "dtype", "")), str(getattr(exp.ty, "dtype", ""))
        if not bt or not et or bt == et:
            return original(cls, bb, inputs, attr, params)
        if bt.startswith(("float", "bfloat")):
            return original(cls, bb, [base, bb.normalize(relax.op.astype(exp, bt))], attr, params)
        # an int base to a float power: computed in the exponent's type, the result in the base's
        wide = bb.normalize(relax.op.astype(base, et))
        return relax.op.astype(bb.normalize(original(cls, bb, [wide, exp], attr, params)), bt)

    return impl


def _eye_like(original):
    def impl(cls, bb, inputs, attr, params):
        from onnx import helper
        from tvm import relax

        x = inputs[0]
        to = str(np.dtype(helper.tensor_dtype_to_np_dtype(int(attr["dtype"])))) if "dtype" in attr else str(x.ty.dtype)
        shape = getattr(x.ty, "shape", None)
        try:
            n, m = (int(d) for d in shape)
        except (TypeError, ValueError):
            return original(cls, bb, inputs, attr, params)
        # a constant (TVM's eye_like legalizes in the input's type, whatever dtype says)
        return relax.const(np.eye(n, m, int(attr.get("k", 0)), dtype=to), to)

    return impl


def install():
    from tvm.relax.frontend.onnx import onnx_frontend as of

    undo = []
    for v in ("_impl_v11", "_impl_v18", "_impl_v19"):
        if v in of.Pad.__dict__:
            undo.append(replace(of.Pad, v, _pad(of.Pad.__dict__[v].__func__))[1])
    undo.append(replace(of.Pow, "_impl_v7", _pow(of.Pow.__dict__["_impl_v7"].__func__))[1])
    undo.append(replace(of.EyeLike, "_impl_v9", _eye_like(of.EyeLike.__dict__["_impl_v9"].__func__))[1])

    def undo_all():
        for u in reversed(undo):
            u()

    return undo_all
