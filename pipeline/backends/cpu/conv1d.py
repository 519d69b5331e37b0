"""1-D convolutions as 2-D ones of height 1, so they get conv2d's layout and schedules.

1-D convolutions as 2-D ones with a height of 1, so that they take the NHWC layout, Winograd's
neighbours' rules and ConvMatmul's register tiling like any conv2d.

TVM has no CPU schedule for conv1d: the default rules left it a plain loop nest (an audio front
end of six Conv1d ran 17x slower than ONNX Runtime, a wav2vec2 feature encoder 26x).
``conv1d(x, w)`` in NCW/OIW becomes ``squeeze(conv2d(expand_dims(x, 2), expand_dims(w, 2)), 2)``
with the same strides, padding, dilation and groups on the width axis. An int8 conv1d with a
zero point reads ``int16(x_q) - z`` (quantize/rewrite.py); its expand_dims goes onto ``x_q``, so
that the conv2d reads the same form and the dot-product rewrite (int8_dot.py) recognizes it.
"""

from __future__ import annotations


def conv1d_as_conv2d(mod):
    """Rewrite every NCW/OIW conv1d; returns (mod, count)."""
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, wildcard
    from ...relax_helpers import rewrite_functions

    xq, z = wildcard(), is_const()
    pattern = is_op("relax.nn.conv1d")(wildcard(), wildcard())
    cast = is_op("relax.astype")(xq)
    pattern_zp = is_op("relax.nn.conv1d")(is_op("relax.subtract")(cast, z), wildcard())
    count = [0]

    def rewrite(orig, m):
        a = orig.attrs
        if str(a.data_layout) != "NCW" or str(a.kernel_layout) != "OIW" or str(a.out_layout) != "NCW":
            return orig
        x, w = orig.args
        left, right = (int(p) for p in a.padding)
        x2 = relax.op.expand_dims(x, 2)
        if xq in m and len(m[z].ty.shape) == 0:  # cast(x_q) - z -> cast(expand_dims(x_q)) - z, a scalar z
            x2 = relax.op.subtract(relax.op.astype(relax.op.expand_dims(m[xq], 2), m[cast].attrs.dtype), m[z])
        y = relax.op.nn.conv2d(x2, relax.op.expand_dims(w, 2),
                               strides=(1, int(a.strides[0])), padding=(0, left, 0, right),
                               dilation=(1, int(a.dilation[0])), groups=int(a.groups),
                               out_dtype=a.out_dtype if str(a.out_dtype) else None)
        count[0] += 1
        return relax.op.squeeze(y, [2])

    return rewrite_functions(relax.BlockBuilder(mod), mod, (pattern_zp, rewrite), (pattern, rewrite)), count[0]
