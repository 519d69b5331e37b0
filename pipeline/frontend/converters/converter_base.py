"""What every converter module does: swap one of TVM's converter methods for deploy's, undoably."""

from __future__ import annotations

import numpy as np


KERNELS: list = [None]
"""The target family's fused kernels for this import (``Backend.frontend_kernels``), or None."""

NOTES: list[dict] = []
"""How the last import computed ops worth telling (``note``): {"op", "nodes", "computes"[,
"reference"]}, for the manifest's ``notes``."""


def note(op: str, computes: str, reference: str | None = None) -> None:
    """Record (once per op and text) that the node being converted computes as ``computes``;
    ``reference="int8"``: ONNX Runtime computes it with activations quantized at run time, so
    the check compares with int8's tolerance."""
    from ..provenance import Current

    for n in NOTES:
        if n["op"] == op and n["computes"] == computes:
            break
    else:
        n = {"op": op, "nodes": [], "computes": computes}
        if reference:
            n["reference"] = reference
        NOTES.append(n)
    if Current.name and Current.name not in n["nodes"]:
        n["nodes"].append(Current.name)


def replace(converter, name: str, impl):
    """Install ``impl(cls, bb, inputs, attr, params)`` as ``converter.name`` (a TVM OnnxOpConverter
    classmethod, e.g. ``_impl_v13``); returns TVM's function (to delegate to) and the undo."""
    original = converter.__dict__[name]
    setattr(converter, name, classmethod(impl))

    def undo():
        setattr(converter, name, original)

    return original.__func__, undo


def plain(fn):
    """A converter method ``(cls, bb, inputs, attr, params)`` calling ``fn(bb, inputs, attr, params)``."""
    def impl(cls, bb, inputs, attr, params):
        return fn(bb, inputs, attr, params)

    return impl


def constant(x, params, what: str) -> np.ndarray:
    """The value of a converter input that must be a constant (an initializer), or a DeployError
    naming ``what``."""
    from tvm.relax.frontend.onnx.onnx_frontend import get_constant

    from ...errors import DeployError

    c = get_constant(x, params)
    value = getattr(c, "value", None)
    if value is None or not hasattr(value, "numpy"):
        raise DeployError(f"{what} must be a constant (an initializer)",
                          hint="export it as a constant, or fold it with onnxslim first")
    return value.numpy()


def text(attr: dict, name: str, default: str) -> str:
    """A string attribute of an ONNX node as TVM's importer hands it over (bytes), as str."""
    v = attr.get(name, default)
    return v.decode() if isinstance(v, bytes) else str(v)


def runtime_input(x, params) -> bool:
    """Whether a converter's input is computed or fed at run time (not a constant, nor an
    initializer TVM's importer keeps as a parameter)."""
    import tvm
    from tvm import relax

    if x is None or isinstance(x, tvm.ir.GenericConst):
        return False
    return not (isinstance(x, relax.Var) and x.name in params[1])


def add_ops(ops: dict[str, dict], override: bool = False):
    """Add converters for ops TVM's frontend lacks: {op type: {"_impl_v7": impl, ...}}, each impl
    ``(cls, bb, inputs, attr, params)``; ``override`` replaces TVM's entry of that name. Returns the undo."""
    from tvm.relax.frontend.onnx import onnx_frontend as of

    extra = {name: type(name, (of.OnnxOpConverter,), {k: classmethod(f) for k, f in impls.items()})
             for name, impls in ops.items()}
    original = of._get_convert_map

    def convert_map():
        m = original()
        for k, v in extra.items():
            if override:
                m[k] = v
            else:
                m.setdefault(k, v)
        return m

    of._get_convert_map = convert_map

    def undo():
        of._get_convert_map = original

    return undo
