"""int8 post-training quantization, in two halves.

1. ONNX level (after clean-up, before import): calibrate activation ranges on the float model,
   then write a QDQ model: every Conv and MatMul with a constant weight (Gemm is first rewritten
   to MatMul + Add) gets QuantizeLinear -> DequantizeLinear on its activation input (symmetric
   int8, scale from the calibrated range) and an int8 weight initializer with per-channel
   (or per-tensor) scales behind a DequantizeLinear. This is the same form ONNX Runtime's
   quantize_static writes, so pre-quantized QDQ models take the same road from here.
   Working in ONNX keeps the calibration keyed by ONNX tensor names, which Relax vars lose.

2. Relax level (right after import, before constant folding): ``relax.dequantize`` pairs feeding
   ``conv2d``/``matmul`` become a real int8 x int8 conv2d/matmul with ``out_dtype="int32"``,
   followed by ``astype(float32) * (s_x * s_w[c])``. FuseOps later fuses that rescale, the
   bias, the activation and the next layer's ``quantize`` into one elementwise epilogue
   (requantization fused into the consumer). Weights stay int8 constants in the library.
   Dequantize/quantize pairs on other ops (ORT puts them around pools and adds) stay as
   float "fake quant" elementwise ops.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import log
from .errors import DeployError


@dataclass
class QuantConfig:
    calibrator: str = "minmax"
    per_channel: bool = True
    exclude: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- ONNX: find and rewrite

def _inits(model) -> dict[str, onnx.TensorProto]:
    return {i.name: i for i in model.graph.initializer}


def gemm_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Gemm(A, B const, C) with alpha = beta = 1, transA = 0 -> MatMul(A, B') + C."""
    model = copy.deepcopy(model)
    inits = _inits(model)
    nodes = []
    for n in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if (n.op_type == "Gemm" and len(n.input) >= 2 and n.input[1] in inits and not attrs.get("transA", 0)
                and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0):
            w = numpy_helper.to_array(inits[n.input[1]])
            if attrs.get("transB", 0):
                w = w.T
            wname = n.input[1] + "_kn"
            model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w), wname))
            name = n.name or n.output[0]
            if len(n.input) > 2 and n.input[2]:
                mm_out = n.output[0] + "_mm"
                nodes.append(helper.make_node("MatMul", [n.input[0], wname], [mm_out], name=name))
                nodes.append(helper.make_node("Add", [mm_out, n.input[2]], [n.output[0]], name=name + "_bias"))
            else:
                nodes.append(helper.make_node("MatMul", [n.input[0], wname], [n.output[0]], name=name))
        else:
            nodes.append(n)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return _drop_unused_inits(model)


def _drop_unused_inits(model):
    used = {i for n in model.graph.node for i in n.input}
    used |= {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return model


def quantizable(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Conv (2-D) and MatMul nodes whose weight is a constant and whose activation is not."""
    inits = _inits(model)
    out = []
    for n in model.graph.node:
        if n.op_type == "Conv" and len(n.input) >= 2 and n.input[1] in inits and n.input[0] not in inits:
            if len(inits[n.input[1]].dims) == 4:
                out.append(n)
        elif n.op_type == "MatMul" and n.input[1] in inits and n.input[0] not in inits:
            if len(inits[n.input[1]].dims) == 2:
                out.append(n)
    return out


def node_name(n: onnx.NodeProto) -> str:
    return n.name or n.output[0]


def check_exclude(model: onnx.ModelProto, exclude: list[str]) -> None:
    names = {node_name(n) for n in model.graph.node}
    unknown = [e for e in exclude if e not in names]
    if unknown:
        q = [node_name(n) for n in quantizable(model)]
        raise DeployError(f"--exclude names unknown node(s) {unknown}",
                          hint="quantizable nodes: " + ", ".join(q[:30]) + (" ..." if len(q) > 30 else ""))


def activation_tensors(model: onnx.ModelProto, skip: set[str] = frozenset()) -> list[str]:
    seen: list[str] = []
    for n in quantizable(model):
        if node_name(n) not in skip and n.input[0] not in seen:
            seen.append(n.input[0])
    return seen


def _weight_q(w: np.ndarray, axis: int, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    if per_channel:
        other = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.abs(w).max(axis=other)
    else:
        amax = np.array(np.abs(w).max())
    scale = (np.maximum(amax, 1e-12) / 127.0).astype(np.float32)
    shape = [1] * w.ndim
    if per_channel:
        shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def insert_qdq(model: onnx.ModelProto, ranges: dict[str, tuple[float, float]], per_channel: bool = True,
               skip: set[str] = frozenset()) -> tuple[onnx.ModelProto, list[str]]:
    """A QDQ copy of the model; returns it and the names of the nodes quantized."""
    model = copy.deepcopy(model)
    inits = _inits(model)
    targets = {node_name(n) for n in quantizable(model) if node_name(n) not in skip}
    new_nodes, new_inits, done = [], [], []
    act_dq: dict[str, str] = {}
    sizes = {"float32": 0, "int8": 0}
    for n in model.graph.node:
        if node_name(n) not in targets:
            new_nodes.append(n)
            continue
        a = n.input[0]
        if a not in act_dq:
            lo, hi = ranges[a]
            s = max(abs(lo), abs(hi), 1e-8) / 127.0
            sn, zn = a + "_qscale", a + "_qzero"
            new_inits += [numpy_helper.from_array(np.array(s, np.float32), sn),
                          numpy_helper.from_array(np.array(0, np.int8), zn)]
            new_nodes.append(helper.make_node("QuantizeLinear", [a, sn, zn], [a + "_q"], name=a + "_quantize"))
            new_nodes.append(helper.make_node("DequantizeLinear", [a + "_q", sn, zn], [a + "_dq"],
                                              name=a + "_dequantize"))
            act_dq[a] = a + "_dq"
        wname = n.input[1]
        w = numpy_helper.to_array(inits[wname]).astype(np.float32)
        axis = 0 if n.op_type == "Conv" else 1
        q, scale = _weight_q(w, axis, per_channel)
        sizes["float32"] += w.nbytes
        sizes["int8"] += q.nbytes + scale.nbytes
        base = node_name(n) + "_w"
        new_inits += [numpy_helper.from_array(q, base + "_int8"), numpy_helper.from_array(scale, base + "_scale"),
                      numpy_helper.from_array(np.zeros(scale.shape, np.int8), base + "_zero")]
        attrs = {"axis": axis} if per_channel else {}
        new_nodes.append(helper.make_node("DequantizeLinear", [base + "_int8", base + "_scale", base + "_zero"],
                                          [base + "_dq"], name=base + "_dequantize", **attrs))
        n.input[0] = act_dq[a]
        n.input[1] = base + "_dq"
        new_nodes.append(n)
        done.append(node_name(n))
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    model.graph.initializer.extend(new_inits)
    if per_channel:
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx") and o.version < 13:
                o.version = 13
    model = _drop_unused_inits(model)
    model.doc_string = f"deploy-int8 weight bytes: {sizes['float32']} -> {sizes['int8']}"
    return model, done


def weight_bytes(qdq: onnx.ModelProto) -> dict:
    """{"float32": bytes before, "int8": bytes after} of the quantized weights (from insert_qdq)."""
    import re

    m = re.search(r"weight bytes: (\d+) -> (\d+)", qdq.doc_string or "")
    return {"float32": int(m[1]), "int8": int(m[2])} if m else {}


# ---------------------------------------------------------------- Relax: QDQ -> int8 compute

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
      exactly. The VNNI stage (quantize_vnni) turns this form back into uint8 x int8 with padding z.

    The result is ``astype(acc, float32) * (s_x * s_w[c])``, which FuseOps fuses with the bias, the
    activation and the next quantize into the conv's epilogue. Returns the module and
    {"conv2d": n, "matmul": n, "skipped": [...reasons]}.
    """
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, wildcard
    from tvm.relax.dpl.rewrite import rewrite_call

    stats = {"conv2d": 0, "matmul": 0, "skipped": []}
    xq, xs, xz = wildcard(), wildcard(), wildcard()
    wq, ws, wz = is_const(), is_const(), is_const()
    dq_x = is_op("relax.dequantize")(xq, xs, xz)
    dq_w = is_op("relax.dequantize")(wq, ws, wz)
    conv = is_op("relax.nn.conv2d")(dq_x, dq_w)
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

    def rw_conv(orig, m):
        ops, why = operands(m)
        if ops is None:
            stats["skipped"].append(f"conv2d: {why}")
            return orig
        x_dtype, zx, sw = ops
        a = orig.attrs
        if str(a.data_layout) != "NCHW" or str(a.kernel_layout) != "OIHW":
            stats["skipped"].append("conv2d: layout")
            return orig
        x = m[xq]
        if x_dtype != "int8" or not isinstance(zx, int) or zx != 0:
            z = relax.const(zx, "int16") if isinstance(zx, int) else relax.op.astype(zx, "int16")
            x = relax.op.subtract(relax.op.astype(x, "int16"), z)
        acc = relax.op.nn.conv2d(x, m[wq], strides=a.strides, padding=a.padding, dilation=a.dilation,
                                 groups=a.groups, data_layout="NCHW", kernel_layout="OIHW", out_dtype="int32")
        stats["conv2d"] += 1
        return rescale(acc, m[xs], sw.reshape(1, -1, 1, 1) if sw.size > 1 else sw.reshape(()))

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
            func = rewrite_call(conv, rw_conv, func)
            func = rewrite_call(mm, rw_mm, func)
            func = rewrite_call(mm_t, lambda o, m: rw_mm(o, m, True), func)
            func = _exact_integer_outputs(func)
            func = _decompose_qdq(func)
        out[gv] = func
    new = mod.__class__(out, attrs=mod.attrs) if mod.attrs else mod.__class__(out)
    new = relax.transform.DeadCodeElimination()(new)
    return new, stats


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

    func = rewrite_call(is_op("relax.quantize")(x, s, z), quantize, func)
    return rewrite_call(is_op("relax.dequantize")(x, s, z), dequantize, func)


def has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def log_stats(stats: dict) -> None:
    n = stats["conv2d"] + stats["matmul"]
    log.info(f"  int8 compute: {stats['conv2d']} conv2d, {stats['matmul']} matmul"
             + (f"; {len(stats['skipped'])} left in float ({'; '.join(sorted(set(stats['skipped'])))})"
                if stats["skipped"] else ""))
    if n == 0:
        log.warn("no convolution or matmul was rewritten to int8: the model computes in float")


# ---------------------------------------------------------------- accuracy and the whole int8 step

def accuracy(ref: list[dict], ours: list[dict]) -> dict:
    """Per output: cosine similarity, max abs error, top-1 agreement (classifier outputs); and `drop`."""
    report, drop = {}, 0.0
    for name in ref[0]:
        r = np.stack([np.asarray(s[name], np.float64) for s in ref])
        o = np.stack([np.asarray(s[name], np.float64) for s in ours])
        cos = float(np.dot(r.ravel(), o.ravel()) / max(np.linalg.norm(r) * np.linalg.norm(o), 1e-30))
        entry = {"cosine": round(cos, 6), "max_abs_error": float(np.abs(r - o).max())}
        shape = r.shape[1:]
        if len(shape) == 2 and shape[-1] > 1:  # [batch, classes]
            agree = float(np.mean(r.reshape(-1, shape[-1]).argmax(-1) == o.reshape(-1, shape[-1]).argmax(-1)))
            entry["top1_agreement"] = round(agree, 4)
            drop = max(drop, 1.0 - agree)
        else:
            drop = max(drop, 1.0 - cos)
        report[name] = entry
    return {"outputs": report, "drop": round(drop, 6), "samples": len(ref)}


def format_accuracy(acc: dict) -> str:
    parts = []
    for name, e in acc["outputs"].items():
        s = f"{name}: cosine {e['cosine']:.5f}, max error {e['max_abs_error']:.4g}"
        if "top1_agreement" in e:
            s += f", top-1 agreement {100 * e['top1_agreement']:.1f}%"
        parts.append(s)
    return f"on {acc['samples']} held-out sample(s): " + "; ".join(parts)


@dataclass
class Int8Result:
    model: onnx.ModelProto          # the QDQ model to import
    held_out: list[dict]            # samples for the accuracy report
    reference: list[dict]           # float outputs on them
    info: dict                      # for the manifest


def prepare_int8(model: onnx.ModelProto, specs: list[dict], calibration, calibrator: str = "minmax",
                 per_channel: bool = True, exclude: list[str] | None = None,
                 max_accuracy_drop: float | None = None, random_calibration: bool = False) -> Int8Result:
    """Calibrate, write the QDQ model, and (with a gate) fall back the most sensitive layers to float."""
    from . import calibrate as cal

    exclude = list(exclude or [])
    if calibrator not in cal.CALIBRATORS:
        raise DeployError(f"unknown calibrator '{calibrator}'", hint=f"use one of {', '.join(cal.CALIBRATORS)}")
    if has_qdq(model):
        raise DeployError("this model is already quantized (it has QuantizeLinear/DequantizeLinear nodes)",
                          hint="compile it without --quantize: its QDQ pairs are compiled to int8 as they are")
    if calibration is None:
        if not random_calibration:
            raise DeployError("--quantize int8 needs calibration data",
                              hint="pass --calibration DATA (.npz or a directory of .npy/.npz keyed by input name); "
                                   "--random-calibration uses random inputs, for testing only")
        log.warn("calibrating on random inputs: the int8 model's accuracy is meaningless")
        samples, digest = cal.random_calibration(specs), "random"
    else:
        samples, digest = cal.load_calibration(calibration, specs)
    calib, held = cal.split(samples)
    model = gemm_to_matmul(model)
    check_exclude(model, exclude)
    acts = activation_tensors(model)
    ranges = cal.collect_ranges(model, acts, calib, calibrator)
    reference = cal.run_onnx(model, held)
    outputs = list(reference[0])

    def measure(qm):
        return accuracy(reference, cal.run_onnx(qm, held, outputs))

    skip = set(exclude)
    qm, done = insert_qdq(model, ranges, per_channel, skip)
    acc = measure(qm)
    fallback: list[str] = []
    sensitivity: dict[str, float] = {}
    if max_accuracy_drop is not None and acc["drop"] > max_accuracy_drop:
        log.info(f"  accuracy drop {acc['drop']:.4f} > {max_accuracy_drop}: measuring each layer's sensitivity")
        for name in done:
            only = set(done) - {name} | skip
            sensitivity[name] = measure(insert_qdq(model, ranges, per_channel, only)[0])["drop"]
        order = sorted(done, key=lambda n: -sensitivity[n])
        for name in order:
            fallback.append(name)
            qm, kept = insert_qdq(model, ranges, per_channel, skip | set(fallback))
            acc = measure(qm)
            log.info(f"  {name} falls back to float (sensitivity {sensitivity[name]:.4f}): drop now {acc['drop']:.4f}")
            if acc["drop"] <= max_accuracy_drop:
                break
        done = [n for n in done if n not in fallback]
        if acc["drop"] > max_accuracy_drop:
            raise DeployError(f"int8 accuracy gate failed: drop {acc['drop']:.4f} > --max-accuracy-drop "
                              f"{max_accuracy_drop} even with every layer in float\n    " + format_accuracy(acc),
                              hint="raise --max-accuracy-drop, use more representative calibration data, or "
                                   "compile without --quantize")
    log.info(f"  quantized {len(done)} layer(s) with {calibrator} on {len(calib)} sample(s)"
             + (f"; in float: {', '.join(fallback + exclude)}" if fallback or exclude else ""))
    info = {"scheme": "int8 symmetric, weights per-" + ("channel" if per_channel else "tensor")
                      + ", activations per-tensor; int32 accumulation",
            "calibrator": calibrator, "calibration_sha256": digest,
            "calibration_samples": len(calib), "held_out_samples": len(held),
            "quantized_layers": done, "excluded": exclude, "fallback": fallback,
            "sensitivity": sensitivity, "max_accuracy_drop": max_accuracy_drop,
            "quantized_weight_bytes": weight_bytes(qm),
            "simulated_accuracy": acc}
    return Int8Result(qm, held, reference, info)


class Int8Hook:
    """The ONNX hook that quantizes a cleaned-up model (calibration and QDQ, once): compile and
    tune run it on the same cleaned-up graph, so tuning sees the int8 kernels compile builds."""

    def __init__(self, calibration, calibrator: str = "minmax", per_channel: bool = True,
                 exclude: list[str] | None = None, max_accuracy_drop: float | None = None,
                 random_calibration: bool = False):
        self.kw = dict(calibration=calibration, calibrator=calibrator, per_channel=per_channel,
                       exclude=list(exclude or []), max_accuracy_drop=max_accuracy_drop,
                       random_calibration=random_calibration)
        self.result: Int8Result | None = None

    def __call__(self, cleaned: onnx.ModelProto) -> onnx.ModelProto:
        from .modelinfo import graph_inputs

        if self.result is None:
            specs = [s.to_dict() for s in graph_inputs(cleaned)]
            self.result = prepare_int8(cleaned, specs, **self.kw)
        return self.result.model
