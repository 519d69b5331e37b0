"""int8 convolutions on AVX-512 VNNI: ConvMatmul's blocking, one ``vpdpbusd`` per 16x4 step."""

from __future__ import annotations

from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from ..vector import vector_lanes
from .base import extent, fuse_epilogue, pick, reduction_blocks, schedule_producers, start, vectorize_inner, weights_dominate


class Int8Vnni(CPUScheduleRule):
    """The vnni module's packed int8 conv: ConvMatmul's register blocking, with each 16 output
    channels x 4 input channels step done by one ``vpdpbusd`` (TVM's dot_16x4_vnni intrinsic)."""

    def __init__(self, max_rows: int = 8, max_accumulators: int = 16):
        self.max_rows, self.max_acc = max_rows, max_accumulators

    def apply(self, func, target, _):
        from ..vnni import BLOCK, register_intrinsic

        sch, blocks = start(self, func, target)
        if sch is None:
            return None
        names = [sch.get(b).name_hint for b in blocks]
        if names.count(BLOCK) != 1 or len(reduction_blocks(sch, blocks)) != 1:
            return None
        idx = names.index(BLOCK)
        main, producers, consumers = blocks[idx], blocks[:idx], blocks[idx + 1:]
        loops = sch.get_loops(main)
        if len(loops) != 7:
            return None
        n, h, w, co, ry, rx, rc = loops
        ext = [extent(lp, sch) for lp in loops]
        if any(e is None for e in ext) or ext[3] % 16 or ext[6] % 4:
            return None
        ok, epilogue = fuse_epilogue(sch, consumers)
        if not ok:
            return None
        nvec = 2 if ext[3] % 32 == 0 else 1
        rows = pick(ext[2], list(range(max(1, min(self.max_rows, self.max_acc // nvec)), 0, -1)))
        co_o, co_m, co_i = sch.split(co, factors=[None, nvec, 16])
        rc_o, rc_i = sch.split(rc, factors=[None, 4])
        w_o, w_i = sch.split(w, factors=[None, rows])
        first = [co_o, n, h, w_o] if weights_dominate(sch, main, 2) else [n, h, w_o, co_o]
        sch.reorder(*first, ry, rx, rc_o, w_i, co_m, co_i, rc_i)
        par = sch.fuse(*first)
        sch.parallel(par)
        if epilogue is not None:
            sch.reverse_compute_at(epilogue, par)
            vectorize_inner(sch, epilogue, vector_lanes(target, "float32"))
        init = sch.decompose_reduction(main, ry)
        sch.tensorize(co_i, register_intrinsic())
        sch.unroll(w_i)
        sch.unroll(co_m)
        iloops = sch.get_loops(init)
        sch.vectorize(iloops[-1])
        schedule_producers(sch, producers, 64)  # uint8 lanes
        return sch
