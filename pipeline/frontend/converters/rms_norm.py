"""RMSNormalization over every axis (``axis`` 0) in plain ops.

TVM 0.27's ``rms_norm`` fails to build when the normalized axes are all of the input's ("Tensor
dimension mismatch in read ndim = 1, indices.size = 0"). There the norm is written out:
``x / sqrt(mean(x * x) + epsilon) * scale``, in float32 under the default ``stash_type``. Other
axes keep TVM's converter (its fused op).
"""

from __future__ import annotations

from .converter_base import replace


def install():
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as of

    def impl_v23(cls, bb, inputs, attr, params):
        x, scale = inputs[0], inputs[1]
        rank = len(x.ty.shape)
        axis = int(attr.get("axis", -1))
        axis = axis + rank if axis < 0 else axis
        if axis != 0:
            return tvm_impl(cls, bb, inputs, attr, params)
        op = relax.op
        dtype = str(x.ty.dtype)
        work = "float32" if int(attr.get("stash_type", 1)) == 1 else dtype
        xc = bb.normalize(op.astype(x, work)) if work != dtype else x
        sc = bb.normalize(op.astype(scale, work)) if work != dtype else scale
        ms = op.mean(op.multiply(xc, xc), axis=list(range(rank)), keepdims=True)
        eps = relax.const(float(attr.get("epsilon", 1e-5)), work)
        y = op.multiply(op.divide(xc, op.sqrt(op.add(ms, eps))), sc)
        return bb.normalize(op.astype(y, dtype)) if work != dtype else y

    tvm_impl, undo = replace(of.RMSNormalization, "_impl_v23", impl_v23)
    return undo
