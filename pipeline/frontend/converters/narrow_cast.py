"""deploy.CastFromBits and deploy.CastToBits: casts from and to the narrow types (float8, float4, int4/int2).

deploy.CastFromBits and deploy.CastToBits: casts from and to the narrow types that
``frontend/narrow.py`` carries as uint8 bits (float8, float4 E2M1, 4- and 2-bit ints), exactly
as ONNX's reference (ml_dtypes) computes them.

- From bits: a table of every code's value in the target type (ml_dtypes' own conversion),
  indexed by the byte.
- To a narrow float: the magnitude is rounded to nearest even by counting the midpoints between
  consecutive representable values that it passes (a loop over a table of them; a tie goes to the
  even code), then the sign
  bit; past the largest value it saturates, or (``saturate=0``) becomes what ml_dtypes gives for
  an infinity (NaN, or Inf for E5M2). NaN gives ml_dtypes' NaN code.
- To a narrow int: truncated toward zero, then wrapped to its bits (as ml_dtypes' astype).
"""

from __future__ import annotations

import numpy as np

from .converter_base import add_ops, plain


def _ml_dtype(elem_type: int):
    from onnx import helper

    return np.dtype(helper.tensor_dtype_to_np_dtype(int(elem_type)))


def from_bits(bb, inputs, attr, params):
    from tvm import relax

    src, to = _ml_dtype(attr["from"]), _ml_dtype(attr["to"])
    codes = np.arange(256, dtype=np.uint8).view(src)
    plain = to.kind in "biuf" and to.name != "bfloat16" and to.itemsize >= 1 and hasattr(np, to.name)
    with np.errstate(all="ignore"):
        table = codes.astype(to if plain else np.float32)
    x = bb.normalize(relax.op.astype(inputs[0], "int32"))
    out = bb.normalize(relax.op.take(relax.const(table), x, axis=0))
    return out if plain else bb.normalize(relax.op.astype(out, str(to)))


def _float_encoder(kind):
    """(positive finite values in code order, midpoints, NaN code, overflow codes (+, -), sign bit,
    whether -0 exists) of a narrow float type, from ml_dtypes itself."""
    import ml_dtypes

    info = ml_dtypes.finfo(kind)
    n = 1 << info.bits
    sign = n >> 1
    values = np.arange(n, dtype=np.uint8).view(kind).astype(np.float64)
    pos = values[:sign]
    k = int(np.argmax(~np.isfinite(pos))) if not np.isfinite(pos).all() else sign
    finite = pos[:k]
    assert np.all(np.diff(finite) > 0), kind
    virtual = finite[-1] + (finite[-1] - finite[-2])  # the next value past the largest, as RNE sees it
    mids = (np.append(finite, virtual)[1:] + np.append(finite, virtual)[:-1]) / 2
    f32 = np.array([np.nan, np.inf, -np.inf], np.float32).astype(kind).view(np.uint8)
    has_neg_zero = bool(np.signbit(values[sign])) and values[sign] == 0
    return finite, mids, int(f32[0]), int(f32[1]), int(f32[2]), sign, has_neg_zero


def to_bits(bb, inputs, attr, params):
    from tvm import relax, te
    from tvm import tirx as tir

    from ..narrow import INTS

    x = inputs[0]
    kind_id = int(attr["to"])
    kind = _ml_dtype(kind_id)
    dtype = str(x.ty.dtype)
    saturate = bool(attr.get("saturate", 1))

    if kind_id in INTS:
        bits = {"int4": 4, "uint4": 4, "int2": 2, "uint2": 2}[kind.name]
        mask = (1 << bits) - 1

        def int_code(t):
            def f(*i):
                v = t(*i)
                if dtype.startswith(("float", "bfloat")):
                    w = v.astype("float64")
                    w = tir.if_then_else(tir.isnan(w), tir.const(0.0, "float64"),
                                         tir.max(tir.min(w, tir.const(2.0 ** 62, "float64")),
                                                 tir.const(-2.0 ** 62, "float64")))
                    iv = tir.Cast("int64", w)  # C's conversion: toward zero
                else:
                    iv = v.astype("int64")
                return tir.bitwise_and(iv, tir.const(mask, "int64")).astype("uint8")

            return te.compute(t.shape, f, name="to_bits")

        return bb.emit_te(int_code, x, primfunc_name_hint="cast_to_bits")

    finite, mids, nan_code, inf_code, ninf_code, sign_bit, neg_zero = _float_encoder(kind)
    k = len(finite)
    cdt = "float64" if dtype in ("float64", "int64", "uint64", "int32", "uint32") else "float32"

    def float_code(t, table):
        bits_t = "int64" if cdt == "float64" else "int32"
        r = te.reduce_axis((0, k), name="j")

        def passed(*i):  # how many midpoints |x| passes: the code of its magnitude, rounded
            a = tir.abs(t(*i).astype(cdt))
            m = table[r]
            up = tir.any(a > m, tir.all(a == m, tir.truncmod(r, 2) == 1))  # midpoint j = r + 1: a tie goes even
            return te.sum(tir.Select(up, tir.const(1, "int32"), tir.const(0, "int32")), axis=r)

        idx = te.compute(t.shape, passed, name="rounded")

        def f(*i):
            v = t(*i).astype(cdt)
            neg = tir.reinterpret(bits_t, v) < tir.const(0, bits_t)
            over = idx(*i) >= tir.const(k, "int32")
            mag = tir.Select(over, tir.const(k - 1, "int32"), idx(*i))
            keep_sign = neg if neg_zero else tir.all(neg, mag != tir.const(0, "int32"))  # no -0 in FNUZ
            signed = tir.Select(keep_sign, tir.bitwise_or(mag, tir.const(sign_bit, "int32")), mag)
            if not saturate:
                signed = tir.Select(over, tir.Select(neg, tir.const(ninf_code, "int32"),
                                                     tir.const(inf_code, "int32")), signed)
            code = tir.Select(tir.isnan(v), tir.const(nan_code, "int32"), signed)
            return code.astype("uint8")

        return te.compute(t.shape, f, name="to_bits")

    table = relax.const(mids.astype(cdt))
    return bb.emit_te(float_code, x, table, primfunc_name_hint="cast_to_bits")


def install():
    return add_ops({"CastFromBits": {"_impl_v1": plain(from_bits)}, "CastToBits": {"_impl_v1": plain(to_bits)}})
