"""int8 convolutions and matmuls on x86 CPUs with AVX-512 VNNI: one instruction, 64 multiply-adds.

``vpdpbusd`` multiplies unsigned 8-bit activations by signed 8-bit weights, four at a time, and
adds them into 16 int32 lanes. The int8 rewrite (quantize.py) leaves symmetric int8 x int8
convolutions (and ``conv2d(int16(x_q) - z, w)`` for activations with a zero point z); this stage
(after the NHWC layout pass) turns each one into:

    x_u8 = uint8(x + 128), padded spatially with 128 (int8 zero) and its channels up to a
           multiple of 4 (their weights are 0)
    acc  = conv_vnni(x_u8, W_packed) - 128 * sum(W)    exact: sum((x+128) w) = sum(x w) + 128 sum(w)

with the weights packed at compile time to [CO/16, KH, KW, CI/4, 16, 4], the layout the
instruction reads (one 64-byte load per 16 output channels x 4 input channels). The kernel is a
TE compute named ``conv2d_nhwc_vnni``; the default rules' ``Int8Vnni`` (rules/int8_vnni.py) tiles it and
tensorizes its inner 16x4 block with TVM's ``dot_16x4_vnni`` intrinsic. Output channels are
padded to a multiple of 16 (zero weights) and the extra outputs sliced off. With a zero point z
the same holds with 128 replaced by z + 128 (int8) or z (uint8 activations, used as they are).
An int8 matmul with constant [K, N] weights is a 1x1 convolution over the rows of its input:
it is reshaped to one and takes the same kernel. Grouped and depthwise convolutions keep the
int32 vector path.
"""

from __future__ import annotations

import numpy as np

BLOCK = "conv2d_nhwc_vnni"
INTRIN = "deploy_dot_16x4_vnni"


def supported(target) -> bool:
    """Whether the target's CPU has AVX-512 VNNI (and it is x86)."""
    from tvm.target import codegen

    from .features import is_x86

    if not is_x86(target):
        return False
    try:
        feats = {str(f) for f in codegen.llvm_get_cpu_features(target)}
    except Exception:  # noqa: BLE001 - an LLVM without this query: no VNNI path
        return False
    return "avx512vnni" in feats and "avx512bw" in feats


def pack_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HWIO int8 weights -> ([CO16/16, KH, KW, CI4/4, 16, 4] int8, per-channel sum int32).

    CI is zero-padded to a multiple of 4 (CI4) and CO to a multiple of 16 (CO16)."""
    kh, kw, ci, co = w.shape
    ci4, co16 = -(-ci // 4) * 4, -(-co // 16) * 16
    wp = np.zeros((kh, kw, ci4, co16), np.int8)
    wp[:, :, :ci, :co] = w
    packed = wp.reshape(kh, kw, ci4 // 4, 4, co16 // 16, 16).transpose(4, 0, 1, 2, 5, 3)
    wsum = w.astype(np.int32).sum(axis=(0, 1, 2))
    return np.ascontiguousarray(packed), wsum


def conv_vnni_func(x_shape, w_shape, out_shape, strides, dilation):
    """The TE compute of the packed convolution, as a PrimFunc."""
    from tvm import te, tirx

    def i64(v):  # Relax shapes are int64: the kernel's buffers must match them for FuseTIR
        return tirx.IntImm("int64", int(v))

    n, oh, ow, co = (int(v) for v in out_shape)
    _, kh, kw, ci4q, _, _ = (int(v) for v in w_shape)
    sh, sw, dh, dw = (i64(v) for v in (*strides, *dilation))
    X = te.placeholder([i64(v) for v in x_shape], "uint8", name="x")
    W = te.placeholder([i64(v) for v in w_shape], "int8", name="w")
    ry = te.reduce_axis((i64(0), i64(kh)), "ry")
    rx = te.reduce_axis((i64(0), i64(kw)), "rx")
    rc = te.reduce_axis((i64(0), i64(ci4q * 4)), "rc")
    out = te.compute(
        [i64(v) for v in (n, oh, ow, co)],
        lambda b, h, w_, c: te.sum(
            X[b, h * sh + ry * dh, w_ * sw + rx * dw, rc].astype("int32")
            * W[c // 16, ry, rx, rc // 4, c % 16, rc % 4].astype("int32"), axis=[ry, rx, rc]),
        name=BLOCK)
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


def vnni_rewrite(mod):
    """Rewrite int8 NHWC/HWIO conv2d and int8 matmul (constant [K, N] weights) with int32 output
    to the VNNI form; returns (mod, count)."""
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_op
    from ...optimize import rewrite_functions

    x_pat, w_pat, xq_pat, z_pat, conv, shifted, perm, conv_zp = int8_conv_patterns()
    matmul = is_op("relax.matmul")(x_pat, w_pat)
    funcs: dict[tuple, tvm.ir.GlobalVar] = {}
    bb = relax.BlockBuilder(mod)  # add_func gives the kernels GlobalVars typed as TIR callees
    count = [0]

    def to_u8(x):  # int8 -> uint8 by +128
        return relax.op.astype(relax.op.add(relax.op.astype(x, "int16"), relax.const(128, "int16")), "uint8")

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
            xu, zero = to_u8(x), 128  # the uint8 value that stands for 0
        else:
            x, z = m[xq_pat], m[z_pat].value.numpy()
            if z.size != 1 or str(x.ty.dtype) not in ("int8", "uint8") or str(m[z_pat].ty.dtype) != "int16":
                return orig
            if str(x.ty.dtype) == "int8":
                xu, zero = to_u8(x), int(z.reshape(())) + 128
            else:
                xu, zero = x, int(z.reshape(()))
            if perm in m:
                xu = relax.op.permute_dims(xu, m[perm].attrs.axes)
                x = m[perm]
        wv = w.value.numpy()
        n, h, w_, _ = (int(v) for v in x.ty.shape)
        return vnni_conv(xu, zero, wv, (n, h, w_), tuple(int(p) for p in a.padding),
                         tuple(int(s) for s in a.strides), tuple(int(d) for d in a.dilation),
                         tuple(int(v) for v in list(orig.ty.shape)[:3]))

    def vnni_conv(xu, zero, wv, in_nhw, padding, strides, dilation, out_nhw):
        """uint8 NHWC xu (``zero`` stands for 0) x HWIO int8 weights -> the exact int32 NHWC conv."""
        kh, kw, ci, co = wv.shape
        packed, wsum = pack_weights(wv)
        co16, ci4 = packed.shape[0] * 16, packed.shape[3] * 4
        top, left, bottom, right = padding
        pad = [0, 0, top, bottom, left, right, 0, ci4 - ci]
        if any(pad):
            xu = relax.op.nn.pad(xu, pad, pad_value=float(zero))
        n, h, w_ = in_nhw
        x_shape = (n, h + top + bottom, w_ + left + right, ci4)
        out_shape = tuple(out_nhw) + (co16,)
        key = (x_shape, packed.shape, out_shape, strides, dilation)
        if key not in funcs:
            funcs[key] = bb.add_func(conv_vnni_func(x_shape, packed.shape, out_shape, strides, dilation),
                                     f"{BLOCK}{len(funcs)}")
        call = relax.call_tir(funcs[key], [xu, relax.const(packed)],
                              out_ty=relax.TensorType(list(out_shape), "int32"))
        if co16 != co:  # the padded channels' outputs are dropped
            call = relax.op.strided_slice(call, axes=[3], begin=[0], end=[co])
        count[0] += 1
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
        xu = to_u8(relax.op.reshape(x, (1, 1, rows, k)))
        out = vnni_conv(xu, 128, w.value.numpy().reshape(1, 1, k, n_out), (1, 1, rows), (0, 0, 0, 0),
                        (1, 1), (1, 1), (1, 1, rows))
        return relax.op.reshape(out, lead + [n_out])

    mod = rewrite_functions(bb, mod, (conv_zp, lambda o, m: rewrite(o, m, zp_form=True)), (conv, rewrite),
                            (matmul, rewrite_matmul))
    return mod, count[0]


def register_intrinsic() -> str:
    """TVM's own dot_16x4_vnni calls vpdpbusd with <16 x i32> operands; the LLVM in TVM 0.27's
    wheel declares it with <64 x i8> ones and rejects the call. Same description, fixed call."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    try:
        TensorIntrin.get(INTRIN)
        return INTRIN
    except Exception:  # noqa: BLE001 - not registered yet
        pass
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
