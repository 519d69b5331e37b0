"""What every converter module does: swap one of TVM's converter methods for deploy's, undoably."""

from __future__ import annotations


def replace(converter, name: str, impl):
    """Install ``impl(cls, bb, inputs, attr, params)`` as ``converter.name`` (a TVM OnnxOpConverter
    classmethod, e.g. ``_impl_v13``); returns TVM's function (to delegate to) and the undo."""
    original = converter.__dict__[name]
    setattr(converter, name, classmethod(impl))

    def undo():
        setattr(converter, name, original)

    return original.__func__, undo
