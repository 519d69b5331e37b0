"""LayerNormalization with its Mean and InvStdDev outputs (TVM's converter returns scalar zeros).

The normalized output stays TVM's fused ``relax.nn.layer_norm``; Mean and InvStdDev (over the
axes from ``axis`` to the last, kept as size-1 dims, in float32 as ``stash_type`` 1 says) are
computed only when the node has those outputs.
"""

from __future__ import annotations

from .converter_base import replace


def install():
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as of

    def impl_v17(cls, bb, inputs, attr, params):
        out = tvm_impl(cls, bb, inputs, attr, params)
        if attr.get("tvm_custom", {}).get("num_outputs", 3) <= 1:
            return out  # only Y: TVM's converter as it is
        data = inputs[0]
        shape = getattr(data.ty, "shape", None)
        if shape is None or not isinstance(out, relax.Tuple):
            return out
        rank = len(shape)
        axis = attr.get("axis", -1)
        axis = axis + rank if axis < 0 else axis
        axes = list(range(axis, rank))
        eps = float(attr.get("epsilon", 1e-5))
        x = data if str(data.ty.dtype) == "float32" else bb.normalize(relax.op.astype(data, "float32"))
        mean = bb.normalize(relax.op.mean(x, axes, keepdims=True))
        var = bb.normalize(relax.op.mean(relax.op.square(relax.op.subtract(x, mean)), axes, keepdims=True))
        inv = bb.normalize(relax.op.rsqrt(relax.op.add(var, relax.const(eps, "float32"))))
        return relax.Tuple([out.fields[0], mean, inv])

    tvm_impl, undo = replace(of.LayerNormalization, "_impl_v17", impl_v17)
    return undo
