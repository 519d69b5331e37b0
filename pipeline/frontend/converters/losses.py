"""NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss, which TVM 0.27's ONNX frontend lacks.

Exported classifiers that end in their loss (evaluation graphs) compute it at inference too. As
ONNX's reference: the target picks ``-x[n, target, d...]``; a class weight (``weight[target]``,
the index clipped as ``np.take(mode='clip')``) and ``ignore_index`` (weight 0) scale it; "mean"
divides the weighted sum by the weights' sum. SoftmaxCrossEntropyLoss is that over
``log_softmax(x, axis=1)``, whose value is its second output.
"""

from __future__ import annotations

from .converter_base import add_ops, text


def nll(bb, x, target, weight, attr):
    from tvm import relax, tirx

    op = relax.op
    dtype = str(x.ty.dtype)
    classes = x.ty.shape[1]
    classes = int(classes) if isinstance(classes, tirx.IntImm) else classes
    reduction = text(attr, "reduction", "mean")
    ignore = attr.get("ignore_index")
    target = bb.normalize(op.astype(target, "int64"))
    if ignore is not None:
        valid = bb.normalize(op.not_equal(target, relax.const(int(ignore), "int64")))
        safe = bb.normalize(op.where(valid, target, relax.const(0, "int64")))
    else:
        valid, safe = None, target
    safe = bb.normalize(op.minimum(op.maximum(safe, relax.const(0, "int64")), relax.const(classes - 1, "int64")))
    picked = bb.normalize(op.squeeze(op.gather_elements(x, op.expand_dims(safe, [1]), axis=1), [1]))
    w = bb.normalize(op.take(weight, safe, axis=0)) if weight is not None else None
    if valid is not None:
        ones = op.astype(valid, dtype)
        w = bb.normalize(op.multiply(w, ones) if w is not None else ones)
    loss = bb.normalize(op.negative(picked))
    if w is not None:
        loss = bb.normalize(op.multiply(loss, w))
    if reduction == "sum":
        return bb.normalize(op.sum(loss))
    if reduction == "mean":
        if w is None:
            return bb.normalize(op.mean(loss))
        return bb.normalize(op.divide(op.sum(loss), op.sum(w)))
    if reduction != "none":
        from ...errors import DeployError

        raise DeployError(f"loss reduction '{reduction}' is not one of none, sum, mean")
    return loss


def install():
    from tvm import relax

    def nll_impl(cls, bb, inputs, attr, params):
        inputs = list(inputs) + [None] * 3
        return nll(bb, inputs[0], inputs[1], inputs[2], attr)

    def sce_impl(cls, bb, inputs, attr, params):
        inputs = list(inputs) + [None] * 3
        log_prob = bb.normalize(relax.op.nn.log_softmax(inputs[0], axis=1))
        return relax.Tuple([nll(bb, log_prob, inputs[1], inputs[2], attr), log_prob])

    return add_ops({"NegativeLogLikelihoodLoss": {"_impl_v12": nll_impl, "_impl_v13": nll_impl},
                    "SoftmaxCrossEntropyLoss": {"_impl_v12": sce_impl, "_impl_v13": sce_impl}})
