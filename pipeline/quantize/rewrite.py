"""int8 at the Relax level: QDQ pairs around conv2d/matmul become int8 compute, right after import.

``relax.dequantize`` pairs feeding ``conv2d``/``matmul`` become a real int8 x int8 conv2d/matmul
with ``out_dtype="int32"``, followed by ``astype(float32) * (s_x * s_w[c])``. FuseOps later fuses
that rescale, the bias, the activation and the next layer's ``quantize`` into one elementwise
epilogue (requantization fused into the consumer). Weights stay int8 constants in the library.
Dequantize/quantize pairs on other ops (ORT puts them around pools and adds) stay as float
"fake quant" elementwise ops.
"""

from __future__ import annotations

import numpy as np

from .. import log


def _const_np(e):
    import tvm

    return e.value.numpy() if isinstance(e, tvm.ir.expr.Constant) else None


def int8_rewrite(mod):
    """conv2d/matmul over dequantized int8 operands -> integer compute with int32 accumulation.

    Weights must be int8 with zero point 0 (ONNX Runtime's default). Activations may be int8 or
    uint8, symmetric or not, with constant or run-time (DynamicQuantizeLinear) scale and zero point:

    - symmetric int8: ``conv2d/matmul(x_q, w_q, out_dtype=int32)``, int8 x int8;
    - matmul with a zero point z: ``matmul(x8, w_q) - z8 * colsum(w_q)`` (uint8 is moved to int8
      by subtracting 128 from values and zero point), still int8 x int8;
    - conv2d with a zero point: ``conv2d(int16(x_q) - z, w_q)``. The spatial padding must hold
      the value z, which a zero-padded conv of x_q cannot express; int16(x_q) - z pads with 0
      exactly. The VNNI stage (backends/cpu/int8_dot.py) turns this form back into uint8 x int8 with padding z.

    The result is ``astype(acc, float32) * (s_x * s_w[c])``, which FuseOps fuses with the bias, the
    activation and the next quantize into the conv's epilogue. Returns the module and
    {"conv": n, "matmul": n, "skipped": [...reasons]}.
    """
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, wildcard
    from tvm.relax.dpl.rewrite import rewrite_call

    stats = {"conv": 0, "matmul": 0, "skipped": []}
    xq, xs, xz = wildcard(), wildcard(), wildcard()
    wq, ws, wz = is_const(), is_const(), is_const()
    dq_x = is_op("relax.dequantize")(xq, xs, xz)
    dq_w = is_op("relax.dequantize")(wq, ws, wz)
    conv = is_op("relax.nn.conv2d")(dq_x, dq_w)
    conv1d = is_op("relax.nn.conv1d")(dq_x, dq_w)
    mm = is_op("relax.matmul")(dq_x, dq_w)
    mm_t = is_op("relax.matmul")(dq_x, is_op("relax.permute_dims")(dq_w))

    def operands(m):
        ws_, wz_ = _const_np(m[ws]), _const_np(m[wz])
        x_dtype, w_dtype = str(m[xq].ty.dtype), str(m[wq].ty.dtype)
        if x_dtype not in ("int8", "uint8") or w_dtype != "int8":
            return None, f"{x_dtype} x {w_dtype} operands (int8/uint8 x int8 only)"
        if np.any(wz_ != 0):
            return None, "weight zero point is not 0 (symmetric int8 weights only)"
        for p in (xs, xz):
            if int(np.prod([int(d) for d in m[p].ty.shape])) != 1:
                return None, "per-channel activation scale or zero point"
        xs_, xz_ = _const_np(m[xs]), _const_np(m[xz])
        zx = int(xz_.reshape(())) if xz_ is not None else m[xz]  # an int, or a run-time tensor
        return (x_dtype, zx, ws_.astype(np.float32)), None

    def rescale(acc, xs_expr, sw):
        sx = _const_np(xs_expr)
        if sx is not None:
            scale = relax.const(np.asarray(float(sx.reshape(())) * sw, np.float32))
        else:  # run-time activation scale (DynamicQuantizeLinear)
            scale = relax.op.multiply(relax.op.reshape(xs_expr, ()), relax.const(sw))
        return relax.op.multiply(relax.op.astype(acc, "float32"), scale)

    def rw_conv(orig, m, dims=2):
        ops, why = operands(m)
        kind = f"conv{dims}d"
        if ops is None:
            stats["skipped"].append(f"{kind}: {why}")
            return orig
        x_dtype, zx, sw = ops
        a = orig.attrs
        if (str(a.data_layout), str(a.kernel_layout)) != (("NCHW", "OIHW") if dims == 2 else ("NCW", "OIW")):
            stats["skipped"].append(f"{kind}: layout")
            return orig
        x = m[xq]
        if x_dtype != "int8" or not isinstance(zx, int) or zx != 0:
            z = relax.const(zx, "int16") if isinstance(zx, int) else relax.op.astype(zx, "int16")
            x = relax.op.subtract(relax.op.astype(x, "int16"), z)
        op = relax.op.nn.conv2d if dims == 2 else relax.op.nn.conv1d
        acc = op(x, m[wq], strides=a.strides, padding=a.padding, dilation=a.dilation, groups=a.groups,
                 data_layout=str(a.data_layout), kernel_layout=str(a.kernel_layout), out_dtype="int32")
        stats["conv"] += 1
        return rescale(acc, m[xs], sw.reshape(1, -1, *[1] * dims) if sw.size > 1 else sw.reshape(()))

    def rw_mm(orig, m, transposed=False):
        ops, why = operands(m)
        if ops is None:
            stats["skipped"].append(f"matmul: {why}")
            return orig
        x_dtype, zx, sw = ops
        if len(m[wq].ty.shape) != 2:
            stats["skipped"].append("matmul: weight is not 2-D")
            return orig
        w = m[wq]
        wv = _const_np(w).astype(np.int32)
        if transposed:
            w = relax.op.permute_dims(w, [1, 0])
            wv = wv.T
        x, z = m[xq], zx
        if x_dtype == "uint8":  # to int8: values and zero point both move down by 128
            x = relax.op.astype(relax.op.subtract(relax.op.astype(x, "int16"), relax.const(128, "int16")), "int8")
            z = zx - 128 if isinstance(zx, int) else relax.op.subtract(relax.op.astype(zx, "int32"),
                                                                       relax.const(128, "int32"))
        acc = relax.op.matmul(x, w, out_dtype="int32")
        colsum = wv.sum(axis=0).astype(np.int32)
        if not isinstance(z, int):
            acc = relax.op.subtract(acc, relax.op.multiply(relax.op.astype(relax.op.reshape(z, ()), "int32"),
                                                           relax.const(colsum)))
        elif z != 0:
            acc = relax.op.subtract(acc, relax.const((z * colsum).astype(np.int32)))
        stats["matmul"] += 1
        return rescale(acc, m[xs], sw.reshape(-1) if sw.size > 1 else sw.reshape(()))

    out = {}
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            func = rewrite_call(conv, _labelled(rw_conv), func)
            func = rewrite_call(conv1d, _labelled(lambda o, m: rw_conv(o, m, dims=1)), func)
            func = rewrite_call(mm, _labelled(rw_mm), func)
            func = rewrite_call(mm_t, _labelled(lambda o, m: rw_mm(o, m, True)), func)
            func = _exact_integer_outputs(func)
            func = _decompose_qdq(func)
        out[gv] = func
    new = mod.__class__(out, attrs=mod.attrs) if mod.attrs else mod.__class__(out)
    new = relax.transform.DeadCodeElimination()(new)
    return new, stats


def _labelled(rewriter):
    """``rewriter`` whose new calls carry the ONNX node label of the call they replace
    (frontend/provenance.py): the layer report, and the choice of precision by measured time
    (quantize/select.py), name the int8 kernels after their node."""
    from ..frontend import provenance

    def rw(orig, m):
        new = rewriter(orig, m)
        lbl = provenance.span_label(orig)
        return provenance.with_label(new, lbl) if lbl and not new.same_as(orig) else new

    return rw


def _exact_integer_outputs(func):
    """astype(astype(acc: int32, float32) * 1, int32) -> acc.

    ConvInteger/MatMulInteger (see qoperator.py) are imported as dequantize(scale 1) -> conv ->
    Cast(int32); without this, int32 results above 2**24 would round through float32.
    """
    from tvm.relax.dpl import is_const, is_op, wildcard
    from tvm.relax.dpl.rewrite import rewrite_call

    acc, one = wildcard(), is_const()
    pat = is_op("relax.astype")(is_op("relax.multiply")(is_op("relax.astype")(acc), one))

    def rw(orig, m):
        ok = (str(orig.ty.dtype) == "int32" and str(m[acc].ty.dtype) == "int32"
              and np.all(_const_np(m[one]) == 1))
        return m[acc] if ok else orig

    return rewrite_call(pat, rw, func)


def _decompose_qdq(func):
    """quantize/dequantize with constant parameters -> elementwise ops.

    Relax's layout conversion has no rule for quantize: left as is, every one of them sits between
    two transposes in an NHWC graph and becomes a kernel of its own. As divide/round/clip/astype it
    converts and fuses into the producing conv's epilogue like any elementwise op.
    """
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, wildcard
    from tvm.relax.dpl.rewrite import rewrite_call

    x, s, z = wildcard(), is_const(), is_const()

    def params(orig, m):
        ndim = len(orig.ty.shape)
        sv, zv = _const_np(m[s]).astype(np.float32), _const_np(m[z])
        if sv.size > 1:  # per-axis: broadcast along the op's axis
            shape = [1] * ndim
            shape[int(orig.attrs.axis) % ndim] = -1
            sv, zv = sv.reshape(shape), (zv.reshape(shape) if zv.size > 1 else zv.reshape(()))
        else:
            sv, zv = sv.reshape(()), zv.reshape(())
        return sv, zv

    def quantize(orig, m):
        dtype = str(orig.attrs.out_dtype)
        if dtype not in ("int8", "uint8") or str(m[x].ty.dtype) != "float32":
            return orig
        sv, zv = params(orig, m)
        info = np.iinfo(dtype)
        v = relax.op.round(relax.op.divide(m[x], relax.const(sv)))
        if np.any(zv != 0):
            v = relax.op.add(v, relax.const(zv.astype(np.float32)))
        v = relax.op.minimum(relax.op.maximum(v, relax.const(np.float32(info.min))), relax.const(np.float32(info.max)))
        return relax.op.astype(v, dtype)

    def dequantize(orig, m):
        if str(orig.attrs.out_dtype) != "float32" or str(m[x].ty.dtype) not in ("int8", "uint8", "int32"):
            return orig
        sv, zv = params(orig, m)
        v = relax.op.astype(m[x], "float32")
        if np.any(zv != 0):
            v = relax.op.subtract(v, relax.const(zv.astype(np.float32)))
        return relax.op.multiply(v, relax.const(sv))

    func = rewrite_call(is_op("relax.quantize")(x, s, z), _labelled(quantize), func)
    return rewrite_call(is_op("relax.dequantize")(x, s, z), _labelled(dequantize), func)


def log_stats(stats: dict) -> None:
    n = stats["conv"] + stats["matmul"]
    log.info(f"  int8 compute: {stats['conv']} conv, {stats['matmul']} matmul"
             + (f"; {len(stats['skipped'])} left in float ({'; '.join(sorted(set(stats['skipped'])))})"
                if stats["skipped"] else ""))
    if n == 0:
        log.warn("no convolution or matmul was rewritten to int8: the model computes in float")
