"""float16 and bfloat16 models: accumulate in float32, round once.

TVM computes a float16 matmul, convolution, softmax or sum in float16 throughout, summing in
float16, and expands sigmoid, tanh, erf, ... into several float16 steps, each rounded; ONNX
Runtime accumulates and evaluates them in float32 and rounds the result once, and the float16
answers drift apart by several units in the last place (the conformance suite's float16
attention and causal convolution). Right after import, every such op on float16/bfloat16 tensors
computes in float32 and casts its result back: the model's types stay as exported.

(``--precision fp16`` converts a float32 model and sets float32 accumulation itself; a float32
model has nothing for this pass to do.)
"""

from __future__ import annotations

HALF = ("float16", "bfloat16")
_ACCUMULATE = ("relax.matmul", "relax.nn.conv1d", "relax.nn.conv2d", "relax.nn.conv3d")
_IN_FLOAT = ("relax.nn.softmax", "relax.nn.log_softmax", "relax.sum", "relax.mean", "relax.nn.layer_norm",
             "relax.nn.rms_norm", "relax.nn.group_norm", "relax.variance", "relax.cumsum",
             # transcendental functions, which TVM expands into several float16 steps each rounded
             "relax.sigmoid", "relax.exp", "relax.log", "relax.tanh", "relax.erf", "relax.sqrt", "relax.rsqrt",
             "relax.sin", "relax.cos", "relax.tan", "relax.nn.silu", "relax.nn.gelu", "relax.nn.gelu_tanh",
             "relax.nn.softplus", "relax.power")


def _dtype(e) -> str | None:
    ty = getattr(e, "ty", None)
    return str(ty.dtype) if ty is not None and hasattr(ty, "dtype") else None


def accumulate_in_float(mod):
    """``mod`` with float16/bfloat16 reductions computed in float32 (see the module doc)."""
    import tvm
    from tvm import relax

    from .provenance import relax_functions

    changed = []

    @relax.expr_functor.mutator
    class Widen(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            name = getattr(call.op, "name", None)
            if name not in _ACCUMULATE + _IN_FLOAT or not call.args:
                return call
            half = _dtype(call)
            if half not in HALF or any(_dtype(a) not in HALF for a in call.args if _dtype(a) is not None):
                return call
            bb = self.builder_
            if name in _ACCUMULATE:
                if call.attrs.out_dtype is not None and str(call.attrs.out_dtype) not in ("", "void", "None", half):
                    return call
                if name == "relax.matmul":
                    new = relax.op.matmul(*call.args, out_dtype="float32")
                else:
                    a = call.attrs
                    conv = getattr(relax.op.nn, name.rsplit(".", 1)[1])
                    new = conv(*call.args, strides=a.strides, padding=a.padding, dilation=a.dilation, groups=a.groups,
                               data_layout=a.data_layout, kernel_layout=a.kernel_layout, out_layout=a.out_layout,
                               out_dtype="float32")
                wide = relax.Call(new.op, new.args, new.attrs, new.ty_args, call.span)
            else:
                args = [bb.normalize(relax.op.astype(a, "float32")) if _dtype(a) in HALF else a for a in call.args]
                wide = relax.Call(call.op, args, call.attrs, call.ty_args, call.span)
            changed.append(name)
            return relax.op.astype(bb.normalize(wide), half)

    funcs = dict(mod.functions_items())
    for gv, func in relax_functions(mod):
        funcs[gv] = Widen(mod).visit_expr(func)
    if not changed:
        return mod
    return tvm.IRModule(funcs, attrs=mod.attrs, global_infos=mod.global_infos)
