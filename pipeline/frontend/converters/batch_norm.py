"""BatchNormalization with ``training_mode=1``: normalized by the batch's own statistics.

Deterministic, unlike training-mode Dropout, and in inference graphs for real: BiT's
weight-standardized convolutions export their weight standardization as one (on a constant
weight, so it folds away). TVM's converter emits ``batch_norm(training=True)``, which its
inference decomposition then computes with the moving statistics: the wrong numbers. Here: the
mean and the (population) variance over every axis but the channels, ``y = (x - mean) /
sqrt(var + epsilon) * scale + bias``, and the running statistics ONNX defines,
``input_mean * momentum + mean * (1 - momentum)`` and the same for the variance. float16 data
computes in float32."""

from __future__ import annotations

from ..half import HALF
from .converter_base import replace


def install():
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as of

    def impl(cls, bb, inputs, attr, params):
        if not attr.get("training_mode", 0):
            return tvm_impl(cls, bb, inputs, attr, params)
        op = relax.op
        x, scale, bias, mean, var = inputs[:5]
        dtype = str(x.ty.dtype)
        wide = "float32" if dtype in HALF else dtype

        def up(e):
            return e if str(e.ty.dtype) == wide else bb.normalize(op.astype(e, wide))

        x, scale, bias, mean, var = (up(e) for e in (x, scale, bias, mean, var))
        rank = len(x.ty.shape)
        axes = [a for a in range(rank) if a != 1]
        eps, momentum = float(attr.get("epsilon", 1e-5)), float(attr.get("momentum", 0.9))

        def channel(e):
            return bb.normalize(op.reshape(bb.normalize(e), [1, -1] + [1] * (rank - 2)))

        m = bb.normalize(op.mean(x, axes))
        centred = bb.normalize(op.subtract(x, channel(m)))
        v = bb.normalize(op.mean(op.multiply(centred, centred), axes))
        y = op.add(op.multiply(op.divide(centred, channel(op.sqrt(op.add(v, relax.const(eps, wide))))), channel(scale)),
                   channel(bias))
        run_mean = op.add(op.multiply(mean, relax.const(momentum, wide)), op.multiply(m, relax.const(1 - momentum, wide)))
        run_var = op.add(op.multiply(var, relax.const(momentum, wide)), op.multiply(v, relax.const(1 - momentum, wide)))
        outs = [bb.normalize(e) for e in (y, run_mean, run_var)]
        if wide != dtype:
            outs[0] = bb.normalize(op.astype(outs[0], dtype))
        outs[1:] = [e if str(e.ty.dtype) == str(i.ty.dtype) else bb.normalize(op.astype(e, str(i.ty.dtype)))
                    for e, i in zip(outs[1:], inputs[3:5])]
        return relax.Tuple(outs)

    tvm_impl, undo = replace(of.BatchNormalization, "_impl_v15", impl)
    return undo
