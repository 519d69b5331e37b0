"""Quantization before import, on the cleaned-up ONNX model (README, "The pipeline": the order).

A QOperator model (QLinearConv, MatMulInteger, ...) is rewritten to the QDQ form it stands for
(frontend/qoperator.py); then, with ``--precision int8``, the hook (quantize/int8.py) calibrates
and writes QDQ pairs. Both leave a QDQ model, the one form ``after_import`` reads.
"""

from __future__ import annotations

import contextlib

from ..frontend import provenance, qoperator


def before_import(cleaned, hook=None, step=None, original_graph=None):
    """``cleaned`` with QOperator nodes as QDQ and, given the int8 ``hook``, calibrated QDQ pairs.

    ``step`` (prepare.Steps) names each part in the step log; ``original_graph`` (the user's
    graph) gives the hook the user's node names, for --exclude and the layer report."""
    step = step or (lambda name: contextlib.nullcontext())
    if qoperator.present(cleaned):
        with step("quantize: QOperator -> QDQ"):
            cleaned = qoperator.to_qdq(cleaned)
    if hook is not None:
        with step("quantize: calibrate"):
            if original_graph is not None and hasattr(hook, "original"):
                hook.original = provenance.name_index(original_graph)
            cleaned = hook(cleaned)
    return cleaned
