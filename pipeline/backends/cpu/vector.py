"""The target's SIMD width, which the default schedules and Winograd's transforms tile by."""

from __future__ import annotations


def vector_bits(target) -> int:
    """Bits per vector register: 512 with AVX-512, 256 with AVX/AVX2, 128 otherwise on x86; LLVM's
    answer elsewhere (128 on NEON). TVM 0.27's ``llvm_get_vector_width`` answers 512 for every x86
    CPU, AVX2-only Haswell and Zen included: tiles made for 16 lanes there were twice the
    registers the CPU has, and every accumulator tile spilled to the stack."""
    from tvm.target.codegen import llvm_get_vector_width, target_has_features

    if "x86_64" in str(target.attrs.get("mtriple", "")) or str(target.attrs.get("mcpu", "")).startswith("x86-64"):
        if target_has_features("avx512f", target):
            return 512
        return 256 if target_has_features("avx", target) else 128
    bits = int(llvm_get_vector_width(target))
    return bits if bits > 0 else 128


def vector_lanes(target, dtype: str) -> int:
    """Elements of ``dtype`` per vector register (16 floats on AVX-512, 8 on AVX2, 4 on NEON)."""
    from tvm import DataType

    return max(1, vector_bits(target) // DataType(dtype).bits)


def vector_registers(target) -> int:
    """Vector registers the target has: 32 with AVX-512 and on AArch64, 16 with AVX2 (and SSE, NEON
    on 32-bit ARM). A register tile's accumulators, its weight vectors and the broadcast input
    must fit in them, or LLVM spills the tile to the stack in every step of the reduction."""
    from tvm.target.codegen import target_has_features

    triple = str(target.attrs.get("mtriple", ""))
    if triple.startswith("aarch64"):
        return 32
    if "x86_64" in triple and target_has_features("avx512f", target):
        return 32
    return 16
