"""Clip with constant bounds imports as relax.maximum/minimum, not TVM's opaque TIR kernel.

TVM's converter emits Clip as a ``call_tir`` of a TE kernel: FuseOps cannot fuse it into the
convolution before it, and the layout pass cannot see through it, so every ReLU6 (MobileNets,
EfficientNets) sat between two transposes in its own kernel.
"""

from __future__ import annotations

from .converter_base import replace


def install():
    """Clip with constant bounds as relax.maximum/minimum; returns the undo."""
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as of

    def bound(b):
        if b is None:
            return None, True
        if isinstance(b, tvm.ir.GenericConst) and b.value.numpy().size == 1:
            v = b.value.numpy().reshape(())
            return (None, True) if np.isinf(v) else (v, not np.isnan(v))
        return None, False

    def impl_v13(cls, bb, inputs, attr, params):
        x = inputs[0]
        lo, lo_ok = bound(inputs[1] if len(inputs) > 1 else None)
        hi, hi_ok = bound(inputs[2] if len(inputs) > 2 else None)
        dtype = str(getattr(getattr(x, "ty", None), "dtype", None))
        if not (lo_ok and hi_ok) or dtype not in ("float32", "float16"):
            return tvm_impl(cls, bb, inputs, attr, params)
        out = x
        if lo is not None:
            out = bb.normalize(relax.op.maximum(out, relax.const(lo.astype(dtype), dtype)))
        if hi is not None:
            out = bb.normalize(relax.op.minimum(out, relax.const(hi.astype(dtype), dtype)))
        return out

    tvm_impl, undo = replace(of.Clip, "_impl_v13", impl_v13)
    return undo
