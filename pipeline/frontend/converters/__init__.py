"""deploy's ONNX op converters, installed into TVM's ONNX frontend for the length of an import.

One module per op (small_ops: a few small ones); each has ``install() -> undo`` (``converter_base.replace``
does the swap). Add a converter by adding a module and its name to ``MODULES``. A converter may
emit a target family's fused kernel where the family has one (``converter_base.KERNELS``), and the portable
Relax ops otherwise.
"""

from __future__ import annotations

import contextlib
import importlib

MODULES = ("attention", "batch_norm", "clip", "col2im", "deform_conv", "dynamic_quantize", "dynamic_quantize_lstm", "isinf", "layer_norm", "losses", "max_pool", "mixed_inputs", "mod", "narrow_cast", "nms", "range", "reduce_minmax", "rms_norm", "rnn", "small_ops", "tensor_scatter", "tfidf")


# Ops of other domains deploy converts, by domain (their converters are in the map by op type)
CONTRIB = {"com.microsoft": {"DynamicQuantizeLSTM"}}


def notes() -> list[dict]:
    """What the last import recorded of how some ops compute (``converter_base.note``), for the manifest."""
    from . import converter_base

    return [dict(n, nodes=list(n["nodes"])) for n in converter_base.NOTES]


@contextlib.contextmanager
def installed(kernels=None):
    """The converters, for the length of an import. ``kernels`` is the target family's own fused
    kernels (``Backend.frontend_kernels``: the CPU's LSTM recurrence), or None where it has none."""
    from . import converter_base

    undo = []
    converter_base.KERNELS[0] = kernels
    converter_base.NOTES.clear()
    try:
        for name in MODULES:
            undo.append(importlib.import_module(f"{__name__}.{name}").install())
        yield
    finally:
        converter_base.KERNELS[0] = None
        for u in reversed(undo):
            u()
