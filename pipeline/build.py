"""Build: compile the optimized IRModule and export one shared library.

CPU targets use LLVM; cross targets link with the Debian cross toolchain named in the preset;
CUDA targets compile their kernels with nvcc into an embedded fatbin (backends/cuda). What differs
per family (toolchain checks, the VM build passes, the library check) comes from its backend.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

from . import log
from .backends import for_preset
from .errors import CodegenError, DeployError, last_line
from .layers import memory_plan
from .optimize import build_pipeline
from .targets import Preset

ELF_MACHINES = {3: "x86", 62: "x86_64", 40: "armv7l", 183: "aarch64", 190: "cuda"}


def elf_machine(path: Path) -> str:
    """The architecture an ELF file is for, read from its header."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return "not-elf"
    endian = "<" if head[5] == 1 else ">"
    machine = struct.unpack_from(endian + "H", head, 18)[0]
    return ELF_MACHINES.get(machine, f"elf-{machine}")


def check_toolchain(preset: Preset) -> None:
    if preset.cross_compiler and shutil.which(preset.cross_compiler) is None:
        raise DeployError(
            f"cross compiler {preset.cross_compiler} for target '{preset.name}' is not installed",
            hint=f"apt-get install {preset.cross_package or preset.cross_compiler}",
        )
    for_preset(preset).check_toolchain(preset)


def build_library(mod, preset: Preset, out: Path) -> dict:
    """Compile and export ``mod`` into ``out``; returns the static memory plan (layers.memory_plan)
    read right after TVM planned it."""
    import tvm
    from tvm.support import cc

    check_toolchain(preset)
    backend = for_preset(preset)
    target = preset.tvm_target()
    backend.before_build(preset)
    plan: dict = {}

    @tvm.instrument.pass_instrument
    class ReadPlan:
        def run_after_pass(self, m, info):
            if str(info.name) == "StaticPlanBlockMemory":
                try:
                    plan.update(memory_plan(m))
                except Exception:  # noqa: BLE001 - the plan is for the manifest
                    pass

    ctx = tvm.transform.PassContext.current()
    try:
        with log.tvm_quiet(), target, tvm.transform.PassContext(
                opt_level=ctx.opt_level, required_pass=list(ctx.required_pass),
                disabled_pass=list(ctx.disabled_pass), instruments=[*ctx.instruments, ReadPlan()],
                config=dict(ctx.config)):
            exe = tvm.compile(mod, target=target, relax_pipeline=build_pipeline(backend, target))
    except Exception as e:
        raise CodegenError(f"TVM failed to compile the model for '{preset.name}': {last_line(e)}"[:800],
                          hint="run with -v for the full log") from e
    fcompile = cc.cross_compiler(preset.cross_compiler) if preset.cross_compiler else None
    try:
        with log.tvm_quiet():
            exe.export_library(str(out), fcompile=fcompile)
    except Exception as e:
        raise DeployError(f"linking the library failed: {last_line(e)}"[:800],
                          hint="run with -v for the linker's output") from e
    backend.check_library(preset, out)
    return plan
