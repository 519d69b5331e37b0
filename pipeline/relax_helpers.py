"""Relax helpers that the optimize stages and the backends' graph rewrites share.

``rewrite_functions`` applies pattern rewrites to every Relax function of a module (the CPU
family's conv1d, deconvolution, Winograd and int8 rewrites use it); ``undefined_shape_vars``
finds the symbolic shape vars a pass left undefined (``optimize.run_stage`` checks each pass).
Helpers only: no stage list, no pass order (that is ``optimize``).
"""

from __future__ import annotations


def rewrite_functions(bb, mod, *rules):
    """Apply each ``(pattern, rewrite)`` of ``rules`` (``relax.dpl.rewrite_call``), in order, to
    every Relax function of ``mod``; the rewritten ones go into ``bb`` (a BlockBuilder of ``mod``,
    where the rewrites add their kernels). Returns ``bb.get()``."""
    from tvm import relax
    from tvm.relax.dpl.rewrite import rewrite_call

    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            new = func
            for pattern, rewrite in rules:
                new = rewrite_call(pattern, rewrite, new)
            if not new.same_as(func):
                bb.update_func(gv, new)
    return bb.get()


def undefined_shape_vars(mod) -> set[str]:
    """Names of the symbolic shape vars a Relax function uses but never defines (by a parameter's
    shape or a match_cast): a module with any cannot be built."""
    from tvm import relax

    out: set[str] = set()
    for _, f in mod.functions.items():
        if isinstance(f, relax.Function) and not (f.attrs and "Primitive" in f.attrs):  # FuseOps' kernels
            out |= {str(v.name) for v in relax.analysis.free_symbolic_vars(f)}
    return out


def has_conv2d(mod) -> bool:
    """Whether any Relax function of ``mod`` calls relax.nn.conv2d."""
    from tvm import relax

    found = []

    def visit(e):
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.nn.conv2d":
            found.append(e)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return bool(found)
