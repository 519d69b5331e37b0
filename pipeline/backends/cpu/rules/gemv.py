"""Gemv: a batch-1 dense layer (matrix x vector) with constant weights, its weights in panels.

ConvMatmul's blocking with the output channels outermost, up to 4 vectors of them per task step (independent accumulators along
the reduction), and the weights prepacked as panels, [N / tile, K, tile], so that each task
streams its own contiguous panel once (a classifier's 1024 x 1000 Gemm, whatever its transB)."""

from __future__ import annotations

from .conv_matmul import ConvMatmul


class Gemv(ConvMatmul):
    """ConvMatmul for one output row and constant weights."""

    gemv_only = True
