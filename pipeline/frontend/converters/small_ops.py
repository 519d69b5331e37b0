"""Small ops TVM 0.27's ONNX frontend lacks, each a few Relax ops, as ONNX's reference computes them.

The ops:

- CumProd (``exclusive``, ``reverse``; the axis a constant);
- LpNormalization (``x / sum(|x| ** p) ** (1 / p)`` over ``axis``, 0 where the norm is 0);
- Celu (``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))``);
- CenterCropPad (each axis cropped or zero-padded to the constant ``shape``, centred, the odd
  element at the end);
- HannWindow, HammingWindow, BlackmanWindow of a constant size: the window is a constant,
  computed by ONNX's own reference evaluator;
- Dropout (inference; training mode is refused before import): the input, and a mask of bool
  ``True`` (TVM's is float);
- Elu in the input's type (TVM's mixes float32 constants into float16 inputs and fails);
- Swish (``x * sigmoid(alpha * x)``), BitCast (the bits reinterpreted, same width), and
  ReverseSequence (the first ``sequence_lens[b]`` steps of each batch entry reversed);
- Split with a part of size 0 (TVM's split wants strictly increasing indices): one slice per part.
"""

from __future__ import annotations

import numpy as np

from .converter_base import add_ops, constant, plain, replace, runtime_input


def _static(shape) -> list[int]:
    return [int(d) for d in shape]


def cumprod(bb, inputs, attr, params):
    from tvm import relax

    op = relax.op
    x = inputs[0]
    rank = len(x.ty.shape)
    axis = int(constant(inputs[1], params, "CumProd's axis").reshape(-1)[0])
    axis = axis + rank if axis < 0 else axis
    if attr.get("reverse", 0):
        x = bb.normalize(op.flip(x, axis))
    out = bb.normalize(op.cumprod(x, axis=axis, exclusive=bool(attr.get("exclusive", 0))))
    if attr.get("reverse", 0):
        out = bb.normalize(op.flip(out, axis))
    return out


def lp_normalization(bb, inputs, attr, params):
    from tvm import relax

    op = relax.op
    x = inputs[0]
    dtype = str(x.ty.dtype)
    p = int(attr.get("p", 2))
    axis = int(attr.get("axis", -1))
    powered = op.abs(x) if p == 1 else op.multiply(x, x) if p == 2 else op.power(op.abs(x), relax.const(float(p), dtype))
    total = op.sum(powered, axis=[axis], keepdims=True)
    norm = bb.normalize(total if p == 1 else op.sqrt(total) if p == 2 else
                        op.power(total, relax.const(1.0 / p, dtype)))
    zero = relax.const(0, dtype)
    return op.where(op.equal(norm, zero), op.zeros_like(x), op.divide(x, norm))


def celu(bb, inputs, attr, params):
    from tvm import relax

    op = relax.op
    x = inputs[0]
    dtype = str(x.ty.dtype)
    alpha = relax.const(float(attr.get("alpha", 1.0)), dtype)
    zero = relax.const(0, dtype)
    neg = op.multiply(alpha, op.subtract(op.exp(op.divide(x, alpha)), relax.const(1, dtype)))
    return op.add(op.maximum(zero, x), op.minimum(zero, neg))


def center_crop_pad(bb, inputs, attr, params):
    from tvm import relax

    op = relax.op
    x = inputs[0]
    shape = _static(x.ty.shape)
    rank = len(shape)
    target = [int(v) for v in constant(inputs[1], params, "CenterCropPad's shape").reshape(-1)]
    axes = [int(a) for a in attr.get("axes", range(rank))]
    axes = [a + rank if a < 0 else a for a in axes]
    dtype = str(x.ty.dtype)
    for a, want in zip(axes, target):
        dim = shape[a]
        if want < dim:  # crop the middle
            start = (dim - want) // 2
            x = bb.normalize(op.strided_slice(x, [a], [start], [start + want]))
        elif want > dim:  # pad both sides with zeros
            before = (want - dim) // 2
            after = want - dim - before
            parts = []
            for n in (before, None, after):
                if n is None:
                    parts.append(x)
                elif n:
                    parts.append(op.zeros(shape[:a] + [n] + shape[a + 1:], dtype))
            x = bb.normalize(op.concat(parts, axis=a))
        shape[a] = want
    return x


def window(kind: str):
    def convert(bb, inputs, attr, params):
        import onnx
        from onnx import helper, numpy_helper
        from onnx.reference import ReferenceEvaluator
        from tvm import relax

        size = constant(inputs[0], params, f"{kind}'s size").reshape(-1)[0]
        node = helper.make_node(kind, ["size"], ["y"], **{k: int(attr[k]) for k in ("output_datatype", "periodic") if k in attr})
        graph = helper.make_graph([node], "w", [], [helper.make_tensor_value_info("y", onnx.TensorProto.UNDEFINED, None)],
                                  [numpy_helper.from_array(np.asarray(size, np.int64), "size")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        (y,) = ReferenceEvaluator(model).run(None, {})
        return relax.const(y)

    return convert


def dropout(bb, inputs, attr, params):
    from tvm import relax

    x = inputs[0]
    mask = bb.normalize(relax.op.full_like(x, relax.const(True, "bool"), dtype="bool"))
    return relax.Tuple([x, mask])


def elu(bb, inputs, attr, params):
    from tvm import relax

    x = inputs[0]
    dtype = str(x.ty.dtype)
    alpha = relax.const(float(attr.get("alpha", 1.0)), dtype)
    neg = relax.op.multiply(alpha, relax.op.subtract(relax.op.exp(x), relax.const(1.0, dtype)))
    return relax.op.where(relax.op.greater(x, relax.const(0.0, dtype)), x, neg)


def swish(bb, inputs, attr, params):
    from tvm import relax

    x = inputs[0]
    alpha = relax.const(float(attr.get("alpha", 1.0)), str(x.ty.dtype))
    return relax.op.multiply(x, relax.op.sigmoid(relax.op.multiply(alpha, x)))


def bitcast(bb, inputs, attr, params):
    from onnx import helper
    from tvm import te
    from tvm import tirx as tir

    from ...errors import DeployError

    x = inputs[0]
    src, to = str(x.ty.dtype), str(np.dtype(helper.tensor_dtype_to_np_dtype(int(attr["to"]))))
    sbits, tbits = np.dtype(src).itemsize * 8, np.dtype(to).itemsize * 8  # bool: a byte, as in ONNX
    if sbits != tbits:
        raise DeployError(f"BitCast from {src} to {to}: the widths differ ({sbits} and {tbits} bits)",
                          hint="BitCast needs types of the same width")
    if src == to:
        return x

    def f(t):
        def g(*i):
            v = t(*i)
            if src == "bool":
                return v.astype("uint8") if to == "uint8" else tir.reinterpret(to, v.astype("uint8"))
            if to == "bool":
                return tir.reinterpret("uint8", v) != tir.const(0, "uint8") if src != "uint8" else v != 0
            return tir.reinterpret(to, v)

        return te.compute(t.shape, g, name="bitcast")

    return bb.emit_te(f, x, primfunc_name_hint="bitcast")


def reverse_sequence(bb, inputs, attr, params):
    from tvm import te
    from tvm import tirx as tir

    x, lens = inputs[0], inputs[1]
    t_ax, b_ax = int(attr.get("time_axis", 0)), int(attr.get("batch_axis", 1))

    def f(data, n):
        def g(*i):
            t, b = i[t_ax].astype("int64"), i[b_ax]
            ln = n[b].astype("int64")
            idx = list(i)
            idx[t_ax] = tir.Select(t < ln, ln - t - tir.const(1, "int64"), t)
            return data(*idx)

        return te.compute(data.shape, g, name="reverse_sequence")

    return bb.emit_te(f, x, lens, primfunc_name_hint="reverse_sequence")


def split_parts(tvm_split):
    """Split with constant sizes, one of them 0: a strided_slice per part; TVM's otherwise."""
    def impl(cls, bb, inputs, attr, params):
        from tvm import relax

        sizes = inputs[1] if len(inputs) > 1 else None
        if sizes is None or runtime_input(sizes, params):
            return tvm_split(cls, bb, inputs, attr, params)
        sizes = [int(v) for v in constant(sizes, params, "Split's split").reshape(-1)]
        if 0 not in sizes:
            return tvm_split(cls, bb, inputs, attr, params)
        axis, start, parts = int(attr.get("axis", 0)), 0, []
        for n in sizes:
            parts.append(bb.normalize(relax.op.strided_slice(inputs[0], [axis], [start], [start + n])))
            start += n
        return relax.Tuple(parts)

    return impl


def install():
    from tvm.relax.frontend.onnx import onnx_frontend as of

    _, undo_split = replace(of.Split, "_impl_v13", split_parts(of.Split.__dict__["_impl_v13"].__func__))
    undo_dropout = add_ops({"Dropout": {f"_impl_v{v}": plain(dropout) for v in (1, 12)},
                            "Elu": {"_impl_v1": plain(elu)}}, override=True)
    undo = add_ops({
        "CumProd": {"_impl_v26": plain(cumprod)},
        "LpNormalization": {"_impl_v1": plain(lp_normalization), "_impl_v22": plain(lp_normalization)},
        "Celu": {"_impl_v12": plain(celu)},
        "CenterCropPad": {"_impl_v18": plain(center_crop_pad)},
        "Swish": {"_impl_v24": plain(swish)},
        "BitCast": {"_impl_v26": plain(bitcast)},
        "ReverseSequence": {"_impl_v10": plain(reverse_sequence)},
        **{kind: {"_impl_v17": plain(window(kind))} for kind in ("HannWindow", "HammingWindow", "BlackmanWindow")},
    })

    def undo_all():
        undo()
        undo_dropout()
        undo_split()

    return undo_all
