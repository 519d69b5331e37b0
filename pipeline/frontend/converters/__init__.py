"""deploy's ONNX op converters, installed into TVM's ONNX frontend for the length of an import.

One module per op (small_ops: a few small ones); each has ``install() -> undo`` (``base.replace`` does the swap). Add a converter by adding a module and its
name to ``MODULES``.
"""

from __future__ import annotations

import contextlib
import importlib

MODULES = ("attention", "clip", "isinf", "layer_norm", "losses", "mixed_inputs", "mod", "narrow_cast", "nms", "range", "reduce_minmax", "rms_norm", "rnn", "small_ops")


@contextlib.contextmanager
def installed():
    undo = []
    try:
        for name in MODULES:
            undo.append(importlib.import_module(f"{__name__}.{name}").install())
        yield
    finally:
        for u in reversed(undo):
            u()
