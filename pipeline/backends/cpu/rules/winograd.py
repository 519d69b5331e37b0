"""Winograd F(4x4, 3x3)'s tile transforms, scheduled by the winograd module itself."""

from __future__ import annotations

from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from .base import SPATIAL, parallel_outer, plain_block, start


class Winograd(CPUScheduleRule):
    """backends/cpu/winograd.py's tile transforms: its own schedule (also MetaSchedule's custom rule)."""

    def apply(self, func, target, _):
        from .. import winograd

        sch, _ = start(self, func, target)
        if sch is None or not winograd.schedule(sch, target):
            return None
        for b in sch.get_child_blocks(sch.get_sblock("root")):  # consumers left un-inlined
            if not sch.get(b).annotations.get("schedule_rule"):
                plain = plain_block(sch, b)
                if plain is not None and plain[1] and plain[1][0] == SPATIAL:
                    parallel_outer(sch, plain[0][:1])
        return sch
