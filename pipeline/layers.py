"""The layer report (each compiled kernel, its ONNX nodes, schedule, layout, FLOPs) and the memory plan.

``Collector`` rides along the optimize passes (``optimize.run_stage``): it keeps the node labels
the import put on every call (``frontend/provenance.py``) through passes that drop them, reads
the layouts convolutions were given before they are legalized, and, right after FuseOps, the
nodes each fused function covers. ``kernel_sites`` then lists, for every kernel call of ``main``
in order, the kernel and its nodes; compile adds the schedule source and FLOPs and writes it
as ``layers.json`` beside the library, which ``deploy compile --report`` prints and
``deploy profile`` joins with measured times.
"""

from __future__ import annotations

import json
from pathlib import Path

from .frontend import provenance

LAYERS = "layers.json"
SHAPE_OPS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Cast", "Expand"}
_LAYOUT_ATTRS = ("data_layout", "layout")
KEPT_ATTR = "deploy_layout_kept"  # module attribute: the ops a layout stage left in their layout (JSON)


def take_kept(mod) -> tuple[object, list[dict]]:
    """The module without its ``KEPT_ATTR``, and the ops it lists ({"node", "onnx_op", "op"})."""
    kept = mod.attrs.get(KEPT_ATTR) if mod.attrs is not None else None
    if kept is None:
        return mod, []
    return mod.without_attr(KEPT_ATTR), json.loads(str(kept))


class Collector:
    def __init__(self):
        self.fused: dict[str, list[str]] = {}    # fused function -> labels of the nodes in it
        self.layouts: dict[str, str] = {}        # node label -> data layout of its conv/pool
        self._calls: list = []                   # main's call bindings before the pass
        self.sites: dict = {}                    # main's call var -> labels of the nodes it computes
        self.skipped: list[dict] = []            # optional passes TVM failed on ({"stage", "reason"})
        self.layout_kept: list[dict] = []        # ops the layout stage left in their own layout

    def before(self, mod, name: str) -> dict:
        if name == "LegalizeOps":
            self._read_layouts(mod)
        self._calls = _main_calls(mod)
        return provenance.labels_of(mod)

    def after(self, mod, name: str, known: dict):
        mod, kept = take_kept(mod)
        self.layout_kept += kept
        if name == "FuseOps":
            self._read_fused(mod)
            self._read_groups(mod)
        known = self._follow(mod, known)
        try:
            return provenance.restore(mod, known)  # the module itself where nothing lost its label
        except Exception:  # noqa: BLE001 - the report may lose a label, the compile nothing
            return mod

    def _follow(self, mod, known: dict) -> dict:
        """Labels for main's calls that a pass made anew. A call of a fused function computes its
        nodes (the last one's label); FuseTIR turns each such call into a call of a new TIR
        kernel with new variables, and AttachAttrLayoutFreeBuffers renames every kernel, both
        keeping main's calls in order: where the count is unchanged, pair them by position."""
        now = _main_calls(mod)
        known = dict(known)
        sites = {}
        paired = len(now) == len(self._calls)
        for i, (var, callee, lbl) in enumerate(now):
            if var in self.sites:
                sites[var] = self.sites[var]
            elif paired and self._calls[i][0] in self.sites:
                sites[var] = self.sites[self._calls[i][0]]
            elif callee in self.fused:
                sites[var] = self.fused[callee]
            if lbl is None and sites.get(var):
                known.setdefault(var, sites[var][-1])
            if paired and self._calls[i][2]:
                known.setdefault(var, self._calls[i][2])
        self.sites = sites
        return known

    def _read_groups(self, mod) -> None:
        """The nodes of each call of a fused function. FuseOps gives identical groups one
        function (whose body names the first group's nodes only) and new variables, but keeps
        main in order: walk main's calls before and after it together, each fused call taking the
        earliest unclaimed calls before it of the kernels its body calls."""
        from tvm import relax

        if not _has_main(mod):
            return
        old = [(callee, lbl) for _, callee, lbl in self._calls]
        claimed = [False] * len(old)
        start = 0
        for b in provenance.bindings(mod["main"]):
            gv = _callee(b.value)
            if gv is None:
                continue
            func = mod[gv]
            if isinstance(func, relax.Function) and gv.name_hint in self.fused:
                want = [c for c in (_callee(x.value) for x in provenance.bindings(func)) if c is not None]
                want = [c.name_hint for c in want]
            else:
                want = [gv.name_hint]
            lbls = []
            for name in want:
                for i in range(start, len(old)):
                    if not claimed[i] and old[i][0] == name:
                        claimed[i] = True
                        if old[i][1] and old[i][1] not in lbls:
                            lbls.append(old[i][1])
                        break
            while start < len(old) and (claimed[start] or old[start][0] is None):
                start += 1
            if lbls and gv.name_hint in self.fused:
                self.sites[b.var] = lbls

    def _read_layouts(self, mod) -> None:
        from tvm import relax

        for _, func in provenance.relax_functions(mod):
            for b in provenance.bindings(func):
                call = b.value
                lbl = provenance.span_label(call)
                if lbl is None or not isinstance(call, relax.Call) or call.attrs is None:
                    continue
                for key in _LAYOUT_ATTRS:
                    value = getattr(call.attrs, key, None)
                    if isinstance(value, str) and value:
                        self.layouts.setdefault(lbl, value)
                        break

    def _read_fused(self, mod) -> None:
        from tvm import relax

        for gv, func in mod.functions_items():
            if not isinstance(func, relax.Function) or not func.attrs or "Primitive" not in func.attrs.keys():
                continue
            lbls = []
            for b in provenance.bindings(func):
                lbl = provenance.span_label(b.value)
                if lbl and lbl not in lbls:
                    lbls.append(lbl)
            self.fused[gv.name_hint] = lbls


def _callee(call):
    """The GlobalVar a call runs (a call_tir's kernel, or a function called directly), or None."""
    import tvm
    from tvm import relax

    if not isinstance(call, relax.Call):
        return None
    if isinstance(call.op, tvm.ir.Op) and call.op.name in ("relax.call_tir", "relax.call_tir_inplace") \
            and call.args and isinstance(call.args[0], tvm.ir.GlobalVar):
        return call.args[0]
    if isinstance(call.op, tvm.ir.GlobalVar):
        return call.op
    return None


def _has_main(mod) -> bool:
    return "main" in [gv.name_hint for gv in mod.get_global_vars()]


def _main_calls(mod) -> list:
    """(var, callee name or None, label) of each call binding of ``main``, in order."""
    from tvm import relax

    if not _has_main(mod):
        return []
    out = []
    for b in provenance.bindings(mod["main"]):
        if isinstance(b.value, relax.Call):
            gv = _callee(b.value)
            out.append((b.var, gv.name_hint if gv is not None else None, provenance.span_label(b.value)))
    return out


def kernel_sites(mod, collector: Collector) -> list[dict]:
    """Every call of a TIR kernel in ``main``, in order: {"kernel", "nodes": [[op, name], ...]}."""
    from tvm import tirx

    sites = []
    for var, name, own in _main_calls(mod):
        if name is None or not isinstance(mod[name], tirx.PrimFunc):
            continue
        lbls = list(collector.sites.get(var) or collector.fused.get(name, []))
        if own and own not in lbls:
            lbls.append(own)
        sites.append({"kernel": name, "nodes": [list(provenance.parse(lbl)) for lbl in lbls],
                      "layouts": sorted({collector.layouts[lbl] for lbl in lbls if lbl in collector.layouts})})
    return sites


def func_flops(func) -> float | None:
    """FLOPs of one TIR function (TVM's estimate), None where TVM cannot count them."""
    import tvm
    from tvm import s_tir

    try:
        return float(s_tir.analysis.estimate_tir_flops(tvm.IRModule({"main": func})))
    except Exception:  # noqa: BLE001 - FLOPs are for reports and rankings
        return None


def kernel_flops(mod, unscheduled=None) -> dict[str, float]:
    """FLOPs of every TIR kernel where TVM can count them. A GPU schedule hides them from TVM's
    count (thread-bound loops, tensor-core intrinsics count as 0): where ``unscheduled`` (the
    module before scheduling) has the kernel, it is counted there."""
    from tvm import tirx

    before = {gv.name_hint: f for gv, f in unscheduled.functions_items()} if unscheduled is not None else {}
    out = {}
    for gv, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc):
            base = before.get(gv.name_hint) or before.get(prepacked_base(gv.name_hint) or "")
            n = func_flops(base) if isinstance(base, tirx.PrimFunc) else None
            if n is None:
                n = func_flops(func)
            if n is not None:
                out[gv.name_hint] = n
    return out


def report(sites: list[dict], schedules: dict[str, str], flops: dict[str, float], original=None) -> dict:
    """The ``layers.json`` content. ``original``: the user's ONNX graph, whose node names replace
    those the clean-up made (onnxslim's Gemm from MatMul + Add is named after the MatMul's output)."""
    index = provenance.name_index(original) if original is not None else {}
    ops = provenance.node_ops(original) if original is not None else {}
    kernels = []
    for s in sites:
        k = dict(s)
        if index:
            nodes = []
            for op, name in s["nodes"]:
                orig = provenance.original_node(name, index)
                # a reshape the clean-up put around a node keeps its own op type
                node = ([op if op in SHAPE_OPS else ops.get(orig, op), orig] if orig else [op, name])
                if node not in nodes:
                    nodes.append(node)
            k["nodes"] = nodes
        k["schedule"] = schedules.get(s["kernel"], "TVM plain loops")
        if s["kernel"] in flops:
            k["flops"] = flops[s["kernel"]]
        kernels.append(k)
    return {"format": 1, "kernels": kernels}


def read(artifact: Path) -> dict | None:
    path = Path(artifact) / LAYERS
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def node_text(nodes: list, limit: int = 3) -> str:
    """"Conv /c/Conv + Relu /Relu" (the first ``limit`` nodes, then a count)."""
    parts = [f"{op} {name}" for op, name in nodes[:limit]]
    more = len(nodes) - limit
    return " + ".join(parts) + (f" (+{more} more)" if more > 0 else "") if parts else "-"


def memory_plan(mod) -> dict:
    """The static memory plan of a module after TVM's StaticPlanBlockMemory: the bytes of the
    storage the functions allocate with sizes known at build time (``alloc_storage``), and how
    many tensors are allocated at run time instead (sizes known only then)."""
    import tvm
    from tvm import relax

    static_bytes, dynamic = 0, 0

    def visit(expr):
        nonlocal static_bytes, dynamic
        if not (isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op)):
            return
        if expr.op.name == "relax.memory.alloc_storage":
            size = expr.args[0]
            if isinstance(size, relax.ShapeExpr) and all(isinstance(v, tvm.tirx.IntImm) for v in size.values):
                n = 1
                for v in size.values:
                    n *= int(v)
                static_bytes += n
            else:
                dynamic += 1
        elif expr.op.name == "relax.builtin.alloc_tensor":
            dynamic += 1

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return {"workspace_bytes": static_bytes, "dynamic_allocations": dynamic}


def param_bytes(mod) -> int:
    """Bytes of the constants (weights) the module's Relax functions hold."""
    import numpy as np
    import tvm
    from tvm import relax

    seen, total = set(), 0

    def visit(expr):
        nonlocal total
        if isinstance(expr, tvm.ir.expr.Constant) and hasattr(expr.value, "shape") and expr not in seen:
            seen.add(expr)
            data = expr.value
            total += int(np.prod([int(s) for s in data.shape], dtype=np.int64)) * np.dtype(str(data.dtype)).itemsize

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return total


def prepacked_base(name: str) -> str | None:
    """The kernel a ``*_prepacked`` one was split from (SplitLayoutRewritePreproc's name for a
    kernel whose weights it pre-packs), or None."""
    return name[: -len("_prepacked")] if name.endswith("_prepacked") else None


def carry_over(collector: Collector, before, after):
    """``after`` (the scheduled module) with the node labels of ``before``'s calls: pre-packing
    weights (SplitLayoutRewritePreproc, then folding) re-binds each such kernel call under a new
    name; main's calls stay in order, so they pair by position."""
    try:
        return collector.after(after, "apply tuning", collector.before(before, "apply tuning"))
    except Exception:  # noqa: BLE001 - the report may lose a label, the compile nothing
        return after
