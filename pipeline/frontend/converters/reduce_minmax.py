"""ReduceMax and ReduceMin of floats with ONNX's identities, -inf and +inf.

TVM's max/min reductions start from the lowest (highest) finite value, so a row of -inf (every
key masked, in the NaN-robust attention that ONNX's Attention function expands to) reduces to
-3.4e38 instead of -inf, and an empty reduction gives -3.4e38 where ONNX gives -inf. deploy keeps
TVM's conversion (axes, keepdims, noop_with_empty_axes) and computes the reduction it produces
with the infinite identity. A bool reduction (which TVM cannot start at all) is any / all.
"""

from __future__ import annotations

from .converter_base import replace


def _reduce(x, axes, keepdims: bool, is_max: bool, identity: float):
    from tvm import te
    from tvm import tirx as tir

    nd = len(x.shape)
    axes = sorted({int(a) % nd for a in axes}) if axes is not None else list(range(nd))
    ras = [te.reduce_axis((0, x.shape[a]), name=f"k{a}") for a in axes]
    combine = tir.max if is_max else tir.min
    red = te.comm_reducer(lambda a, b: combine(a, b), lambda t: tir.const(identity, t), name="max" if is_max else "min")
    if keepdims:
        shape = [1 if a in axes else x.shape[a] for a in range(nd)]
    else:
        shape = [x.shape[a] for a in range(nd) if a not in axes]

    def f(*i):
        it, r, idx = iter(i), iter(ras), []
        for a in range(nd):
            if a in axes:
                idx.append(next(r))
                if keepdims:
                    next(it)
            else:
                idx.append(next(it))
        return red(x(*idx), axis=ras)

    return te.compute(shape, f, name="max" if is_max else "min")


def _wrap(original, is_max: bool):
    def impl(cls, bb, inputs, attr, params):
        from tvm import relax

        res = original(cls, bb, inputs, attr, params)
        name = "relax.max" if is_max else "relax.min"
        if not (isinstance(res, relax.Call) and getattr(res.op, "name", None) == name):
            return res
        x = res.args[0]
        if not isinstance(getattr(x.ty, "shape", None), relax.ShapeExpr):
            return res  # a shape only known at run time: TVM's reduction
        dtype = str(x.ty.dtype)
        axes = None if res.attrs.axis is None else [int(a) for a in res.attrs.axis]
        if dtype == "bool":  # any / all; an empty one is False / True
            x8 = bb.normalize(relax.op.astype(x, "int8"))
            r = bb.emit_te(_reduce, x8, axes, bool(res.attrs.keepdims), is_max, 0.0 if is_max else 1.0,
                           primfunc_name_hint=name[6:])
            return relax.op.astype(r, "bool")
        if not dtype.startswith(("float", "bfloat")):
            return res
        return bb.emit_te(_reduce, x, axes, bool(res.attrs.keepdims), is_max, float("-inf") if is_max else float("inf"),
                          primfunc_name_hint=name[6:])

    return impl


def install():
    from tvm.relax.frontend.onnx import onnx_frontend as of

    undo = []
    for cls, is_max in ((of.ReduceMax, True), (of.ReduceMin, False)):
        for v in ("_impl_v11", "_impl_v18"):
            if v in cls.__dict__:
                original = cls.__dict__[v].__func__
                undo.append(replace(cls, v, _wrap(original, is_max))[1])

    def undo_all():
        for u in reversed(undo):
            u()

    return undo_all
