"""Col2Im (opset 18: torch's ``fold``, any number of spatial dims), which TVM 0.27 lacks.

``input`` [N, C * prod(block_shape), L] holds, for each of the L sliding blocks, its C x block
values; each output pixel sums the block values that land on it. One kernel, gathering: for each
output pixel and each position in the block, the block that put it there (if any) is found
from the strides, pads and dilations, so no two threads write one pixel."""

from __future__ import annotations

from .converter_base import add_ops, constant, plain


def col2im(bb, inputs, attr, params):
    from tvm import te
    from tvm import tirx as tir

    from ...errors import DeployError

    x = inputs[0]
    image = [int(v) for v in constant(inputs[1], params, "Col2Im's image_shape").reshape(-1)]
    block = [int(v) for v in constant(inputs[2], params, "Col2Im's block_shape").reshape(-1)]
    nd = len(image)
    strides = list(attr.get("strides", [1] * nd))
    dil = list(attr.get("dilations", [1] * nd))
    pads = list(attr.get("pads", [0] * 2 * nd))
    nb = [(image[d] + pads[d] + pads[d + nd] - dil[d] * (block[d] - 1) - 1) // strides[d] + 1 for d in range(nd)]
    k = 1
    for b in block:
        k *= b
    n, ck, length = (int(v) for v in x.ty.shape)
    total = 1
    for b in nb:
        total *= b
    if ck % k or total != length or any(b < 1 for b in nb):
        raise DeployError(f"Col2Im: input {[n, ck, length]} does not fit image_shape {image}, block_shape {block} "
                          f"({nb} blocks of {k} values expected)",
                          hint="check the node's image_shape, block_shape, strides, pads and dilations")

    def f(data):
        r = te.reduce_axis((0, k), name="r")

        def g(b, c, *y):
            rest, kd = r, [None] * nd
            for d in reversed(range(nd)):
                kd[d] = tir.floormod(rest, block[d])
                rest = tir.floordiv(rest, block[d])
            conds, lin = [], tir.const(0, "int32")
            for d in range(nd):
                t = y[d] + pads[d] - kd[d] * dil[d]
                q = tir.floordiv(t, strides[d])
                conds += [t >= 0, tir.floormod(t, strides[d]) == 0, q < nb[d]]
                lin = lin * nb[d] + q
            v = tir.if_then_else(tir.all(*conds), data[b, c * k + r, lin], tir.const(0, data.dtype))
            return te.sum(v, axis=r)

        return te.compute([n, ck // k, *image], g, name="col2im")

    return bb.emit_te(f, x, primfunc_name_hint="col2im")


def install():
    return add_ops({"Col2Im": {"_impl_v18": plain(col2im)}})
