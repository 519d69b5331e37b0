"""The schedule rule for int8 convolutions on a dot-product instruction (AVX-512 VNNI, ARM dotprod).

int8 convolutions on a dot-product instruction (AVX-512 VNNI, ARM dotprod): ConvMatmul's
blocking, one instruction per lanes x 4 step."""

from __future__ import annotations

from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from ..vector import vector_lanes
from .rule_base import extent, fuse_epilogue, parallel, pick, reduction_blocks, schedule_producers, start, vectorize_inner, weights_dominate


class Int8Dot(CPUScheduleRule):
    """The int8_dot module's packed int8 conv: ConvMatmul's register blocking (rows x vectors of
    output channels, the reduction inside), with each lanes x 4 step done by one ``vpdpbusd`` (x86)
    or ``sdot`` (ARM)."""

    def __init__(self, max_rows: int = 28):
        self.max_rows = max_rows

    def apply(self, func, target, _):
        from ..int8_dot import ISAS

        sch, blocks = start(self, func, target)
        if sch is None:
            return None
        names = [sch.get(b).name_hint for b in blocks]
        found = [n for n in names if n in ISAS]
        if len(found) != 1 or len(reduction_blocks(sch, blocks)) != 1:
            return None
        isa = ISAS[found[0]]
        idx = names.index(isa.block)
        main, producers, consumers = blocks[idx], blocks[:idx], blocks[idx + 1:]
        loops = sch.get_loops(main)
        if len(loops) != 7:
            return None
        n, h, w, co, ry, rx, rc = loops
        ext = [extent(lp, sch) for lp in loops]
        if any(e is None for e in ext) or ext[3] % isa.lanes or ext[6] % 4:
            return None
        ok, epilogue = fuse_epilogue(sch, consumers)
        if not ok:
            return None
        nvec = pick(ext[3] // isa.lanes, list(isa.vectors))
        rows = pick(ext[2], list(range(max(1, min(self.max_rows, isa.accumulators // nvec)), 0, -1)))
        co_o, co_m, co_i = sch.split(co, factors=[None, nvec, isa.lanes])
        rc_o, rc_i = sch.split(rc, factors=[None, 4])
        w_o, w_i = sch.split(w, factors=[None, rows])
        first = [co_o, n, h, w_o] if weights_dominate(sch, main, 2) else [n, h, w_o, co_o]
        sch.reorder(*first, ry, rx, rc_o, w_i, co_m, co_i, rc_i)
        par = sch.fuse(*first)
        parallel(sch, par)
        if epilogue is not None:
            sch.reverse_compute_at(epilogue, par)
            vectorize_inner(sch, epilogue, vector_lanes(target, "float32"))
        init = sch.decompose_reduction(main, ry)
        sch.tensorize(co_i, isa.intrinsic())
        sch.unroll(w_i)
        sch.unroll(co_m)
        iloops = sch.get_loops(init)
        sch.vectorize(iloops[-1])
        schedule_producers(sch, producers, vector_lanes(target, "int8"))
        return sch
