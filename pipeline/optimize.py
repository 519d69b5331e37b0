"""Graph optimization: named pass pipelines per backend and opt level.

A pipeline is a list of (name, pass factory) stages; each stage can be dumped as IR.
- simplify (opt >= 1): fold batch norm into conv weights, decompose the rest for inference,
  fold constants, drop dead code and common subexpressions, merge parallel matmuls (opt 3).
- the backend's own stages (``Backend.graph_stages``): for CPUs ``layout`` (NHWC convolutions),
  ``int8-vnni`` / ``int8-dotprod``, ``int8-grouped-float`` and ``winograd`` (backends/cpu).
- fp16 (``--precision fp16``): mixed precision with float32 accumulation.
- lower: dispatch to libraries, legalize to TensorIR, fuse (opt >= 2), and for GPUs apply
  the backend's default schedules at "apply tuning" (schedule.py). TVM's own pass lists per backend are reused (relax/backend/*).
"""

from __future__ import annotations

from .errors import last_line
from .relax_helpers import undefined_shape_vars


def _simplify(opt_level: int) -> list:
    from tvm import relax

    t = relax.transform
    passes = [t.FoldBatchnormToConv2D(), t.DecomposeOpsForInference(), t.FoldConstant(),
              t.CanonicalizeBindings(), t.DeadCodeElimination()]
    if opt_level >= 2:
        passes.append(t.EliminateCommonSubexpr())
    if opt_level >= 3:
        passes += [t.CombineParallelMatmul(), t.FoldConstant()]
    return passes


def _lower(backend, target, opt_level: int) -> list:
    tvm_backend = backend.tvm_pipeline()
    passes = tvm_backend.library_dispatch_passes(target) + tvm_backend.legalize_passes(target)
    if backend.has_default_schedules:  # the backend's own rules schedule at "apply tuning" (schedule.py)
        passes = [p for p in passes if "ApplyDefaultSchedule" not in str(p.info.name)]
    if opt_level < 2:
        names = ("FuseOps", "FuseTIR")
        passes = [p for p in passes if not any(n in str(p.info.name) for n in names)]
    overrides = backend.legalize_overrides(target) if opt_level >= 2 else {}
    if overrides:
        from tvm import relax

        passes = [relax.transform.LegalizeOps(customize_legalize_map=overrides) if str(p.info.name) == "LegalizeOps"
                  else p for p in passes]
    return passes + backend.extra_lower_passes(target)


def _fp16() -> list:
    """float16 storage and compute for conv/matmul and what follows them; float32 accumulation.

    ToMixedPrecision casts the inputs of conv2d/matmul to float16 and lets elementwise ops follow;
    ops on its "never" list (softmax, layer/group norm, reductions such as mean/sum) stay float32.
    """
    from tvm import relax

    t = relax.transform
    hide, unhide = _call_tir_guard()
    return [t.ConvertToDataflow(), hide, t.ToMixedPrecision(out_dtype="float32"), unhide,
            t.FoldConstant(), t.DeadCodeElimination()]


_HIDDEN = "deploy.fp16_hidden_call_tir."


def _call_tir_guard():
    """Two passes that keep ``R.call_tir`` bindings out of ToMixedPrecision's way.

    TVM's ONNX frontend emits some ops as TIR directly (``call_tir`` of a TE function): Clip
    (so every ReLU6: MobileNets, EfficientNets), Pad, Tile, CumSum with reverse, Einsum, dynamic
    Resize. ToMixedPrecision treats call_tir as an op it must keep in float32, and when the
    call's input became float16 it casts every argument back, the callee PrimFunc included:
    "Expected TensorType, but got R.Callable(...)", and the compile fails.
    ``hide`` replaces each such call with a call of a pure extern function of the same tensor
    arguments and result (which ToMixedPrecision casts back to float32 like any opaque call);
    ``unhide`` puts the original call_tir back around the (possibly cast) arguments. The TIR
    kernel thus runs in float32 as compiled, between casts.
    """
    import tvm
    from tvm import relax

    hidden: dict[str, relax.Call] = {}

    @relax.expr_functor.mutator
    class Hide(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.call_tir"
                    and isinstance(call.args[1], relax.Tuple)):
                name = f"{_HIDDEN}{len(hidden)}"
                hidden[name] = call
                fn = relax.ExternFunc(name, relax.FuncType.opaque_func(ret=call.ty, purity=True))
                return relax.Call(fn, list(call.args[1].fields), ty_args=[call.ty])
            return call

    @relax.expr_functor.mutator
    class Unhide(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if isinstance(call.op, relax.ExternFunc) and str(call.op.global_symbol).startswith(_HIDDEN):
                orig = hidden[str(call.op.global_symbol)]
                return relax.Call(orig.op, [orig.args[0], relax.Tuple(list(call.args)), *orig.args[2:]],
                                  orig.attrs, orig.ty_args)
            return call

    def as_pass(mutator, name):
        @tvm.transform.module_pass(opt_level=0, name=name)
        def rewrite(mod, _ctx):
            m = mutator(mod)
            for gv, func in mod.functions_items():
                if isinstance(func, relax.Function):
                    m.builder_.update_func(gv, m.visit_expr(func))
            return m.builder_.get()

        return rewrite

    return as_pass(Hide, "HideCallTIRFromMixedPrecision"), as_pass(Unhide, "RestoreCallTIR")


def pipeline_for(backend, target, opt_level: int, precision: str = "fp32",
                 int8: bool = False) -> list[tuple[str, object, bool]]:
    """The named stages for a backend (``backends.for_preset``) at an opt level, as
    (name, pass factory, optional): an optional stage that fails falls back to the module before it."""
    stages = []
    if opt_level >= 1:
        stages.append(("simplify", lambda: _simplify(opt_level), False))
    stages += [(name, make, True) for name, make in backend.graph_stages(target, opt_level, precision, int8)]
    if precision == "fp16":
        stages.append(("fp16", _fp16, False))
    stages.append(("lower", lambda: _lower(backend, target, opt_level), False))
    return stages


def run_stage(mod, passes: list, target, collector=None):
    """Run a stage's passes. With a ``layers.Collector``, one pass at a time, so that it can keep
    the ONNX node labels through each and read the fused functions after FuseOps."""
    import tvm

    with target, tvm.transform.PassContext(opt_level=3):
        if collector is None:
            from .layers import take_kept

            return take_kept(tvm.transform.Sequential(passes)(mod))[0]
        for p in passes:
            name = str(p.info.name)
            known = collector.before(mod, name)
            free = undefined_shape_vars(mod)
            try:
                new = tvm.transform.Sequential([p])(mod)
                lost = undefined_shape_vars(new) - free
                if lost:  # TVM 0.27's DecomposeOpsForInference does this to a shape computed at run time
                    raise RuntimeError(f"{name} left the shape var(s) {', '.join(sorted(lost))} undefined")
            except Exception as e:  # noqa: BLE001 - an optimization must never break a compile
                if name not in OPTIONAL_PASSES:
                    raise
                collector.skipped.append({"stage": f"pass {name}", "reason": last_line(e)[:300]})
                continue
            mod = collector.after(new, name, known)
        return mod


# passes inside a required stage that are optimizations only: where TVM fails on one (a
# CombineParallelMatmul whose shared operand is a constant), the stage goes on without it
# (DecomposeOpsForInference: batch norm and the like are legalized anyway)
OPTIONAL_PASSES = {"CombineParallelMatmul", "EliminateCommonSubexpr", "DecomposeOpsForInference"}


def build_pipeline(backend, target):
    """Relax passes after graph optimization: lower dataflow, plan memory, finalize for the VM."""
    import tvm

    tvm_backend = backend.tvm_pipeline()
    return tvm.transform.Sequential(tvm_backend.dataflow_lower_passes(target) + tvm_backend.finalize_passes(target))
