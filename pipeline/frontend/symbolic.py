"""Shapes computed at run time from a dynamic dim, as expressions of that dim.

A torch export computes ``arange(seq_len)`` as Shape -> Gather -> Range: with the dim symbolic,
onnxslim cannot fold it, and TVM's importer evaluates it as int64 tensors turned back into a
shape by ``tensor_to_shape`` and a ``match_cast`` to a fresh var (``range_len_0``). Such a var
is known only at run time: broadcasting against the input loses the shape, and TVM 0.27's FuseOps
and DecomposeOpsForInference lose the var ("PrimExpr ... has not been computed"). ``ShapeValues``
evaluates those small int64 tensors symbolically, so that a converter (converters/range.py) can
size its result by the expression of the input dims instead (``S``).
"""

from __future__ import annotations

import numpy as np

_MAX = 16  # elements: shape tensors are small


class ShapeValues:
    """The values of small int64 tensors that are shape computations, as PrimExprs of the dims:
    ``of(expr)`` is (shape, flat values) or None. ``lookup(var)`` gives the value a var is bound to
    (a BlockBuilder's ``lookup_binding`` during import)."""

    def __init__(self, lookup):
        from tvm.sym.analyzer import Analyzer

        self.lookup, self.memo, self.ana = lookup, {}, Analyzer()

    def scalar(self, e):
        """The value of a one-element shape computation, or None."""
        r = self.of(e)
        return r[1][0] if r is not None and len(r[1]) == 1 else None

    def of(self, e, ty=None):
        from tvm import relax, tirx
        from tvm.ir.expr import Constant  # TVM 0.27: relax.Constant moved to tvm.ir

        import tvm

        if tvm.ir.is_prim_expr(e):  # the importer hands a dim of a Shape over as the PrimExpr itself
            return (), [e]
        if isinstance(e, relax.Var):
            if e in self.memo:
                return self.memo[e]
            self.memo[e] = None  # (no cycles; and a var we cannot follow stays unknown)
            bound = _try(self.lookup, e)
            r = self.of(bound, e.ty) if bound is not None else None
            self.memo[e] = r
            return r
        if isinstance(e, Constant):
            a = np.asarray(e.value.numpy() if hasattr(e.value, "numpy") else e.value)
            if a.dtype.kind in "iu" and a.size <= _MAX:
                return tuple(a.shape), [tirx.IntImm("int64", int(x)) for x in a.reshape(-1)]
            return None
        if isinstance(e, relax.ShapeExpr):
            return (len(e.values),), list(e.values)  # shape values are int64
        if isinstance(e, relax.Call):
            r = _try(self._call, e, ty if ty is not None else getattr(e, "ty", None))
            if r is not None and len(r[1]) <= _MAX:
                return r[0], [self.ana.simplify(x) for x in r[1]]
        return None

    def _call(self, call, ty):
        from tvm import relax, tirx

        ops = {"relax.add": lambda x, y: x + y, "relax.subtract": lambda x, y: x - y,
               "relax.multiply": lambda x, y: x * y, "relax.floor_divide": tirx.floordiv,
               "relax.maximum": tirx.max, "relax.minimum": tirx.min}
        name = call.op.name if hasattr(call.op, "name") else ""
        if name == "relax.concat" and isinstance(call.args[0], relax.Tuple):
            parts = [self.of(f) for f in call.args[0].fields]
            if None in parts or any(len(p[0]) != 1 for p in parts):
                return None
            flat = [x for p in parts for x in p[1]]
            return (len(flat),), flat
        args = [self.of(a) for a in call.args]
        if name in ("relax.shape_to_tensor", "relax.tensor_to_shape"):
            return args[0]
        if name in ops and len(args) == 2 and None not in args:
            return _binary(ops[name], *args)
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
        return None


def _binary(fn, a, b):
    (sa, va), (sb, vb) = a, b
    if len(va) == 1:
        return sb, [fn(va[0], y) for y in vb]
    if len(vb) == 1:
        return sa, [fn(x, vb[0]) for x in va]
    if sa == sb:
        return sa, [fn(x, y) for x, y in zip(va, vb)]
    return None


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
