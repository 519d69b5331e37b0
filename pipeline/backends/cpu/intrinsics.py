"""The tensor intrinsics CPU tuning needs, without the ~30 s import of every backend's."""

from __future__ import annotations

from pathlib import Path


def light_tensor_intrinsics() -> None:
    """Register only the CPU tensor intrinsics before MetaSchedule imports them all.

    TuneContext imports tvm.s_tir.tensor_intrin, whose package registers every backend's
    intrinsics (CUDA's alone take ~12 s, all ~30 s of CPU on these machines). CPU schedule
    rules only use the x86 and ARM ones, so for CPU targets the package is pre-registered with
    just those. GPU targets get the full import.
    """
    import importlib
    import sys
    import types

    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    import tvm.s_tir

    pkg = types.ModuleType(name)
    pkg.__path__ = [str(Path(tvm.s_tir.__file__).parent / "tensor_intrin")]
    sys.modules[name] = pkg
    for sub in ("x86", "arm_cpu"):
        setattr(pkg, sub, importlib.import_module(f"{name}.{sub}"))
