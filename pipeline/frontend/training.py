"""Training-mode ops: which deploy refuses, and the Dropout it compiles with a run-time check.

deploy compiles inference. A Dropout that certainly drops at random (``training_mode`` true and a
ratio that is a non-zero constant) is refused before import: such a model was exported in
training mode by mistake. (BatchNormalization in training mode is deterministic, normalizing by
the batch's own statistics, and compiles: ``converters/batch_norm.py``.)

A Dropout whose ``ratio`` or ``training_mode`` is a graph input drops nothing when the caller
feeds ratio 0 or training_mode false, and is then the identity (its mask all true), as in ONNX.
deploy compiles it so, with a check at the start of every run: any other value stops the run
with an error naming the node, never a silent identity where ONNX would drop at random. The
manifest gives such an input its one accepted value (``"only"``), which random inputs (the
built-in check, ``deploy bench``) then feed.
"""

from __future__ import annotations

import numpy as np
import onnx

_STD = ("", "ai.onnx")


def _dropout_inputs(node) -> tuple[str | None, str | None]:
    """(ratio, training_mode) input names of a Dropout node, None where absent."""
    ratio = node.input[1] if len(node.input) > 1 and node.input[1] else None
    training = node.input[2] if len(node.input) > 2 and node.input[2] else None
    return ratio, training


def _inert_by_constants(node, consts: dict) -> bool:
    """Whether the node's constant inputs alone make it drop nothing."""
    ratio, training = _dropout_inputs(node)
    if training is None:
        return True  # inference (Dropout before opset 12 has no training input; is_test is gone)
    value = consts.get(training)
    if value is not None and not bool(np.asarray(value).reshape(-1)[0]):
        return True
    r = np.array(0.5) if ratio is None else consts.get(ratio)
    return r is not None and float(np.asarray(r).reshape(-1)[0]) == 0.0


def refused(node, consts: dict, runtime: set[str]) -> bool:
    """Whether ``node`` computes in training mode in a way deploy does not compile (``runtime``:
    the names of the graph's inputs, fed at run time)."""
    if node.domain not in _STD:
        return False
    if node.op_type != "Dropout" or _inert_by_constants(node, consts):
        return False
    return not _inert_inputs(node, runtime)


def _inert_inputs(node, runtime: set[str]) -> dict[str, object]:
    """The graph inputs that make a training-mode Dropout drop nothing, each with that value."""
    ratio, training = _dropout_inputs(node)
    out: dict[str, object] = {}
    if ratio in runtime:
        out[ratio] = 0.0
    if training in runtime:
        out[training] = False
    return out


def checked_dropouts(model: onnx.ModelProto) -> list[tuple[str, dict[str, object]]]:
    """The top-level Dropouts deploy compiles as the identity with a run-time check: (node name,
    {graph input: the value that makes it drop nothing})."""
    from .provenance import node_name
    from .specs import graph_constants, graph_inputs

    consts, runtime = graph_constants(model.graph), {s.name for s in graph_inputs(model)}
    out = []
    for i, node in enumerate(model.graph.node):
        if node.domain in _STD and node.op_type == "Dropout" and not _inert_by_constants(node, consts):
            inputs = _inert_inputs(node, runtime)
            if inputs:
                out.append((node_name(node, i), inputs))
    return out


def add_checks(mod, model: onnx.ModelProto):
    """``mod`` whose ``main`` first asserts that each checked Dropout drops nothing (ratio 0 or
    training_mode false); ``mod`` itself when the model has none."""
    from tvm import relax

    dropouts = checked_dropouts(model)
    if not dropouts:
        return mod
    main = mod["main"]
    params = {p.name: p for p in main.params}
    bb = relax.BlockBuilder()
    bindings = []

    def bind(expr, name: str):
        expr = bb.normalize(expr)
        var = relax.Var(name, expr.ty)
        bindings.append(relax.VarBinding(var, expr))
        return var

    for node, inputs in dropouts:
        conds, shown = [], []
        for name, value in inputs.items():
            p = params.get(name)
            if p is None:  # never a silent identity: without its check the node is refused
                from ..errors import DeployError

                raise DeployError(f"Dropout '{node}' in training mode: its input '{name}' is not a parameter of the "
                                  "imported model, so deploy cannot check at run time that it drops nothing",
                                  hint="export the model in eval mode (model.eval()), or make the ratio a constant 0")
            dtype = str(p.ty.dtype)
            conds.append(bind(relax.op.equal(p, relax.const(value, dtype)), "dropout_inert"))
            shown.append(p)
        ok = conds[0]
        for c in conds[1:]:
            ok = bind(relax.op.logical_or(ok, c), "dropout_inert")
        what = " or ".join(f"{n} = {'false' if isinstance(v, bool) else '0'}" for n, v in inputs.items())
        got = ", ".join(f"{p.name} = {{}}" for p in shown)
        bind(relax.op.assert_op(ok, shown, f"Dropout '{node}' runs in training mode here ({got}): deploy compiles "
                                           f"inference, where it drops nothing; feed {what}, or export the model "
                                           "in eval mode (model.eval())"), "dropout_check")
    body = main.body
    new_body = relax.SeqExpr([relax.BindingBlock(bindings), *body.blocks], body.body)
    new_main = relax.Function(main.params, new_body, main.ret_ty, is_pure=False, attrs=main.attrs)
    out = mod.clone()
    out["main"] = new_main
    return out


def with_only_values(model: onnx.ModelProto, specs: list[dict]) -> list[dict]:
    """Input specs (the manifest's), each input that accepts one value (a checked Dropout's ratio
    or training_mode) with it as ``only``."""
    only = {name: v for _, inputs in checked_dropouts(model) for name, v in inputs.items()}
    return [{**s, "only": only[s["name"]]} if s["name"] in only else s for s in specs]
