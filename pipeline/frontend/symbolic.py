"""Shapes computed at run time from a dynamic dim, folded back into expressions of that dim.

A torch export computes ``arange(seq_len)`` as Shape -> Gather -> Range: with the dim symbolic,
onnxslim cannot fold it, and TVM's importer evaluates it as int64 tensors turned back into a
shape by ``tensor_to_shape`` and a ``match_cast`` to a fresh var (``range_len_0``). Such a var
is known only at run time, and TVM 0.27's FuseOps and DecomposeOpsForInference lose track of it
("PrimExpr ... has not been computed"). Here the small int64 tensors of those chains are
evaluated symbolically, and each fresh var is replaced by the expression of the input dims it
equals (``range_len_0`` -> ``S``).
"""

from __future__ import annotations

import numpy as np

_MAX = 16  # elements: shape tensors are small


def fold_shape_vars(mod):
    """``mod`` with every match_cast var whose value is a known expression of the input dims
    bound to that expression, in each Relax function."""
    from tvm import relax

    out = mod
    for gv, func in list(mod.functions.items()):
        if not isinstance(func, relax.Function):
            continue
        subst = _substitutions(func)
        if subst:
            new = func.bind_symbolic_vars(subst)
            out = out.clone() if hasattr(out, "clone") else out
            out[gv] = new
    return out


def _substitutions(func) -> dict:
    from tvm import relax, tirx
    from tvm.ir.expr import Constant  # TVM 0.27: relax.Constant moved to tvm.ir

    vals: dict = {}  # relax.Var -> (shape tuple, flat list of PrimExpr)
    subst: dict = {}

    def get(e):
        if isinstance(e, relax.Var):
            return vals.get(e)
        if isinstance(e, Constant):
            a = np.asarray(e.value.numpy() if hasattr(e.value, "numpy") else e.value)
            if a.dtype.kind in "iu" and a.size <= _MAX:
                return tuple(a.shape), [tirx.IntImm("int64", int(x)) for x in a.reshape(-1)]
        if isinstance(e, relax.ShapeExpr):
            return (len(e.values),), list(e.values)  # shape values are int64
        return None

    def binary(fn, a, b):
        (sa, va), (sb, vb) = a, b
        if len(va) == 1:
            return sb, [fn(va[0], y) for y in vb]
        if len(vb) == 1:
            return sa, [fn(x, vb[0]) for x in va]
        if sa == sb:
            return sa, [fn(x, y) for x, y in zip(va, vb)]
        return None

    ops = {"relax.add": lambda x, y: x + y, "relax.subtract": lambda x, y: x - y,
           "relax.multiply": lambda x, y: x * y, "relax.floor_divide": tirx.floordiv,
           "relax.maximum": tirx.max, "relax.minimum": tirx.min}

    def evaluate(call, ty):
        name = call.op.name if hasattr(call.op, "name") else ""
        args = [get(a) for a in call.args]
        if name == "relax.shape_to_tensor":
            return args[0]
        if name in ops and len(args) == 2 and None not in args:
            return binary(ops[name], *args)
        if name == "relax.negative" and args[0] is not None:
            return args[0][0], [-x for x in args[0][1]]
        if name in ("relax.astype", "relax.expand_dims", "relax.squeeze", "relax.reshape") and args[0] is not None:
            shape = _static_shape(ty)
            return (shape, args[0][1]) if shape is not None else None
        if name == "relax.take" and args[0] is not None and args[1] is not None and len(args[0][0]) == 1:
            idx = [int(i) for i in args[1][1] if isinstance(i, tirx.IntImm)]
            if len(idx) != len(args[1][1]):
                return None
            n = len(args[0][1])
            return args[1][0], [args[0][1][i % n] for i in idx]
        if name == "relax.concat" and isinstance(call.args[0], relax.Tuple):
            parts = [get(f) for f in call.args[0].fields]
            if None in parts or any(len(p[0]) != 1 for p in parts):
                return None
            flat = [x for p in parts for x in p[1]]
            return (len(flat),), flat
        if name == "relax.tensor_to_shape" and args[0] is not None:
            return args[0]
        return None

    from tvm.sym.analyzer import Analyzer

    ana = Analyzer()
    for block in func.body.blocks:
        for b in block.bindings:
            if isinstance(b, relax.MatchCast):
                src = get(b.value) if not isinstance(b.value, relax.Call) else _try(evaluate, b.value, b.var.ty)
                sinfo = b.ty  # TVM 0.27: struct info is "ty"
                if src is not None and isinstance(sinfo, relax.ShapeType) and sinfo.values is not None:
                    for target, value in zip(sinfo.values, src[1]):
                        if isinstance(target, tirx.Var) and target not in subst:
                            subst[target] = ana.simplify(value)
                if src is not None:
                    vals[b.var] = src
                continue
            value = b.value
            if isinstance(value, relax.Call):
                r = _try(evaluate, value, b.var.ty)
                if r is not None and len(r[1]) <= _MAX:
                    vals[b.var] = (r[0], [ana.simplify(x) for x in r[1]])
            elif isinstance(value, (relax.Var, Constant, relax.ShapeExpr)):
                r = get(value)
                if r is not None:
                    vals[b.var] = r
    return subst


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - not a shape computation this follows
        return None


def _static_shape(sinfo):
    from tvm import relax, tirx

    if not isinstance(sinfo, relax.TensorType) or sinfo.shape is None:
        return None
    dims = sinfo.shape.values if isinstance(sinfo.shape, relax.ShapeExpr) else None
    if dims is None or not all(isinstance(d, tirx.IntImm) for d in dims):
        return None
    shape = tuple(int(d) for d in dims)
    return shape if int(np.prod(shape or (1,))) <= _MAX else None
