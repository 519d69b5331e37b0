"""CUDA without a GPU: compiled GPU code (fatbin/cubin) on a build machine that has none.

TVM's wheel keeps its CUDA runtime and code generator in libtvm_runtime_cuda.so, which links
libcuda.so.1 (the driver). Without a driver that library does not load, and TVM silently emits
CUDA C source instead of GPU code. We load a tiny stand-in libcuda.so.1 (the few driver
symbols that library links, each returning CUDA_ERROR_NO_DEVICE) before TVM loads, so its
code generator registers and calls nvcc. On a machine with a real driver nothing is stubbed.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import shutil
import struct
import subprocess
from pathlib import Path

from ...errors import DeployError
from ...files import CACHE_HINT, cache_root

_FALLBACK_SYMBOLS = [
    "cuDeviceGetName", "cuFuncSetAttribute", "cuGetErrorName", "cuGetErrorString", "cuLaunchKernelEx",
    "cuModuleGetFunction", "cuModuleLoadData", "cuModuleUnload", "cuTensorMapEncodeTiled",
]
FATBIN_MAGIC = 0xBA55ED50
_state: dict[str, str] = {}


def _tvm_lib_dir() -> Path | None:
    spec = importlib.util.find_spec("tvm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "lib"


def _driver_symbols(lib: Path) -> list[str]:
    try:
        out = subprocess.run(["nm", "-D", "--undefined-only", str(lib)], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return _FALLBACK_SYMBOLS
    syms = [ln.split()[-1] for ln in out.splitlines() if ln.split() and ln.split()[-1][:2] == "cu"]
    syms = [s for s in syms if "@" not in s and len(s) > 2 and s[2].isupper()]
    return sorted(set(syms)) or _FALLBACK_SYMBOLS


def prepare_driver() -> str:
    """Make libcuda.so.1 loadable before TVM loads; returns 'driver', 'stub' or 'none'."""
    if "driver" in _state:
        return _state["driver"]
    try:
        ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)
        _state["driver"] = "driver"
        return "driver"
    except OSError:
        pass
    lib_dir = _tvm_lib_dir()
    cuda_rt = lib_dir / "libtvm_runtime_cuda.so" if lib_dir else None
    cc = shutil.which("cc") or shutil.which("gcc")
    if cuda_rt is None or not cuda_rt.exists() or cc is None:
        _state["driver"] = "none"
        return "none"
    st = cuda_rt.stat()
    key = hashlib.sha256(f"{cuda_rt}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    stub_dir = cache_root() / f"cuda-stub-{key}"
    stub = stub_dir / "libcuda.so.1"
    if not stub.exists():
        # 100 = CUDA_ERROR_NO_DEVICE
        src = "".join(f"int {s}(void) {{ return 100; }}\n" for s in _driver_symbols(cuda_rt))
        try:  # (this runs when deploy is imported: an unwritable cache must not stop `deploy --help`)
            stub_dir.mkdir(parents=True, exist_ok=True)
            c_file = stub_dir / f"stub.{os.getpid()}.c"
            tmp = stub_dir / f"libcuda.so.1.{os.getpid()}.tmp"
            c_file.write_text(src)
        except OSError as e:
            _state.update(driver="none", why=f"cannot write deploy's cache {stub_dir}: {e.strerror or e}")
            return "none"
        r = subprocess.run([cc, "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(tmp), str(c_file)],
                           capture_output=True, text=True)
        c_file.unlink(missing_ok=True)
        if r.returncode != 0:
            _state["driver"] = "none"
            return "none"
        os.replace(tmp, stub)
    ctypes.CDLL(str(stub), mode=ctypes.RTLD_GLOBAL)
    _state.update(driver="stub", stub=str(stub))
    return "stub"


def driver_stub() -> Path | None:
    """The stand-in libcuda.so.1 prepare_driver loaded (for a process without a driver that must load
    CUDA artifacts, e.g. with LD_PRELOAD), or None where a real driver (or none at all) is used."""
    prepare_driver()
    return Path(_state["stub"]) if "stub" in _state else None


CUDA_ROOTS = ["/usr/local/cuda"]


def find_nvcc() -> str:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        for root in [os.environ.get("CUDA_HOME"), *CUDA_ROOTS]:
            if root and Path(root, "bin", "nvcc").exists():
                nvcc = str(Path(root, "bin", "nvcc"))
                break
    if nvcc is None:
        raise DeployError(
            "nvcc (the CUDA compiler) was not found: CUDA targets need it to compile GPU code",
            hint="install the CUDA toolkit and put its bin/ on PATH (or set CUDA_HOME)",
        )
    return nvcc


def setup_cuda_compile() -> None:
    """Point TVM's CUDA code generator at nvcc, producing a fatbin for the target's sm."""
    if prepare_driver() == "none":
        if "why" in _state:  # deploy keeps its stand-in libcuda in its cache
            raise DeployError(f"TVM's CUDA code generator could not be loaded: {_state['why']}", hint=CACHE_HINT)
        raise DeployError("TVM's CUDA code generator could not be loaded",
                          hint="install a C compiler (gcc) so deploy can provide a stand-in libcuda, "
                               "or build on a machine with the NVIDIA driver")
    nvcc = find_nvcc()
    os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"
    bindir = str(Path(nvcc).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("CUDA_HOME", str(Path(nvcc).parent.parent))


def gpu_code(data: bytes) -> list[dict]:
    """Entries of every fatbin embedded in a library: [{'kind': 'cubin'|'ptx', 'arch': 'sm_86'}]."""
    found: list[dict] = []
    magic = struct.pack("<I", FATBIN_MAGIC)
    pos = data.find(magic)
    while pos != -1:
        try:
            _, _, hsize, fsize = struct.unpack_from("<IHHQ", data, pos)
            off, end = pos + hsize, pos + hsize + fsize
            while off < end:
                kind, _, ehsize, size = struct.unpack_from("<HHIQ", data, off)
                arch = struct.unpack_from("<I", data, off + 28)[0]
                found.append({"kind": {1: "ptx", 2: "cubin"}.get(kind, str(kind)), "arch": f"sm_{arch}"})
                off += ehsize + size
            pos = data.find(magic, end)
        except struct.error:
            break
    return found
