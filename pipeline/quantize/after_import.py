"""Quantization after import, on the Relax module (README, "The pipeline": the order).

Where the imported model has QDQ pairs (calibrated by ``before_import`` or the model's own), those
around conv2d/matmul become int8 compute (quantize/rewrite.py), before the graph is optimized.
"""

from __future__ import annotations

from .qdq import has_qdq
from .rewrite import int8_rewrite, log_stats

PASSES = ["Int8ConvMatmulRewrite", "DeadCodeElimination"]


def after_import(mod, qdq_model, step) -> tuple[object, bool]:
    """(``mod`` with int8 compute, True) where ``qdq_model`` (the ONNX model imported) has QDQ
    pairs; else (``mod``, False)."""
    if not has_qdq(qdq_model):
        return mod, False
    with step("quantize: int8 rewrite"):
        mod, stats = int8_rewrite(mod)
        log_stats(stats)
    return mod, True
