"""Elementwise and layout kernels: one loop nest, parallel outside, vectors inside."""

from __future__ import annotations

from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from ..vector import vector_lanes
from .base import parallel_outer, reduction_blocks, start, vectorize_inner


class Injective(CPUScheduleRule):
    """Elementwise / layout ops: inline into the last block, parallel outside, vectors inside."""

    def apply(self, func, target, _):
        sch, blocks = start(self, func, target)
        if sch is None or reduction_blocks(sch, blocks):
            return None
        for b in blocks[:-1]:
            try:
                sch.compute_inline(b)
            except Exception:  # noqa: BLE001
                return None
        last = sch.get_child_blocks(sch.get_sblock("root"))
        if len(last) != 1:
            return None
        last = last[0]
        loops = sch.get_loops(last)
        if not loops:
            return None
        dtype = str(sch.get(last).writes[0].source.dtype)
        lanes = vector_lanes(target, dtype)
        vectorize_inner(sch, last, lanes)
        loops = sch.get_loops(last)
        parallel_outer(sch, loops[:-1] if len(loops) > 1 else loops)
        return sch
