"""int8 depthwise and grouped convolutions on x86, computed exactly in float32.

VNNI's ``vpdpbusd`` needs a reduction over 4 input channels, which a depthwise conv does not have
(one input channel per output), so these kernels ran on the int32 vector path: a 32-bit integer
multiply per tap (``vpmulld``, two micro-ops and a long latency), about twice the time of the float
kernel (MobileNetV2's depthwise convs: 0.26 vs 0.13 ms). But every product of an int8 weight and an
int8 activation (or ``int16(x_q) - z`` with a zero point, at most 255 in magnitude) is an integer
below 2**15, and a float32 sum of integers is exact while it stays below 2**24: for
``taps * 255 * 127 < 2**24`` (up to 518 taps per output; a 7x7 depthwise conv has 49) the float32
conv of the cast operands returns exactly the int32 result. So such a conv becomes
``int32(conv2d(float32(x), float32(w)))``: the cast fuses into the padding, the conv takes the float
depthwise schedule, and the activations still travel as int8 between layers.
"""

from __future__ import annotations

import numpy as np

EXACT = 2 ** 24


def grouped_as_float(mod):
    """Rewrite exact int8 grouped/depthwise conv2d (int32 output) into float32 compute; returns (mod, count)."""
    from tvm import relax

    from ...optimize import rewrite_functions
    from .int8_dot import int8_conv_patterns

    x_pat, w_pat, xq_pat, z_pat, conv, shifted, perm, conv_zp = int8_conv_patterns()
    bb = relax.BlockBuilder(mod)
    count = [0]

    def rewrite(orig, m, zp_form=False):
        a, w = orig.attrs, m[w_pat]
        if int(a.groups) == 1 or str(a.out_dtype) != "int32" or str(w.ty.dtype) != "int8":
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
        taps = wv.size // int(wv.shape[str(a.kernel_layout).index("O")])  # weights per output channel
        if taps * bound * 127 >= EXACT:
            return orig
        out = relax.op.nn.conv2d(relax.op.astype(x, "float32"), relax.const(wv.astype(np.float32)),
                                 strides=a.strides, padding=a.padding, dilation=a.dilation, groups=a.groups,
                                 data_layout=a.data_layout, kernel_layout=a.kernel_layout,
                                 out_layout=a.out_layout, out_dtype="float32")
        count[0] += 1
        return relax.op.astype(out, "int32")

    mod = rewrite_functions(bb, mod, (conv_zp, lambda o, m: rewrite(o, m, zp_form=True)), (conv, rewrite))
    return mod, count[0]
