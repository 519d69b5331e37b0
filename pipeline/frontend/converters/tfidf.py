"""TfIdfVectorizer (n-gram counts of classic text classifiers), which TVM 0.27 lacks.

TfIdfVectorizer (opset 9: the n-gram counts of classic text classifiers, sklearn-onnx's
CountVectorizer/TfidfVectorizer), which TVM 0.27 lacks. Integer tokens; string pools are refused
(deploy's tensors have no strings).

As ONNX's reference counts: an n-gram of the pool of size n in [min_gram_length, max_gram_length]
matches at each start t and skip distance d in 1..max_skip_count+1 where the tokens at t, t+d,
..., t+(n-1)d are its own; a 1-gram is counted once, whatever the skips. Its count lands in the
output column ``ngram_indexes`` names, weighted by ``mode`` (TF: the count; IDF: the weight, or
1, where the count is not 0; TFIDF: weight x count). ``weights[i]`` is the i-th pool n-gram's, as
ONNX's text says and ONNX Runtime computes (ONNX's reference evaluator reads it by output column;
the two agree where ``ngram_indexes`` is in order, as sklearn-onnx writes it). One kernel counts every pool n-gram in every
row (the pool is a constant table), one more places and weighs the counts."""

from __future__ import annotations

import numpy as np

from .converter_base import add_ops, plain, text


def _pool(attr) -> tuple[list[tuple[int, ...]], list[int], list[int]]:
    """The pool's n-grams of the counted sizes, with their output columns and their places in the pool."""
    pool = [int(v) for v in attr.get("pool_int64s", [])]
    starts = [int(v) for v in attr.get("ngram_counts", [])]
    indexes = [int(v) for v in attr.get("ngram_indexes", [])]
    lo, hi = int(attr.get("min_gram_length", 1)), int(attr.get("max_gram_length", 1))
    grams, cols, ids, gid = [], [], [], 0
    for i, start in enumerate(starts):
        size = i + 1
        end = starts[i + 1] if i + 1 < len(starts) else len(pool)
        for j in range((end - start) // size):
            if lo <= size <= hi:
                grams.append(tuple(pool[start + j * size: start + (j + 1) * size]))
                cols.append(indexes[gid])
                ids.append(gid)
            gid += 1
    return grams, cols, ids


def tfidf(bb, inputs, attr, params):
    from tvm import relax, te
    from tvm import tirx as tir

    from ...errors import DeployError

    if attr.get("pool_strings"):
        raise DeployError("TfIdfVectorizer over strings: deploy's tensors hold numbers only",
                          hint="map the tokens to integer ids before this node (pool_int64s)")
    x = inputs[0]
    shape = [int(d) for d in x.ty.shape]
    if len(shape) not in (1, 2):
        raise DeployError(f"TfIdfVectorizer input of rank {len(shape)}: ONNX takes [C] or [B, C]",
                          hint="reshape the tokens to [C] or [B, C]")
    rows, c = (1, shape[0]) if len(shape) == 1 else shape
    out_size = max(int(v) for v in attr["ngram_indexes"]) + 1
    grams, cols, ids = _pool(attr)
    mode = text(attr, "mode", "TF")
    weights = [float(v) for v in attr.get("weights", [])]
    skips = int(attr.get("max_skip_count", 0)) + 1
    if not grams:
        return relax.op.zeros([out_size] if len(shape) == 1 else [rows, out_size], "float32")
    n = max(len(g) for g in grams)
    table = np.zeros((len(grams), n), "int64")
    for p, g in enumerate(grams):
        table[p, :len(g)] = g
    lengths = np.array([len(g) for g in grams], "int64")
    where = np.full(out_size, -1, "int64")
    for p, col in enumerate(cols):
        where[col] = p
    scale = np.ones(out_size, "float32")
    if weights and mode != "TF":
        for p, col in enumerate(cols):
            scale[col] = weights[ids[p]]

    def count(tokens, tab, lens):
        d, t = te.reduce_axis((0, skips), name="d"), te.reduce_axis((0, c), name="t")

        def g(b, p):
            conds = [tir.any(lens[p] > 1, d == 0)]
            for k in range(n):
                pos = t + k * (d + 1)
                tok = tokens[b, tir.min(pos, c - 1)] if len(shape) == 2 else tokens[tir.min(pos, c - 1)]
                conds.append(tir.any(lens[p] <= k, tir.all(pos < c, tok.astype("int64") == tab[p, k])))
            return te.sum(tir.Select(tir.all(*conds), 1.0, 0.0).astype("float32"), axis=[d, t])

        return te.compute([rows, len(grams)], g, name="tfidf_count")

    counts = bb.emit_te(count, x, relax.const(table), relax.const(lengths), primfunc_name_hint="tfidf_count")

    def place(cnt, at, w):
        def g(*i):
            b, j = (i[0], i[1]) if len(shape) == 2 else (0, i[0])
            v = tir.if_then_else(at[j] >= 0, cnt[b, tir.max(at[j], 0)], tir.const(0.0, "float32"))
            if mode == "IDF":
                return tir.Select(v > 0, w[j], tir.const(0.0, "float32"))
            return v * w[j]

        return te.compute([rows, out_size] if len(shape) == 2 else [out_size], g, name="tfidf")

    return bb.emit_te(place, counts, relax.const(where), relax.const(scale), primfunc_name_hint="tfidf")


def install():
    return add_ops({"TfIdfVectorizer": {"_impl_v9": plain(tfidf)}})
