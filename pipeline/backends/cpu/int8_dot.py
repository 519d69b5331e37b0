"""int8 convolutions and matmuls on CPU dot-product instructions: x86's AVX-512 VNNI and ARM's dotprod.

Both instructions multiply 8-bit activations by 8-bit weights four at a time and add each group of
four products into one int32 lane:

- AVX-512 VNNI ``vpdpbusd``: unsigned 8-bit activations x signed 8-bit weights, 16 int32 lanes
  (64 multiply-adds per instruction);
- ARMv8.2 dotprod ``sdot`` (Cortex-A76/A78, Raspberry Pi 5, Jetson Orin's CPU): signed x signed,
  4 int32 lanes (16 multiply-adds).

The int8 rewrite (quantize/rewrite.py) leaves symmetric int8 x int8 convolutions (and
``conv2d(int16(x_q) - z, w)`` for activations with a zero point z); this stage (after the NHWC
layout pass) turns each one into:

    x_k = x + shift, in the instruction's activation type (VNNI: uint8, shift 128 for int8
          activations; sdot: int8, shift -128 for uint8 ones, else none), padded spatially with
          the value that stands for 0 and its channels up to a multiple of 4 (their weights are 0)
    acc = conv_dot(x_k, W_packed) - zero * sum(W)     exact: sum((x + zero) w) = sum(x w) + zero sum(w)

with the weights packed at compile time to [CO/L, KH, KW, CI/4, L, 4] for L int32 lanes, the
layout the instruction reads (one load per L output channels x 4 input channels). The kernel is
a TE compute named after the instruction (``conv2d_nhwc_vnni``, ``conv2d_nhwc_sdot``); the
default rules' ``Int8Dot`` (rules/int8_dot_schedule.py) tiles it and tensorizes its inner Lx4 block with the
instruction. Output channels are padded to a multiple of L (zero weights) and the extra outputs
sliced off. An int8 matmul with constant [K, N] weights is a 1x1 convolution over the rows of its
input: it is reshaped to one and takes the same kernel. Grouped and depthwise convolutions have no
channel reduction to give the instruction: they keep the int32 vector path (or int8_grouped's
exact float32 one on x86).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class DotIsa:
    """One CPU's 8-bit dot-product instruction, as the rewrite and the default rule use it."""

    stage: str        # the compile stage's name (and --dump-ir's file)
    block: str        # the kernel's block name, which the default rule recognizes
    lanes: int        # int32 outputs per instruction
    act_dtype: str    # the activations' type the instruction takes
    vectors: tuple    # output vectors per register block, tried in order (each must divide CO/lanes)
    accumulators: int  # registers the block may hold as accumulators
    register: Callable[[], str]  # registers the TensorIntrin that does one lanes x 4 step; returns its name

    def intrinsic(self) -> str:
        return self.register()


def i64(v):
    """An int64 constant: Relax shapes are int64, and a kernel's buffers must match them for FuseTIR."""
    from tvm import tirx

    return tirx.IntImm("int64", int(v))


def isa_for(target) -> DotIsa | None:
    """The dot-product instruction the target's CPU has: AVX-512 VNNI on x86, dotprod on aarch64."""
    from .features import is_x86, llvm_features, target_arch

    try:
        feats = llvm_features(target)
    except Exception:  # noqa: BLE001 - an LLVM without this query: no dot-product path
        return None
    if is_x86(target):
        return VNNI if {"avx512vnni", "avx512bw"} <= feats else None
    if target_arch(target) == "aarch64":
        return SDOT if "dotprod" in feats else None
    return None


def supported(target) -> bool:
    """Whether the target's CPU has AVX-512 VNNI (and it is x86)."""
    return isa_for(target) is VNNI


def pack_weights(w: np.ndarray, lanes: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """HWIO int8 weights -> ([CO_L/lanes, KH, KW, CI4/4, lanes, 4] int8, per-channel sum int32).

    CI is zero-padded to a multiple of 4 (CI4) and CO to a multiple of ``lanes`` (CO_L)."""
    kh, kw, ci, co = w.shape
    ci4, col = -(-ci // 4) * 4, -(-co // lanes) * lanes
    wp = np.zeros((kh, kw, ci4, col), np.int8)
    wp[:, :, :ci, :co] = w
    packed = wp.reshape(kh, kw, ci4 // 4, 4, col // lanes, lanes).transpose(4, 0, 1, 2, 5, 3)
    wsum = w.astype(np.int32).sum(axis=(0, 1, 2))
    return np.ascontiguousarray(packed), wsum


def conv_dot_func(isa: DotIsa, x_shape, w_shape, out_shape, strides, dilation):
    """The TE compute of the packed convolution, as a PrimFunc."""
    from tvm import te

    n, oh, ow, co = (int(v) for v in out_shape)
    _, kh, kw, ci4q, lanes, _ = (int(v) for v in w_shape)
    sh, sw, dh, dw = (i64(v) for v in (*strides, *dilation))
    X = te.placeholder([i64(v) for v in x_shape], isa.act_dtype, name="x")
    W = te.placeholder([i64(v) for v in w_shape], "int8", name="w")
    ry = te.reduce_axis((i64(0), i64(kh)), "ry")
    rx = te.reduce_axis((i64(0), i64(kw)), "rx")
    rc = te.reduce_axis((i64(0), i64(ci4q * 4)), "rc")
    out = te.compute(
        [i64(v) for v in (n, oh, ow, co)],
        lambda b, h, w_, c: te.sum(
            X[b, h * sh + ry * dh, w_ * sw + rx * dw, rc].astype("int32")
            * W[c // lanes, ry, rx, rc // 4, c % lanes, rc % 4].astype("int32"), axis=[ry, rx, rc]),
        name=isa.block)
    return te.create_prim_func([X, W, out]).without_attr("global_symbol")


def int8_conv_patterns():
    """The int8 convolutions int8_rewrite leaves: ``conv2d(x, w)`` with constant weights, and its
    form for activations with a zero point z, ``conv2d(int16(x_q) - z, w)`` (a model input in NCHW
    reaches the conv through the layout pass's transpose). Returns the patterns
    (x, w, x_q, z, conv, shifted, perm, conv_zp)."""
    from tvm.relax.dpl import is_const, is_op, wildcard

    x_pat, w_pat, xq_pat, z_pat = wildcard(), is_const(), wildcard(), is_const()
    conv = is_op("relax.nn.conv2d")(x_pat, w_pat)
    shifted = is_op("relax.subtract")(is_op("relax.astype")(xq_pat), z_pat)
    perm = is_op("relax.permute_dims")(shifted)
    conv_zp = is_op("relax.nn.conv2d")(shifted | perm, w_pat)
    return x_pat, w_pat, xq_pat, z_pat, conv, shifted, perm, conv_zp


def dot_rewrite(mod, isa: DotIsa):
    """Rewrite int8 NHWC/HWIO conv2d and int8 matmul (constant [K, N] weights) with int32 output
    to the instruction's packed form; returns (mod, count)."""
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_op
    from ...relax_helpers import rewrite_functions

    x_pat, w_pat, xq_pat, z_pat, conv, shifted, perm, conv_zp = int8_conv_patterns()
    matmul = is_op("relax.matmul")(x_pat, w_pat)
    funcs: dict[tuple, tvm.ir.GlobalVar] = {}
    bb = relax.BlockBuilder(mod)  # add_func gives the kernels GlobalVars typed as TIR callees
    count = [0]

    def to_kernel(x, src: str):
        """int8 or uint8 (``src``) activations -> the instruction's type, and the shift added (+-128 or 0)."""
        if src == isa.act_dtype:
            return x, 0
        shift = 128 if src == "int8" else -128
        return relax.op.astype(relax.op.add(relax.op.astype(x, "int16"), relax.const(shift, "int16")),
                               isa.act_dtype), shift

    def rewrite(orig, m, zp_form=False):
        a = orig.attrs
        w = m[w_pat]
        if (str(a.data_layout) != "NHWC" or str(a.kernel_layout) != "HWIO" or int(a.groups) != 1
                or str(a.out_dtype) != "int32" or str(w.ty.dtype) != "int8"):
            return orig
        if not zp_form:
            x = m[x_pat]
            if str(x.ty.dtype) != "int8":
                return orig
            xk, zero = to_kernel(x, "int8")  # the kernel's value that stands for 0
        else:
            x, z = m[xq_pat], m[z_pat].value.numpy()
            if z.size != 1 or str(x.ty.dtype) not in ("int8", "uint8") or str(m[z_pat].ty.dtype) != "int16":
                return orig
            xk, shift = to_kernel(x, str(x.ty.dtype))
            zero = int(z.reshape(())) + shift
            if perm in m:
                xk = relax.op.permute_dims(xk, m[perm].attrs.axes)
                x = m[perm]
        wv = w.value.numpy()
        n, h, w_, _ = (int(v) for v in x.ty.shape)
        return dot_conv(xk, zero, wv, (n, h, w_), tuple(int(p) for p in a.padding),
                        tuple(int(s) for s in a.strides), tuple(int(d) for d in a.dilation),
                        tuple(int(v) for v in list(orig.ty.shape)[:3]))

    def dot_conv(xk, zero, wv, in_nhw, padding, strides, dilation, out_nhw):
        """NHWC xk in the instruction's type (``zero`` stands for 0) x HWIO int8 weights -> the exact
        int32 NHWC conv."""
        kh, kw, ci, co = wv.shape
        packed, wsum = pack_weights(wv, isa.lanes)
        col, ci4 = packed.shape[0] * isa.lanes, packed.shape[3] * 4
        top, left, bottom, right = padding
        pad = [0, 0, top, bottom, left, right, 0, ci4 - ci]
        if any(pad):
            xk = relax.op.nn.pad(xk, pad, pad_value=float(zero))
        n, h, w_ = in_nhw
        x_shape = (n, h + top + bottom, w_ + left + right, ci4)
        out_shape = tuple(out_nhw) + (col,)
        key = (x_shape, packed.shape, out_shape, strides, dilation)
        if key not in funcs:
            funcs[key] = bb.add_func(conv_dot_func(isa, x_shape, packed.shape, out_shape, strides, dilation),
                                     f"{isa.block}{len(funcs)}")
        call = relax.call_tir(funcs[key], [xk, relax.const(packed)],
                              out_ty=relax.TensorType(list(out_shape), "int32"))
        if col != co:  # the padded channels' outputs are dropped
            call = relax.op.strided_slice(call, axes=[3], begin=[0], end=[co])
        count[0] += 1
        if zero == 0:
            return call
        # sum((x + zero) w) = sum(x w) + zero * sum(w), so subtract zero * sum(w)
        return relax.op.subtract(call, relax.const((zero * wsum).astype(np.int32).reshape(1, 1, 1, co)))

    def rewrite_matmul(orig, m):
        """x[..., K] @ w[K, N] is a 1x1 conv over the rows of x: the same kernel."""
        x, w = m[x_pat], m[w_pat]
        if (str(orig.attrs.out_dtype) != "int32" or str(x.ty.dtype) != "int8" or str(w.ty.dtype) != "int8"
                or len(w.ty.shape) != 2):
            return orig
        lead = [int(d) for d in x.ty.shape][:-1]
        k, n_out = (int(d) for d in w.ty.shape)
        rows = int(np.prod(lead)) if lead else 1
        xk, zero = to_kernel(relax.op.reshape(x, (1, 1, rows, k)), "int8")
        out = dot_conv(xk, zero, w.value.numpy().reshape(1, 1, k, n_out), (1, 1, rows), (0, 0, 0, 0),
                       (1, 1), (1, 1), (1, 1, rows))
        return relax.op.reshape(out, lead + [n_out])

    mod = rewrite_functions(bb, mod, (conv_zp, lambda o, m: rewrite(o, m, zp_form=True)), (conv, rewrite),
                            (matmul, rewrite_matmul))
    return mod, count[0]


def _register_sdot() -> str:
    """TVM's own 4x4 sdot intrinsic (4 int32 lanes, each the dot product of 4 int8 pairs)."""
    from .intrinsics import light_tensor_intrinsics

    light_tensor_intrinsics()  # not the ~30 s import of every backend's intrinsics
    from tvm.s_tir.tensor_intrin import arm_cpu

    return arm_cpu.ARM_DOT_4x4_i8_SDOT_INTRIN


def _register_vnni() -> str:
    """TVM's own dot_16x4_vnni calls vpdpbusd with <16 x i32> operands; the LLVM in TVM 0.27's
    wheel declares it with <64 x i8> ones and rejects the call. Same description, fixed call."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    try:
        TensorIntrin.get(INTRIN)
        return INTRIN
    except Exception:  # noqa: BLE001 - not registered yet
        pass
    from .intrinsics import light_tensor_intrinsics

    light_tensor_intrinsics()
    from tvm.s_tir.tensor_intrin.x86 import dot_product_16x4_u8i8i32_desc as desc

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), "uint8", offset_factor=1), B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            a_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            a_u8x64 = T.reinterpret(T.broadcast(a_i32, 16), dtype="uint8x64")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"), a_u8x64, B.vload([0, 0], dtype="int8x64"), dtype="int32x16")

    TensorIntrin.register(INTRIN, desc, impl)
    return INTRIN


INTRIN = "deploy_dot_16x4_vnni"
# 28 of AVX-512's 32 registers as accumulators: 28 rows of a 1x1 conv's 16 output channels
# (14 of 32) share each weight load. MobileNetV2's 24->144 expand at 56x56: 0.146 -> 0.105 ms
# against 16; none of ResNet-50's int8 kernels got slower.
VNNI = DotIsa("int8-vnni", "conv2d_nhwc_vnni", 16, "uint8", (2, 1), 28, _register_vnni)
SDOT = DotIsa("int8-dotprod", "conv2d_nhwc_sdot", 4, "int8", (4, 2, 1), 16, _register_sdot)
ISAS = {isa.block: isa for isa in (VNNI, SDOT)}
