"""Reductions along a strided axis: a norm over the steps of an NHWC tensor, channels innermost."""

from __future__ import annotations

from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from ..vector import vector_lanes
from .rule_base import extent, inline_into_last, parallel, pick, reduction_blocks, reduces_inner_axis, start


class Columns(CPUScheduleRule):
    """A norm whose reductions run along an outer axis while the contiguous innermost axis is kept
    (an instance or group norm after an NHWC convolution: the mean of each channel over every
    step). Row by row, each step of a channel's sum is a cache line of its own: wav2vec2's norm over
    3199 steps x 512 channels took 7.7 ms (ORT 0.8 ms). Here the channels are cut into blocks of a
    few vectors, one parallel loop over the blocks, and inside it every stage of the block runs
    with the steps outside and the block's channels as the vector: each step reads whole lines."""

    def apply(self, func, target, _):
        sch, blocks = start(self, func, target)
        if sch is None or len(blocks) < 2:
            return None
        reds = reduction_blocks(sch, blocks)
        if not reds or any(extent(lp, sch) is None for b in blocks for lp in sch.get_loops(b)):
            return None
        if any(reduces_inner_axis(sch, b) is not False for b in reds):
            return None
        blocks, loops = inline_into_last(sch, blocks)
        if loops is None:
            return None
        last = blocks[-1]
        lanes = vector_lanes(target, str(sch.get(last).writes[0].source.dtype))
        inner = extent(loops[-1], sch)
        if inner is None or inner < lanes or inner % lanes:
            return None
        width = pick(inner, [4 * lanes, 2 * lanes, lanes])
        while width > lanes and inner // width < 2:  # a block per thread at least
            width //= 2
        c_o, c_i = sch.split(loops[-1], factors=[None, width])
        sch.reorder(c_o, *loops[:-1], c_i)
        parallel(sch, c_o)
        sch.vectorize(c_i)
        for b in reversed(blocks[:-1]):
            sch.compute_at(b, c_o, preserve_unit_loops=False)
        for b in blocks[:-1]:
            self._vectorize_block(sch, b, width)
        return sch

    @staticmethod
    def _vectorize_block(sch, block, width: int) -> None:
        """The block's loop over the channel block innermost and vectorized (a reduction: its
        steps outside, its init split off)."""
        loops = sch.get_loops(block)[1:]  # below the parallel loop over channel blocks
        vec = [lp for lp in loops if extent(lp, sch) == width]
        if not vec:
            return
        rest = [lp for lp in loops if not sch.get(lp).same_as(sch.get(vec[-1]))]
        if rest:
            sch.reorder(*rest, vec[-1])
        sch.vectorize(sch.get_loops(block)[-1])
        if reduction_blocks(sch, [block]):
            init = sch.decompose_reduction(block, sch.get_loops(block)[1])
            sch.vectorize(sch.get_loops(init)[-1])
