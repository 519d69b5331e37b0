"""int8 depthwise and grouped convolutions on x86, computed exactly in float32.

VNNI's ``vpdpbusd`` needs a reduction over 4 input channels, which a depthwise conv does not have
(one input channel per output), so these kernels ran on the int32 vector path: a 32-bit integer
multiply per tap (``vpmulld``, two micro-ops and a long latency), about twice the time of the float
kernel (MobileNetV2's depthwise convs: 0.26 vs 0.13 ms). But every product of an int8 weight and an
int8 activation (or ``int16(x_q) - z`` with a zero point, at most 255 in magnitude) is an integer
below 2**15, and a float32 sum of integers is exact while it stays below 2**24: for
``taps * 255 * 127 < 2**24`` (up to 518 taps per output; a 7x7 depthwise conv has 49) the float32
conv of the cast operands returns exactly the int32 result. So such a conv becomes
``int32(conv2d(float32(x), float32(w)))``, one kernel (``cast_conv_func``) that reads the int8
activations and casts them in its padding stage: the conv takes the float depthwise schedule, and
the activations travel as int8 between layers.
"""

from __future__ import annotations

import numpy as np

EXACT = 2 ** 24


def cast_conv_func(x_shape, x_dtype: str, w_shape, out_shape, attrs):
    """The NHWC/HWIO grouped conv as one kernel that reads its integer input and casts it to
    float32 in its padding stage (the blocks TVM legalizes a grouped conv2d to, with the cast).
    A relax ``astype`` would fuse into the producer instead, which then writes the activations as
    float32: 4x the bytes of int8 (MobileNetV2's 112x112x96 input to its first depthwise conv:
    4.8 MB instead of 1.2)."""
    from tvm import te, tirx

    from .int8_dot import i64

    n, h, w_, ci = (int(v) for v in x_shape)
    kh, kw, cig, co = (int(v) for v in w_shape)
    cog = co // int(attrs.groups)
    sh, sw = (int(v) for v in attrs.strides)
    dh, dw = (int(v) for v in attrs.dilation)
    top, left, bottom, right = (int(v) for v in attrs.padding)
    X = te.placeholder([i64(v) for v in x_shape], x_dtype, name="x")
    W = te.placeholder([i64(v) for v in w_shape], "float32", name="w")
    pad = te.compute(
        [i64(v) for v in (n, h + top + bottom, w_ + left + right, ci)],
        lambda b, y, x, c: tirx.if_then_else(
            tirx.all(y >= top, y < top + h, x >= left, x < left + w_),
            X[b, y - top, x - left, c].astype("float32"), tirx.const(0.0, "float32")),
        name="pad_temp")
    ry = te.reduce_axis((i64(0), i64(kh)), "ry")
    rx = te.reduce_axis((i64(0), i64(kw)), "rx")
    rc = te.reduce_axis((i64(0), i64(cig)), "rc")
    out = te.compute(
        [i64(v) for v in out_shape],
        lambda b, y, x, c: te.sum(pad[b, y * sh + ry * dh, x * sw + rx * dw, c // cog * cig + rc] * W[ry, rx, rc, c],
                                  axis=[ry, rx, rc]),
        name="group_conv2d_nhwc")
    return te.create_prim_func([X, W, out]).without_attr("global_symbol")


def grouped_as_float(mod):
    """Rewrite exact int8 grouped/depthwise conv2d (int32 output) into float32 compute; returns (mod, count)."""
    from tvm import relax

    from ...relax_helpers import rewrite_functions
    from .int8_dot import int8_conv_patterns

    x_pat, w_pat, xq_pat, z_pat, conv, shifted, perm, conv_zp = int8_conv_patterns()
    bb = relax.BlockBuilder(mod)
    funcs: dict[tuple, object] = {}  # one kernel per shape, as int8_dot does
    count = [0]

    def rewrite(orig, m, zp_form=False):
        a, w = orig.attrs, m[w_pat]
        if (int(a.groups) == 1 or str(a.out_dtype) != "int32" or str(w.ty.dtype) != "int8"
                or (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != ("NHWC", "HWIO", "NHWC")):
            return orig
        x = m[perm] if zp_form and perm in m else (m[shifted] if zp_form else m[x_pat])
        if zp_form:
            if str(m[xq_pat].ty.dtype) not in ("int8", "uint8") or m[z_pat].value.numpy().size != 1:
                return orig
            bound = 255
        elif str(x.ty.dtype) == "int8":
            bound = 128
        else:
            return orig
        wv = w.value.numpy()
        taps = wv.size // int(wv.shape[3])  # weights per output channel (HWIO)
        if taps * bound * 127 >= EXACT:
            return orig
        x_shape, out_shape = [int(v) for v in x.ty.shape], [int(v) for v in orig.ty.shape]
        key = (tuple(x_shape), str(x.ty.dtype), wv.shape, tuple(out_shape),
               *(tuple(int(v) for v in attr) for attr in (a.strides, a.padding, a.dilation)), int(a.groups))
        if key not in funcs:
            funcs[key] = bb.add_func(cast_conv_func(x_shape, str(x.ty.dtype), wv.shape, out_shape, a),
                                     f"conv2d_{x.ty.dtype}_as_float{len(funcs)}")
        out = relax.call_tir(funcs[key], [x, relax.const(wv.astype(np.float32))],
                             out_ty=relax.TensorType(out_shape, "float32"))
        count[0] += 1
        return relax.op.astype(out, "int32")

    mod = rewrite_functions(bb, mod, (conv_zp, lambda o, m: rewrite(o, m, zp_form=True)), (conv, rewrite))
    return mod, count[0]
