"""Winograd F(4x4, 3x3)'s tile transforms, scheduled by the winograd module itself."""

from __future__ import annotations

from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from ..vector import vector_lanes
from .rule_base import SPATIAL, schedule_producers, start


class Winograd(CPUScheduleRule):
    """backends/cpu/winograd.py's tile transforms: its own schedule (also MetaSchedule's custom rule)."""

    def apply(self, func, target, _):
        from .. import winograd

        sch, _ = start(self, func, target)
        if sch is None or not winograd.schedule(sch, target):
            return None
        # stages left un-inlined (a concat, transposes before the pack): parallel over their leading
        # loops (a batch of 1 is one iteration), vectorized inside; a U-Net's skip concat before
        # a pack ran on one thread, scalar: 4 ms
        rest = [b for b in sch.get_child_blocks(sch.get_sblock("root"))
                if not sch.get(b).annotations.get("schedule_rule")
                and all(int(iv.iter_type) == SPATIAL for iv in sch.get(b).iter_vars)
                and len(sch.get_loops(b)) == len(sch.get(b).iter_vars)]
        schedule_producers(sch, rest, vector_lanes(target, "float32"))  # Winograd is float32 only
        return sch
