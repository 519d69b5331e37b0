"""1-D convolutions as 2-D ones with a height of 1, so that they take the NHWC layout, Winograd's
neighbours' rules and ConvMatmul's register tiling like any conv2d.

TVM has no CPU schedule for conv1d: the default rules left it a plain loop nest (an audio front
end of six Conv1d ran 17x slower than ONNX Runtime, a wav2vec2 feature encoder 26x).
``conv1d(x, w)`` in NCW/OIW becomes ``squeeze(conv2d(expand_dims(x, 2), expand_dims(w, 2)), 2)``
with the same strides, padding, dilation and groups on the width axis.
"""

from __future__ import annotations


def conv1d_as_conv2d(mod):
    """Rewrite every NCW/OIW conv1d; returns (mod, count)."""
    from tvm import relax
    from tvm.relax.dpl import is_op, wildcard
    from ...optimize import rewrite_functions

    pattern = is_op("relax.nn.conv1d")(wildcard(), wildcard())
    count = [0]

    def rewrite(orig, _m):
        a = orig.attrs
        if str(a.data_layout) != "NCW" or str(a.kernel_layout) != "OIW" or str(a.out_layout) != "NCW":
            return orig
        x, w = orig.args
        left, right = (int(p) for p in a.padding)
        y = relax.op.nn.conv2d(relax.op.expand_dims(x, 2), relax.op.expand_dims(w, 2),
                               strides=(1, int(a.strides[0])), padding=(0, left, 0, right),
                               dilation=(1, int(a.dilation[0])), groups=int(a.groups),
                               out_dtype=a.out_dtype if str(a.out_dtype) else None)
        count[0] += 1
        return relax.op.squeeze(y, [2])

    return rewrite_functions(relax.BlockBuilder(mod), mod, (pattern, rewrite)), count[0]
