"""The last resort: the outermost data-parallel loops of each block run in parallel."""

from __future__ import annotations

from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from .rule_base import SPATIAL, parallel_outer, plain_block, start


class Parallel(CPUScheduleRule):
    """Last resort: run the outermost data-parallel loop of each top-level block in parallel."""

    def apply(self, func, target, _):
        sch, blocks = start(self, func, target)
        if sch is None:
            return None
        changed = False
        for b in blocks:
            plain = plain_block(sch, b)
            if plain is None:
                continue
            loops, kinds = plain
            lead = []
            for lp, k in zip(loops, kinds):
                if k != SPATIAL:
                    break
                lead.append(lp)
            if lead:
                parallel_outer(sch, lead)
                changed = True
        return sch if changed else None
