"""DeformConv (deformable convolution, DCNv1 and DCNv2), which TVM 0.27 lacks.

DeformConv (opset 19: deformable convolution, DCNv1 and, with a mask, DCNv2), which TVM 0.27
lacks. 2-D, as detection models use it.

Each output pixel's kernel taps are moved by the learned ``offset`` and read by bilinear
interpolation (zero outside the image, each corner on its own, as ONNX's GridSample with
align_corners), scaled by ``mask`` where given: one kernel samples these columns,
[N, C, kh, kw, oh, ow]; then the convolution is one grouped matmul of the weights with them (the
schedules deploy has for matmuls), plus the bias."""

from __future__ import annotations

from .converter_base import add_ops, plain


def deform_conv(bb, inputs, attr, params):
    from tvm import relax, te
    from tvm import tirx as tir

    from ...errors import DeployError

    x, w, offset = inputs[0], inputs[1], inputs[2]
    bias = inputs[3] if len(inputs) > 3 else None
    mask = inputs[4] if len(inputs) > 4 else None
    xs, ws, os_ = ([int(v) for v in t.ty.shape] for t in (x, w, offset))
    if len(xs) != 4:
        raise DeployError(f"DeformConv on a {len(xs) - 2}-D input: deploy computes the 2-D one only",
                          hint="use a 2-D DeformConv, or keep this node out of the deployed graph")
    n, ic, ih, iw = xs
    oc, icpg, kh, kw = ws
    group, og = int(attr.get("group", 1)), int(attr.get("offset_group", 1))
    sh, sw = attr.get("strides", [1, 1])
    dh, dw = attr.get("dilations", [1, 1])
    pads = list(attr.get("pads", [0, 0, 0, 0]))
    oh, ow = os_[2], os_[3]
    if ic != icpg * group or oc % group or ic % og or os_[1] != og * kh * kw * 2:
        raise DeployError(f"DeformConv: input {xs}, weights {ws} and offset {os_} do not fit group={group}, "
                          f"offset_group={og}", hint="check the node's shapes and attributes")
    per_og = ic // og
    dtype = str(x.ty.dtype)

    def sample(data, off, *m):
        def g(b, c, a, e, i, j):
            grp = c // per_og
            tap = (grp * kh + a) * kw + e
            h = (i * sh - pads[0] + a * dh).astype(dtype) + off[b, tap * 2, i, j]
            v = (j * sw - pads[1] + e * dw).astype(dtype) + off[b, tap * 2 + 1, i, j]
            h0, v0 = tir.floor(h), tir.floor(v)
            lh, lv = h - h0, v - v0
            y0, x0 = h0.astype("int32"), v0.astype("int32")
            one = tir.const(1.0, dtype)

            def at(y, xx):
                ok = tir.all(y >= 0, y < ih, xx >= 0, xx < iw)
                return tir.if_then_else(ok, data[b, c, tir.max(tir.min(y, ih - 1), 0), tir.max(tir.min(xx, iw - 1), 0)],
                                        tir.const(0.0, dtype))

            val = ((one - lh) * (one - lv) * at(y0, x0) + (one - lh) * lv * at(y0, x0 + 1)
                   + lh * (one - lv) * at(y0 + 1, x0) + lh * lv * at(y0 + 1, x0 + 1))
            return val * m[0][b, tap, i, j] if m else val

        return te.compute([n, ic, kh, kw, oh, ow], g, name="deform_sample")

    cols = bb.emit_te(sample, x, offset, *([mask] if mask is not None else []), primfunc_name_hint="deform_sample")
    op = relax.op
    cols = bb.normalize(op.reshape(cols, [n, group, icpg * kh * kw, oh * ow]))
    wr = bb.normalize(op.reshape(w, [1, group, oc // group, icpg * kh * kw]))
    out = bb.normalize(op.reshape(op.matmul(wr, cols), [n, oc, oh, ow]))
    if bias is not None:
        out = bb.normalize(op.add(out, op.reshape(bias, [1, oc, 1, 1])))
    return out


def install():
    return add_ops({"DeformConv": {"_impl_v19": plain(deform_conv)}})
