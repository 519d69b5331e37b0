"""Guarded: a schedule rule that raises counts as not applying, so the next rule tries (every family's rules).

Schedule rules in the style of TVM's dlight run behind ``apply(func, target, tunable)``. A rule
that raises on a kernel (an IndexError or ScheduleError on a shape it did not foresee) must never
break a compile: the failure is recorded, the next rule tries, and finally the kernel keeps TVM's
plain loops. ``report`` says so once per compile (``-v`` lists each failure).
"""

from __future__ import annotations

import contextlib

from tvm.s_tir.dlight.base import ScheduleRule

from .. import log
from ..errors import last_line


class Guarded(ScheduleRule):
    """``rule`` behind a guard; ``chosen`` gets the rule's name per PrimFunc it scheduled. ``context``
    (func -> context manager) is entered around the rule (the CPU rules' serial-if-small switch)."""

    def __init__(self, rule, failures: list, chosen: dict | None = None, context=None):
        self.rule, self.failures, self.chosen, self.context = rule, failures, chosen, context

    def apply(self, func, target, tunable):
        name = func.attrs.get("global_symbol") if func.attrs else None
        try:
            with self.context(func) if self.context else contextlib.nullcontext():
                sch = self.rule.apply(func, target, tunable)
        except Exception as e:  # noqa: BLE001 - a default schedule must never break a compile
            self.failures.append((type(self.rule).__name__, str(name or "?"), f"{type(e).__name__}: {last_line(e)[:200]}"))
            return None
        if sch is not None and self.chosen is not None:
            self.chosen.setdefault(func, type(self.rule).__name__)
        return sch


def report(failures: list) -> None:
    for rule, kernel, why in failures:
        log.debug(f"default schedule {rule} failed on {kernel}: {why}; the next rule applies")
    if failures:
        log.warn(f"{len(failures)} default schedule rule(s) did not apply to a kernel they matched and fell back "
                 f"to the next rule (first: {failures[0][0]} on {failures[0][1]}: {failures[0][2]}); -v lists them")


def first_schedule(rules: list, func, target):
    """The schedule the first of ``rules`` that applies gives ``func`` (its trace can be stored as a
    tuning record), or None."""
    with target:
        for rule in rules:
            sch = rule.apply(func, target, False)
            if isinstance(sch, list):
                sch = sch[0] if sch else None
            if sch is not None:
                return sch
    return None
