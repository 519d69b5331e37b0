"""MaxPool's Indices output and MaxUnpool's ``output_shape``, which TVM 0.27's converters lack.

MaxPool's second output, Indices (SegNet-style encoders feed it to MaxUnpool), which TVM 0.27's
converter does not produce ("Missing outputs"). 2-D. And MaxUnpool's ``output_shape``, which
TVM's converter fails on as a constant: where it is the shape MaxUnpool infers, it is handed over
as the numbers it holds; another one is refused, because there ONNX's reference (the values at
their indices in the inferred shape, zero-padded to ``output_shape``) and ONNX Runtime (the
indices taken as positions in ``output_shape``) disagree.

The values stay TVM's ``max_pool2d``; where the node asks for Indices, one more kernel finds, in
each window, the first position (in row-major scan order, ONNX's choice among equal maxima)
holding the maximum, and writes its index into the flattened input: ``(n * C + c) * H * W +
h * W + w``, or ``h + w * H`` within the plane for ``storage_order=1``. Padding is never a position."""

from __future__ import annotations

from .converter_base import add_ops, constant, replace, text


def install():
    from tvm import relax, te
    from tvm import tirx as tir
    from tvm.relax.frontend.onnx import onnx_frontend as of

    from ...errors import DeployError

    def impl(cls, bb, inputs, attr, params):
        values = bb.normalize(of.MaxPool._impl_v1(bb, inputs, attr, params))
        if attr.get("tvm_custom", {}).get("num_outputs", 1) < 2:
            return values
        x = inputs[0]
        shape = [int(d) for d in x.ty.shape]
        if len(shape) != 4:
            raise DeployError(f"MaxPool's Indices output on a {len(shape) - 2}-D input: deploy computes it for 2-D "
                              "pooling only", hint="drop the Indices output, or pool in 2-D")
        n, c, h, w = shape
        oh, ow = (int(d) for d in list(values.ty.shape)[2:])
        kh, kw = attr["kernel_shape"]
        sh, sw = attr.get("strides", [1, 1])
        dh, dw = attr.get("dilations", [1, 1])
        auto = text(attr, "auto_pad", "NOTSET")
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            begin = []
            for size, out, k, s, d in ((h, oh, kh, sh, dh), (w, ow, kw, sw, dw)):
                total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
                begin.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
            ph, pw = begin
        elif auto == "VALID":
            ph = pw = 0
        else:
            pads = list(attr.get("pads", [0, 0, 0, 0]))
            ph, pw = pads[0], pads[1]
        column = int(attr.get("storage_order", 0)) == 1
        big = tir.const(h * w, "int64")

        def f(data, best):
            rh, rw = te.reduce_axis((0, kh), name="rh"), te.reduce_axis((0, kw), name="rw")

            def first(b, ch, i, j):
                y, z = i * sh - ph + rh * dh, j * sw - pw + rw * dw
                inside = tir.all(y >= 0, y < h, z >= 0, z < w)
                hit = tir.if_then_else(inside, data[b, ch, tir.max(tir.min(y, h - 1), 0), tir.max(tir.min(z, w - 1), 0)]
                                       == best[b, ch, i, j], False)
                return te.min(tir.Select(hit, y.astype("int64") * w + z.astype("int64"), big), axis=[rh, rw])

            pos = te.compute([n, c, oh, ow], first, name="max_pool_first")

            def index(b, ch, i, j):
                p = pos[b, ch, i, j]
                within = (tir.floormod(p, w) * h + tir.floordiv(p, w)) if column else p
                return (b.astype("int64") * c + ch.astype("int64")) * (h * w) + within

            return te.compute([n, c, oh, ow], index, name="max_pool_indices")

        indices = bb.emit_te(f, x, values, primfunc_name_hint="max_pool_indices")
        return relax.Tuple([values, indices])

    def unpool(cls, bb, inputs, attr, params):
        if len(inputs) > 2 and inputs[2] is not None:
            shape = constant(inputs[2], params, "MaxUnpool's output_shape").astype("int64")
            x, k = [int(d) for d in inputs[0].ty.shape], list(attr["kernel_shape"])
            s, p = list(attr.get("strides", [1] * len(k))), list(attr.get("pads", [0] * 2 * len(k)))
            inferred = x[:2] + [(x[d + 2] - 1) * s[d] - p[d] - p[d + len(k)] + k[d] for d in range(len(k))]
            if shape.tolist() != inferred:
                raise DeployError(f"MaxUnpool with output_shape {shape.tolist()}, not the {inferred} it infers: ONNX's "
                                  "reference and ONNX Runtime place the values differently there",
                                  hint="unpool to the inferred shape and pad or crop after it")
            inputs = [inputs[0], inputs[1], None]
        return tvm_unpool(cls, bb, inputs, attr, params)

    tvm_unpool, undo_unpool = replace(of.MaxUnpool, "_impl_v9", unpool)
    undo_pool = add_ops({"MaxPool": {"_impl_v1": impl}}, override=True)

    def undo():
        undo_pool()
        undo_unpool()

    return undo
