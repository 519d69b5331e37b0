"""NHWC/HWIO convolutions, with a per-operator fallback.

TVM's ConvertLayout infers the layout of every op after a converted conv, and one op it cannot
infer (the ``stack`` + ``sum`` an ONNX ``Sum`` of residual branches is imported as: "Invalid
SLayout: can't find S in source layout ABCDE") used to cost the whole model its NHWC layout
(an opset-7 ResNet-50, whose residual adds are ``Sum`` nodes, ran 4x ONNX Runtime's time in NCHW).

Where the conversion fails, the ops that break it keep their own layout: each is hidden behind
an opaque call of the same tensors (which ConvertLayout leaves in the model's layout, with a
layout transform on each tensor in and out) and put back afterwards. Which ops: first those
with a tensor of more than 4 dims, then, if that is not enough, any; a delta-debugging search
over those candidates keeps hidden only the ops whose layout cannot change. The kept ops' ONNX
nodes go into the manifest (``layout.kept``).
"""

from __future__ import annotations

_PREFIX = "deploy.layout_kept."
_NEVER = {"relax.nn.conv2d", "relax.nn.conv2d_transpose"}
MAX_TRIES = 160  # conversions tried in the search; past it, or MAX_SECONDS, a larger (working) set is kept
MAX_SECONDS = 30.0


def _hider(hide: set[int]):
    """A mutator counting the Op calls (conv2d aside) in visit order, replacing those in ``hide``
    by opaque calls of their tensor arguments; ``.calls`` lists (index, op, label, max rank),
    ``.hidden`` maps each opaque function's name to (original call, argument spec)."""
    import tvm
    from tvm import relax

    from ...frontend.provenance import span_label

    def rank(ty):
        return int(ty.ndim) if isinstance(ty, relax.TensorType) and ty.ndim is not None else 0

    @relax.expr_functor.mutator
    class Hide(relax.PyExprMutator):
        def __init__(self, mod=None):
            super().__init__(mod)
            self.calls, self.hidden, self.n = [], {}, 0

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not isinstance(call.op, tvm.ir.Op) or call.op.name in _NEVER:
                return call
            i = self.n
            self.n += 1
            tensors, spec = [], []
            for a in call.args:
                if isinstance(a, relax.Var) and isinstance(a.ty, relax.TensorType):
                    spec.append(("t", 1))
                    tensors.append(a)
                elif isinstance(a, relax.Tuple) and a.fields and all(
                        isinstance(f, relax.Var) and isinstance(f.ty, relax.TensorType) for f in a.fields):
                    spec.append(("tuple", len(a.fields)))
                    tensors += list(a.fields)
                else:
                    spec.append(("keep", a))
            top = max([rank(call.ty)] + [rank(t.ty) for t in tensors])
            self.calls.append((i, str(call.op.name), span_label(call), top))
            if i not in hide or not tensors:
                return call
            name = f"{_PREFIX}{i}"
            self.hidden[name] = (call, spec)
            fn = relax.ExternFunc(name, relax.FuncType.opaque_func(ret=call.ty, purity=True))
            return relax.Call(fn, tensors, ty_args=[call.ty], span=call.span)

    return Hide


def _unhider(hidden: dict):
    from tvm import relax

    @relax.expr_functor.mutator
    class Unhide(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if isinstance(call.op, relax.ExternFunc) and str(call.op.global_symbol) in hidden:
                orig, spec = hidden[str(call.op.global_symbol)]
                args, it = [], iter(call.args)
                for kind, v in spec:
                    if kind == "t":
                        args.append(next(it))
                    elif kind == "tuple":
                        args.append(relax.Tuple([next(it) for _ in range(v)]))
                    else:
                        args.append(v)
                return relax.Call(orig.op, args, orig.attrs, orig.ty_args, span=orig.span)
            return call

    return Unhide


def _rewrite(mod, mutator_class):
    from tvm import relax

    m = mutator_class(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            m.builder_.update_func(gv, m.visit_expr(func))
    return m, m.builder_.get()


def _try(mod, convert, hide: set[int]):
    """The module converted with the calls of ``hide`` kept in their layout, or None."""
    m, hidden_mod = _rewrite(mod, _hider(hide))
    try:
        converted = convert(hidden_mod)
    except Exception:  # noqa: BLE001 - this set of kept ops is not enough
        return None
    return _rewrite(converted, _unhider(m.hidden))[1]


def _minimal(cands: list[int], works, budget: list[int], seconds: float = MAX_SECONDS) -> list[int]:
    """A small subset of ``cands`` (for which ``works`` holds) for which ``works`` still holds:
    chunks are dropped while the conversion still succeeds, halving the chunk size (ddmin).
    Past ``budget`` tries or ``seconds``, the (working) set found so far."""
    import time

    end = time.monotonic() + seconds
    keep = list(cands)
    chunk = max(1, len(keep) // 2)
    while keep:
        i = 0
        while i < len(keep) and budget[0] > 0 and time.monotonic() < end:
            trial = keep[:i] + keep[i + chunk:]
            budget[0] -= 1
            if works(trial):
                keep = trial
            else:
                i += chunk
        if chunk == 1 or budget[0] <= 0 or time.monotonic() >= end:
            break
        chunk = max(1, chunk // 2)
    return keep


def convert_keeping(mod, convert):
    """``convert(mod)``; where it fails, the same with the fewest ops kept in their layout that
    lets it succeed. Returns (module, kept: [{"node", "op"}]); raises the first error where no
    set of kept ops helps."""
    try:
        return convert(mod), []
    except Exception as first:  # noqa: BLE001 - try keeping some ops in their layout
        error = first
    from ...frontend.provenance import parse

    probe, _ = _rewrite(mod, _hider(set()))
    calls = probe.calls
    cache: dict[tuple, object] = {}

    def attempt(hide):
        key = tuple(sorted(hide))
        if key not in cache:
            cache[key] = _try(mod, convert, set(hide))
        return cache[key]

    def works(hide):
        return attempt(hide) is not None

    wide = [i for i, _, _, r in calls if r > 4]
    budget = [MAX_TRIES]
    for cands in (wide, [i for i, *_ in calls]):  # those with a tensor of over 4 dims first, then any
        if cands and works(cands):
            keep = _minimal(cands, works, budget)
            out = attempt(keep)
            kept = []
            for i, op, lbl, _ in calls:
                if i in keep:
                    kept.append({"node": parse(lbl)[1] if lbl else None, "onnx_op": parse(lbl)[0] if lbl else None,
                                 "op": op})
            return out, kept
    raise error
