"""Which ONNX node each piece of the Relax graph came from.

The import tags every call a node's converter produces with a span whose source name is the
node's label (``OpType<TAB>name``); calls TVM emitted inside a converter (a reshape of a bias,
a transpose of a Gemm weight) get the labels of the nodes converted around them (``restore``). The span is
TVM's own field for where an expression came from: passes that keep it (FuseOps, constant
folding) need nothing, and ``optimize.run_stage`` puts back what the others drop (layout
conversion, legalization), so every fused kernel can name the nodes it computes.
"""

from __future__ import annotations

import contextlib

SEP = "\t"


def label(op_type: str, name: str) -> str:
    return f"{op_type}{SEP}{name}"


def parse(lbl: str) -> tuple[str, str]:
    """(op type, node name) of a label."""
    op, _, name = lbl.partition(SEP)
    return op, name


def span_label(expr) -> str | None:
    span = getattr(expr, "span", None)
    if span is None:
        return None
    name = str(span.source_name.name)
    return name if SEP in name else None


def _span(lbl: str):
    import tvm

    return tvm.ir.Span(tvm.ir.SourceName(lbl), 0, 0, 0, 0)


def with_label(expr, lbl: str):
    """``expr`` with every untagged call in it (not under a variable) tagged ``lbl``."""
    from tvm import relax

    if isinstance(expr, relax.Call) and span_label(expr) is None:
        args = [with_label(a, lbl) for a in expr.args]
        return relax.Call(expr.op, args, expr.attrs, expr.ty_args, _span(lbl))
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([with_label(f, lbl) for f in expr.fields])
    return expr


class Current:
    """The node being converted, for an import error to name."""

    op: str | None = None
    name: str | None = None


@contextlib.contextmanager
def tagging(importer_class):
    """While TVM's ONNX importer runs, tag what each node's converter emits and returns with its label."""
    from tvm import relax

    original = importer_class.__dict__["_convert_operator"]
    emit = relax.BlockBuilder.emit
    count = [0]
    current = [None]
    order: list[str] = []  # every node's label, in the order the nodes were converted

    def convert(self, op_name, inputs, attrs, opset):
        node = attrs.get("tvm_custom", {}).get("name") or f"{op_name}_{count[0]}"
        count[0] += 1
        Current.op, Current.name = op_name, node
        lbl = current[0] = label(op_name, node)
        order.append(lbl)
        try:
            result = original(self, op_name, inputs, attrs, opset)
        finally:
            current[0] = None
        try:
            return self.bb.normalize(with_label(result, lbl))
        except Exception:  # noqa: BLE001 - provenance is for reports: the model imports without it
            return result

    def tagged_emit(self, expr, name_hint=""):
        if current[0] is not None:
            try:
                expr = with_label(expr, current[0])
            except Exception:  # noqa: BLE001
                pass
        return emit(self, expr, name_hint)

    importer_class._convert_operator = convert
    relax.BlockBuilder.emit = tagged_emit
    Current.op = Current.name = None
    try:
        yield order
    finally:
        importer_class._convert_operator = original
        relax.BlockBuilder.emit = emit


def node_name(node, index: int) -> str:
    """A node's name; an unnamed one is called after its op and its place in the graph."""
    return node.name or f"{node.op_type}_{index}"


def node_ops(graph) -> dict[str, str]:
    """Each node's name -> its op type."""
    return {node_name(n, i): n.op_type for i, n in enumerate(graph.node)}


def name_index(graph) -> dict[str, str]:
    """An ONNX graph's node names, and each output tensor's producing node."""
    names = [node_name(n, i) for i, n in enumerate(graph.node)]
    out: dict[str, str] = {}
    for node, name in zip(graph.node, names):
        for t in node.output:
            out.setdefault(t, name)
    out.update({name: name for name in names})
    return out


_MADE_SUFFIXES = ("_nchwc", "_new_reshape", "_pre_reshape", "_post_reshape")


def original_node(name: str, index: dict[str, str]) -> str | None:
    """The node of the user's model that a node some optimizer made stands for: the node itself;
    onnxslim's "<output tensor>[_pre_reshape|_post_reshape]" (a Gemm from MatMul + Add) and ONNX
    Runtime's "<output tensor>_nchwc" name the node producing that tensor; ONNX Runtime's
    "<node>/MatMulAddFusion" and "<node>_new_reshape" the node they started from."""
    cands = [name]
    for suffix in _MADE_SUFFIXES:
        if name.endswith(suffix):
            cands.append(name.removesuffix(suffix))
    path = name.rstrip("/")
    while "/" in path.lstrip("/"):
        path = path.rsplit("/", 1)[0]
        cands.append(path)
    for cand in cands:
        if cand in index:
            return index[cand]
    return None


def bindings(func):
    for block in func.body.blocks:
        yield from block.bindings


def relax_functions(mod):
    """(GlobalVar, function) of the module's Relax functions that have binding blocks."""
    from tvm import relax

    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function) and isinstance(func.body, relax.SeqExpr):
            yield gv, func


def labels_of(mod) -> dict:
    """Every binding var of the module's Relax functions -> its label (where it has one)."""
    out = {}
    for _, func in relax_functions(mod):
        for b in bindings(func):
            lbl = span_label(b.value)
            if lbl is not None:
                out[b.var] = lbl
    return out


def restore(mod, known: dict, order: list[str] | None = None):
    """Tag every untagged call binding of ``mod``'s Relax functions: with the label its variable
    had before a pass (``known``, from ``labels_of``); else, in a run of untagged bindings, with
    the labels that were between the run's two tagged neighbours before (``order``: all labels in
    order, by default those of ``known``) and are gone now; else the next tagged binding's, else
    the previous one's. Returns the module (unchanged where nothing was missing)."""
    from tvm import relax

    old = list(dict.fromkeys(order if order is not None else known.values()))
    pos = {lbl: i for i, lbl in enumerate(old)}

    def plan(func) -> dict:
        calls = [b for b in bindings(func) if isinstance(b.value, relax.Call)]
        lbls = [span_label(b.value) or known.get(b.var) for b in calls]
        present = {lbl for lbl in lbls if lbl}
        # a run of untagged bindings between two tagged ones gets the labels that were between
        # those two before the pass and are gone now (ConvertLayout rebuilds each convolution),
        # spread over the run in order; a run with none gets the next tagged binding's label
        i = 0
        while i < len(lbls):
            if lbls[i]:
                i += 1
                continue
            j = i
            while j < len(lbls) and not lbls[j]:
                j += 1
            lo = pos.get(lbls[i - 1], -1) if i > 0 else -1
            hi = pos.get(lbls[j], len(old)) if j < len(lbls) else len(old)
            lost = [lbl for lbl in old[lo + 1:hi] if lbl not in present]
            if lost:
                for k in range(i, j):
                    lbls[k] = lost[(k - i) * len(lost) // (j - i)]
                present.update(lost)
            i = j
        nxt = None
        for i in range(len(calls) - 1, -1, -1):
            lbls[i] = lbls[i] or nxt
            nxt = lbls[i]
        prev = None
        for i, lbl in enumerate(lbls):
            lbls[i] = lbl or prev
            prev = lbls[i]
        return {b.var: lbl for b, lbl in zip(calls, lbls) if lbl and span_label(b.value) is None}

    @relax.expr_functor.mutator
    class Tag(relax.PyExprMutator):
        def __init__(self, todo, mod=None):
            super().__init__(mod)
            self.todo = todo

        def visit_var_binding_(self, binding):
            value = self.visit_expr(binding.value)
            lbl = self.todo.get(binding.var)
            if lbl is not None and isinstance(value, relax.Call):
                value = self.builder_.normalize(
                    relax.Call(value.op, value.args, value.attrs, value.ty_args, _span(lbl)))
            self.builder_.emit_normalized(relax.VarBinding(binding.var, value))

    changed = {}
    for gv, func in relax_functions(mod):
        todo = plan(func)
        if todo:
            changed[gv] = Tag(todo).visit_expr(func)
    if not changed:
        return mod
    import tvm

    funcs = dict(mod.functions_items())
    funcs.update(changed)
    return tvm.IRModule(funcs, attrs=mod.attrs, global_infos=mod.global_infos)
