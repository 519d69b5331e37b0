"""Attention (opset 23/24): scaled dot-product attention with masks, KV cache, GQA and softcap.

TVM 0.27's ONNX frontend has no converter for it. This follows the ONNX reference
(``onnx/reference/ops/op_attention.py``) op by op in Relax: 3-D inputs split into heads, the
scale applied as sqrt(scale) to Q and K, past keys/values concatenated (the present outputs), an
additive bias from the boolean or float mask (padded with -inf / False to the key length) and
the bottom-right-aligned causal mask, grouped-query heads repeated, softcap before the bias,
softmax (in ``softmax_precision`` when given) with fully masked rows zeroed, and the
``qk_matmul_output`` of the mode asked for.
"""

from __future__ import annotations

from .converter_base import add_ops

_NEG_INF = float("-inf")


def convert(bb, inputs, attr):
    from tvm import relax, tirx
    from tvm.relax.frontend.onnx.onnx_frontend import get_type

    op = relax.op
    inputs = list(inputs) + [None] * (7 - len(inputs))
    q, k, v, mask, past_k, past_v, nonpad = inputs[:7]
    out_dtype = str(q.ty.dtype)
    dtype = "float32" if out_dtype == "float16" else out_dtype  # fp16 attention accumulates in fp32 (as ORT)
    if dtype != out_dtype:
        q, k, v = (bb.normalize(op.astype(x, dtype)) for x in (q, k, v))
        past_k, past_v = (bb.normalize(op.astype(x, dtype)) if x is not None else None for x in (past_k, past_v))
        if mask is not None and str(mask.ty.dtype) == out_dtype:
            mask = bb.normalize(op.astype(mask, dtype))
    rank = len(q.ty.shape)
    qh, kvh = attr.get("q_num_heads"), attr.get("kv_num_heads")

    def shape(x):  # ints where static, the dim's expression where not
        return [int(d) if isinstance(d, tirx.IntImm) else d for d in x.ty.shape]

    def heads(x, n):  # [B, S, n*D] -> [B, n, S, D]
        b, s, hid = shape(x)
        return bb.normalize(op.permute_dims(op.reshape(x, [b, s, n, hid // n]), [0, 2, 1, 3]))

    if rank == 3:
        q, k, v = heads(q, qh), heads(k, kvh), heads(v, kvh)
    head = shape(q)[3]
    scale = attr.get("scale")
    scale = float(scale) if scale is not None else 1.0 / float(head) ** 0.5
    s = relax.const(scale ** 0.5, dtype)
    present_k = bb.normalize(op.concat([past_k, k], axis=2)) if past_k is not None else k
    present_v = bb.normalize(op.concat([past_v, v], axis=2)) if past_v is not None else v
    q_len, kv_len = shape(q)[2], shape(present_k)[2]
    zero, ninf = relax.const(0.0, dtype), relax.const(_NEG_INF, dtype)

    if mask is not None:
        pad = kv_len - shape(mask)[-1]
        is_bool = str(mask.ty.dtype) == "bool"
        if pad > 0:
            fill = op.full(shape(mask)[:-1] + [pad], relax.const(False if is_bool else _NEG_INF, str(mask.ty.dtype)),
                           str(mask.ty.dtype))
            mask = bb.normalize(op.concat([mask, fill], axis=-1))
        if is_bool:
            mask = bb.normalize(op.where(mask, zero, ninf))

    n = bb.normalize
    causal = bool(attr.get("is_causal", 0))
    left, right = int(attr.get("left_window_size", -1)), int(attr.get("right_window_size", -1))
    i_idx = n(op.expand_dims(op.arange(0, q_len, 1, "int64"), [1]))  # (q, 1)
    j_idx = n(op.expand_dims(op.arange(0, kv_len, 1, "int64"), [0]))  # (1, kv)
    if past_k is None and nonpad is not None:  # external cache: the frontier of each batch
        offset = n(op.reshape(n(op.subtract(op.astype(nonpad, "int64"), relax.const(q_len, "int64"))), [-1, 1, 1]))
    else:
        offset = relax.const(int(shape(past_k)[2]) if past_k is not None else 0, "int64")
    per_batch = past_k is None and nonpad is not None

    def as_bias(allowed):  # (q, kv), or (B, 1, q, kv) with a frontier per batch
        b = n(op.where(allowed, zero, ninf))
        return n(op.expand_dims(b, [1])) if per_batch else b

    bias = n(op.zeros([q_len, kv_len], dtype))
    if mask is not None:
        bias = n(op.add(bias, mask))
    if causal:
        bias = n(op.add(bias, as_bias(n(op.less_equal(j_idx, n(op.add(i_idx, offset)))))))
    if left >= 0 or right >= 0:  # sliding window: p - left <= j <= p + right
        diff = n(op.subtract(n(op.add(i_idx, offset)), j_idx))
        allowed = n(op.full(diff.ty.shape, relax.const(True, "bool"), "bool"))
        if left >= 0:
            allowed = n(op.logical_and(allowed, op.less_equal(diff, relax.const(left, "int64"))))
        if right >= 0:
            allowed = n(op.logical_and(allowed, op.less_equal(op.negative(diff), relax.const(right, "int64"))))
        bias = n(op.add(bias, as_bias(allowed)))
    if nonpad is not None:
        keep = n(op.less(j_idx, n(op.expand_dims(op.astype(nonpad, "int64"), [1]))))  # (B, kv)
        bias = n(op.add(bias, n(op.reshape(n(op.where(keep, zero, ninf)), [shape(q)[0], 1, 1, kv_len]))))

    nq, nk = shape(q)[1], shape(present_k)[1]
    kk, vv = present_k, present_v
    if int(nq) != int(nk) and int(nq) % int(nk) == 0:  # grouped-query: each KV head serves nq/nk query heads
        kk = bb.normalize(op.repeat(kk, int(nq) // int(nk), axis=1))
        vv = bb.normalize(op.repeat(vv, int(nq) // int(nk), axis=1))

    qk = bb.normalize(op.matmul(op.multiply(q, s), op.permute_dims(op.multiply(kk, s), [0, 1, 3, 2])))
    softcap = float(attr.get("softcap", 0.0) or 0.0)
    if softcap > 0:
        cap = relax.const(softcap, dtype)
        qk = bb.normalize(op.multiply(op.tanh(op.divide(qk, cap)), cap))
    with_bias = bb.normalize(op.add(qk, bias))
    mode = int(attr.get("qk_matmul_output_mode", 0))
    qk_out = with_bias if mode == 2 else qk
    prec = attr.get("softmax_precision")
    sm_dtype = str(get_type(int(prec))) if prec is not None else dtype
    probs = op.nn.softmax(op.astype(with_bias, sm_dtype) if sm_dtype != dtype else with_bias, axis=-1)
    # rows with no key to attend (their bias all -inf); compared with a finite bound, since LLVM's
    # fast-math flags may fold a comparison with -inf away
    dead = op.less(op.max(bias, axis=-1, keepdims=True), relax.const(-3.0e38, dtype))
    probs = bb.normalize(op.where(dead, relax.const(0.0, sm_dtype), probs))
    probs = bb.normalize(op.astype(probs, dtype))
    if mode == 3:
        qk_out = probs
    y = bb.normalize(op.matmul(probs, vv))
    if rank == 3:
        b, nh, sq, d = shape(y)
        y = bb.normalize(op.reshape(op.permute_dims(y, [0, 2, 1, 3]), [b, sq, nh * d]))
    outs = [y, present_k, present_v, qk_out]
    return relax.Tuple([bb.normalize(op.astype(x, out_dtype)) if dtype != out_dtype else bb.normalize(x) for x in outs])


def install():
    """Put Attention in TVM's converter map; returns the undo. TVM's entry of that name converts
    com.microsoft's contrib op, which deploy never imports (other domains are refused)."""

    def impl(cls, bb, inputs, attr, params):
        return convert(bb, inputs, attr)

    return add_ops({"Attention": {"_impl_v23": impl, "_impl_v24": impl}}, override=True)
