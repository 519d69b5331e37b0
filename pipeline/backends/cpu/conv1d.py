"""1-D convolutions as 2-D ones of height 1, so they get conv2d's layout and schedules.

1-D convolutions as 2-D ones with a height of 1, so that they take the NHWC layout, Winograd's
neighbours' rules and ConvMatmul's register tiling like any conv2d.

TVM has no CPU schedule for conv1d: the default rules left it a plain loop nest (an audio front
end of six Conv1d ran 17x slower than ONNX Runtime, a wav2vec2 feature encoder 26x).
``conv1d(x, w)`` in NCW/OIW becomes ``squeeze(conv2d(expand_dims(x, 2), expand_dims(w, 2)), 2)``
with the same strides, padding, dilation and groups on the width axis. An int8 conv1d with a
zero point reads ``int16(x_q) - z`` (quantize/rewrite.py); its expand_dims goes onto ``x_q``, so
that the conv2d reads the same form and the dot-product rewrite (int8_dot.py) recognizes it.

A wide float conv1d (kernel of ``WIDE`` taps or more: an STFT as a convolution, 1 -> 402 channels,
kernel 400, stride 160) or one whose stride is its kernel (patches: a byte-embedding conv) is a
matmul instead: its input windows are gathered once (``take`` with constant indices, im2col,
[N, W_out, C_in * K]) and multiplied by the weights as [C_in * K, C_out], which ConvMatmul
tiles like any dense layer (the conv2d form ran the STFT at 2 GFLOP/s, 16x ONNX Runtime's time:
its register block has 400 taps of one input channel to walk and no reuse along the width).
"""

from __future__ import annotations


WIDE = 32  # taps from which a conv1d is gathered into a matmul


def _im2col(x, w, a):
    """``conv1d(x, w)`` (NCW/OIW, groups 1, static shapes, float) as gather + matmul, or None."""
    import numpy as np
    from tvm import relax

    try:
        n, ci, width = (int(d) for d in x.ty.shape)
        co, wci, k = (int(d) for d in w.ty.shape)
    except (TypeError, AttributeError):  # a dynamic dim
        return None
    stride, dil = int(a.strides[0]), int(a.dilation[0])
    left, right = (int(p) for p in a.padding)
    if int(a.groups) != 1 or wci != ci or not str(x.ty.dtype).startswith("float") \
            or str(a.out_dtype) not in ("", "None", "void", str(x.ty.dtype)):
        return None
    if k < WIDE and not (k > 1 and stride == k and dil == 1):
        return None
    span = dil * (k - 1) + 1
    w_out = (width + left + right - span) // stride + 1
    if w_out < 1:
        return None
    if left or right:
        x = relax.op.nn.pad(x, [0, 0, 0, 0, left, right])
    idx = (np.arange(w_out)[:, None] * stride + np.arange(k)[None, :] * dil).astype("int32")
    cols = relax.op.take(x, relax.const(idx), axis=2)  # [N, C_in, W_out, K]
    cols = relax.op.reshape(relax.op.permute_dims(cols, [0, 2, 1, 3]), [n, w_out, ci * k])
    wm = relax.op.permute_dims(relax.op.reshape(w, [co, ci * k]), [1, 0])  # [C_in * K, C_out], folded
    y = relax.op.matmul(cols, wm)  # [N, W_out, C_out]
    return relax.op.permute_dims(y, [0, 2, 1])


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
        if xq not in m:
            gathered = _im2col(x, w, a)
            if gathered is not None:
                count[0] += 1
                return gathered
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
