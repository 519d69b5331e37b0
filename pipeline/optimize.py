"""Stage 4, graph optimization: named pass pipelines per target family and opt level.

A pipeline is a list of (name, pass factory) stages; each stage can be dumped as IR.
- simplify (opt >= 1): fold batch norm into conv weights, decompose the rest for inference,
  fold constants, drop dead code and common subexpressions, merge parallel matmuls (opt 3).
- layout (opt >= 3, where it pays): CPU convolutions to NHWC, the layout TVM's x86 and ARM
  schedules vectorize best.
- winograd (with layout, float32): 3x3 stride-1 convolutions with many output tiles as
  Winograd F(4x4, 3x3), 4x fewer multiply-adds (winograd.py).
- lower: dispatch to libraries, legalize to TensorIR, fuse (opt >= 2), and for GPUs apply
  dlight's default schedules. The backend's own pass lists are reused (relax/backend/*).
"""

from __future__ import annotations

from collections.abc import Callable

PassList = list[tuple[str, Callable[[], list]]]


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


def _rewrite_pass(name: str, rewrite):
    """A module pass of ``rewrite(mod) -> (mod, count)`` (quantize_vnni's, winograd's)."""
    import tvm

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod, _ctx):
        return rewrite(mod)[0]

    return _pass


def _int8_vnni() -> list:
    from tvm import relax

    from .quantize_vnni import vnni_rewrite

    return [_rewrite_pass("Int8VnniConv2d", vnni_rewrite), relax.transform.FoldConstant()]


def _winograd() -> list:
    from tvm import relax

    from .winograd import winograd_rewrite

    return [_rewrite_pass("Conv2dWinogradF43", winograd_rewrite), relax.transform.FoldConstant()]


def _layout_cpu() -> list:
    from tvm import relax

    t = relax.transform
    return [t.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]}), t.FoldConstant(), t.DeadCodeElimination()]


def _lower(family: str, target, opt_level: int) -> list:
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.relax.backend.cuda import pipeline as cuda

    backend = cuda if family == "cuda" else cpu
    passes = backend.library_dispatch_passes(target) + backend.legalize_passes(target)
    if opt_level < 2:
        names = ("FuseOps", "FuseTIR")
        passes = [p for p in passes if not any(n in str(p.info.name) for n in names)]
    if family == "cpu" and prepack_weights(target):
        # lets tuned schedules pick the weight layout; the rewrite is folded into the constants
        passes.append(tvm.relax.transform.AttachAttrLayoutFreeBuffers())
    return passes


def prepack_weights(target) -> bool:
    """Weight layout rewriting is folded at compile time by running TIR on this host: x86 only."""
    from .cpu import arch_of_triple, host_arch

    return arch_of_triple(str(target.attrs.get("mtriple", "")) or host_arch()) == host_arch() == "x86_64"


def post_tuning_passes(family: str, target) -> list:
    """After tuned schedules are applied: split out weight layout rewrites and fold them."""
    from tvm import relax

    if family == "cpu" and prepack_weights(target):
        return [relax.transform.SplitLayoutRewritePreproc(), relax.transform.FoldConstant()]
    return []


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


def pipeline_for(family: str, target, opt_level: int, layout: bool | None = None,
                 precision: str = "fp32", int8: bool = False) -> PassList:
    """The named stages for a target family; ``layout`` overrides the opt-level default."""
    stages: PassList = []
    if opt_level >= 1:
        stages.append(("simplify", lambda: _simplify(opt_level)))
    use_layout = (opt_level >= 3 and family == "cpu") if layout is None else layout
    if use_layout and family == "cpu":
        stages.append(("layout", _layout_cpu))
        from .quantize_vnni import supported

        if int8 and supported(target):  # int8 NHWC convs -> AVX-512 VNNI kernels
            stages.append(("int8-vnni", _int8_vnni))
        if precision == "fp32":  # float32 3x3 convs -> Winograd F(4x4, 3x3)
            stages.append(("winograd", _winograd))
    if precision == "fp16":
        stages.append(("fp16", _fp16))
    stages.append(("lower", lambda: _lower(family, target, opt_level)))
    return stages


def run_stage(mod, passes: list, target):
    import tvm

    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(passes)(mod)


def build_pipeline(family: str, target):
    """Relax passes after graph optimization: lower dataflow, plan memory, finalize for the VM."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.relax.backend.cuda import pipeline as cuda

    backend = cuda if family == "cuda" else cpu
    return tvm.transform.Sequential(backend.dataflow_lower_passes(target) + backend.finalize_passes(target))
