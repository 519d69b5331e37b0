"""This machine: its architecture and the instruction-set flags its CPU reports.

Family-free facts every family's code may use ("does this artifact's code run here?"). What
code for a target needs from a CPU is the family's to say (``Backend.cpu_features``).
"""

from __future__ import annotations

import functools
import platform


def host_arch() -> str:
    machine = platform.machine()
    return {"arm64": "aarch64", "amd64": "x86_64", "AMD64": "x86_64"}.get(machine, machine)


@functools.cache
def host_flags() -> frozenset[str]:
    """The instruction-set flags this host's kernel reports (/proc/cpuinfo's names)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    flags.update(value.split())
    except OSError:
        pass
    return frozenset(flags)


def missing_features(required: list[str]) -> list[str]:
    """Those of ``required`` (cpuinfo names) this CPU lacks."""
    have = host_flags()
    return [f for f in required if f not in have]
