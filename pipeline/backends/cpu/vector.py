"""The target's SIMD width, which the default schedules and Winograd's transforms tile by."""

from __future__ import annotations


def vector_lanes(target, dtype: str) -> int:
    """Elements of ``dtype`` per vector register (16 floats on AVX-512, 8 on AVX2, 4 on NEON)."""
    from tvm import DataType
    from tvm.target.codegen import llvm_get_vector_width

    bits = llvm_get_vector_width(target)
    if bits <= 0:
        bits = 128
    return max(1, bits // DataType(dtype).bits)
