"""TensorScatter (opset 24: the KV-cache update of LLM exports), which TVM 0.27 lacks.

``present`` is ``past_cache`` with, along ``axis``, the ``update``'s sequence written from
``write_indices[b]`` on (0 when absent), wrapping around the cache length in mode "circular".
One gather-style kernel: each cache position reads the update it receives, or the past."""

from __future__ import annotations

from .converter_base import add_ops, plain, text


def tensor_scatter(bb, inputs, attr, params):
    from tvm import te
    from tvm import tirx as tir

    past, update = inputs[0], inputs[1]
    idx = inputs[2] if len(inputs) > 2 else None
    rank = len(past.ty.shape)
    axis = int(attr.get("axis", -2))
    axis = axis + rank if axis < 0 else axis
    circular = text(attr, "mode", "linear") == "circular"

    def f(p, u, *w):
        m, n = p.shape[axis], u.shape[axis]

        def g(*i):
            s = i[axis].astype("int64")
            start = w[0][i[0]].astype("int64") if w else tir.const(0, "int64")
            j = s - start
            if circular:
                mm = tir.Cast("int64", m)
                j = tir.floormod(j, mm)
            ok = tir.all(j >= 0, j < tir.Cast("int64", n))
            src = list(i)
            src[axis] = tir.Select(ok, j, tir.const(0, "int64"))
            return tir.Select(ok, u(*src), p(*i))

        return te.compute(p.shape, g, name="tensor_scatter")

    args = [past, update] + ([idx] if idx is not None else [])
    return bb.emit_te(f, *args, primfunc_name_hint="tensor_scatter")


def install():
    return add_ops({"TensorScatter": {"_impl_v24": plain(tensor_scatter)}})
