"""Stage 6, build: compile the optimized IRModule and export one shared library.

CPU targets use LLVM; cross targets link with the Debian cross toolchain named in the preset;
CUDA targets compile their kernels with nvcc into an embedded fatbin (see cuda.py).
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

from . import cuda, log
from .errors import DeployError
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
    if preset.family == "cuda":
        cuda.find_nvcc()


def build_library(mod, preset: Preset, out: Path) -> None:
    import tvm
    from tvm.support import cc

    check_toolchain(preset)
    target = preset.tvm_target()
    if preset.family == "cuda":
        cuda.setup_cuda_compile()
        import tvm.support.nvcc  # noqa: F401  registers tvm_callback_cuda_compile
    try:
        with log.tvm_quiet(), target:
            exe = tvm.compile(mod, target=target, relax_pipeline=build_pipeline(preset.family, target))
    except Exception as e:
        lines = str(e).strip().splitlines()
        raise DeployError(f"TVM failed to compile the model for '{preset.name}': {lines[-1] if lines else e}"[:800],
                          hint="run with -v for the full log") from e
    fcompile = cc.cross_compiler(preset.cross_compiler) if preset.cross_compiler else None
    try:
        with log.tvm_quiet():
            exe.export_library(str(out), fcompile=fcompile)
    except Exception as e:
        lines = str(e).strip().splitlines()
        raise DeployError(f"linking the library failed: {lines[-1] if lines else e}"[:800],
                          hint="run with -v for the linker's output") from e
    if preset.family == "cuda":
        code = cuda.gpu_code(out.read_bytes())
        want = preset.target["arch"]
        if not any(c["kind"] == "cubin" and c["arch"] == want for c in code):
            raise DeployError(f"the CUDA library holds no compiled {want} code (found {code or 'CUDA source only'})",
                              hint="check that nvcc works: nvcc --version; run with -v")
