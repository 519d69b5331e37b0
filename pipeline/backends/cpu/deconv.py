"""Transposed convolutions whose kernel equals their stride, as a 1x1 convolution and a depth-to-space.

U-Net's 2x2, stride-2 up-sampling is such a layer.

TVM lowers ``conv2d_transpose`` in NCHW only (apache/tvm#19694), as a loop nest over a
zero-dilated input: a U-Net-style decoder of four such layers ran 2.6x slower than ONNX Runtime,
its transposed convs and the layout changes around them half the time. With kernel = stride and
no padding, each input pixel writes its own ``kh x kw`` output block, so

    conv2d_transpose(x, W[ci, co, kh, kw])[n, co, h*kh + i, w*kw + j]
      = conv2d_nhwc(x, W'[1, 1, ci, (co, i, j)])[n, h, w, (co, i, j)]

a 1x1 NHWC convolution to ``co*kh*kw`` channels (ConvMatmul's register tiles like any conv)
followed by a reshape and transpose that fuse into the next kernel. Other transposed convs stay as
they are.
"""

from __future__ import annotations


def deconv_as_conv(mod):
    """Rewrite every kernel = stride transposed conv2d; returns (mod, count)."""
    from tvm import relax, tirx
    from tvm.relax.dpl import is_op, wildcard
    from ...relax_helpers import rewrite_functions

    pattern = is_op("relax.nn.conv2d_transpose")(wildcard(), wildcard())
    count = [0]
    op = relax.op

    def ints(v):
        return [int(i) for i in v]

    def rewrite(orig, _m):
        a = orig.attrs
        x, w = orig.args
        wshape = w.ty.shape if hasattr(w.ty, "shape") else None
        xshape = x.ty.shape if hasattr(x.ty, "shape") else None
        if (str(a.data_layout) != "NCHW" or str(a.kernel_layout) != "IOHW" or str(a.out_layout) not in ("NCHW", "")
                or int(a.groups) != 1 or wshape is None or xshape is None
                or any(not isinstance(d, tirx.IntImm) for d in list(wshape) + list(xshape)[1:])):
            return orig
        ci, co, kh, kw = ints(wshape)
        n, _, h, wd = xshape
        h, wd = int(h), int(wd)
        if (ints(a.strides) != [kh, kw] or any(ints(a.padding)) or any(ints(a.output_padding))
                or ints(a.dilation) != [1, 1]):
            return orig
        out_dtype = a.out_dtype if str(a.out_dtype) else None
        # in NHWC, where the layout pass puts the convs around it: [n, h, w, (co, i, j)] -> [n, (h, i), (w, j), co]
        w1 = op.reshape(w, (1, 1, ci, co * kh * kw))  # HWIO, O = (co, i, j); folded (W is a constant)
        y = op.nn.conv2d(op.permute_dims(x, [0, 2, 3, 1]), w1, data_layout="NHWC", kernel_layout="HWIO",
                         out_dtype=out_dtype)
        y = op.reshape(y, (n, h, wd, co, kh, kw))
        y = op.reshape(op.permute_dims(y, [0, 1, 4, 2, 5, 3]), (n, h * kh, wd * kw, co))
        count[0] += 1
        return op.permute_dims(y, [0, 3, 1, 2])

    return rewrite_functions(relax.BlockBuilder(mod), mod, (pattern, rewrite)), count[0]
