"""TVM's runtime for a board: the libraries an artifact's runner links, per architecture.

``libtvm_runtime.so`` and ``libtvm_ffi.so`` come from this machine's install (host artifacts), from
PyPI's manylinux wheels of apache-tvm and apache-tvm-ffi at the pinned versions (aarch64), or are
compiled here from the C++ sources those wheels ship (armv7); each is cached once in
``~/.cache/deploy/runtime/<arch>-tvm<ver>-ffi<ver>[-recipe]/``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

from .... import log
from ....errors import DeployError
from ....files import atomic_cache_dir
from ....files import cache_root as _deploy_cache
from ....host import host_arch

RUNTIME_LIBS = ("libtvm_runtime.so", "libtvm_ffi.so")

# PyPI platform tags of the manylinux wheels per architecture (none exist for armv7).
WHEEL_PLATFORMS = {
    "aarch64": ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"],
}
# Architectures whose runtime is built here from the sources the installed wheels ship:
# apache-tvm-ffi's src/ and apache-tvm's src/runtime, plus the few headers the wheels leave out,
# written for deploy in src/runtime/ (package data). Value: (compiler, Debian package, flags).
SOURCE_BUILDS = {
    "armv7l": ("arm-linux-gnueabihf-g++", "g++-arm-linux-gnueabihf",
               ["-march=armv7-a", "-mfpu=neon", "-mfloat-abi=hard"]),
}
RUNTIME_EXTRA = Path(str(files(__package__) / "src" / "runtime"))  # package data
# The runtime's sources needed to load and run a Relax VM artifact on a CPU (LLM caches, RPC,
# GPU backends and the fp16 fallbacks, which libgcc provides, are left out).
RUNTIME_SOURCES = [
    "const_loader_module.cc", "cpu_device_api.cc", "device_api.cc", "file_utils.cc", "logging.cc", "module.cc",
    "static_library.cc", "tensor.cc", "thread_pool.cc", "threading_backend.cc", "timer.cc", "workspace_pool.cc",
    "memory/memory_manager.cc", "vm/builtin.cc", "vm/bytecode.cc", "vm/executable.cc", "vm/vm.cc",
]
FFI_SKIP = ("backtrace_win.cc", "testing.cc")


def cache_root() -> Path:
    return _deploy_cache() / "runtime"


def versions() -> tuple[str, str]:
    import tvm
    import tvm_ffi

    return tvm.__version__, tvm_ffi.__version__


def supported(arch: str) -> bool:
    """Whether deploy can provide TVM's runtime for ``arch`` (this host's, a PyPI wheel's, or built here)."""
    return arch == host_arch() or arch in WHEEL_PLATFORMS or arch in SOURCE_BUILDS


def include_dir() -> Path:
    import tvm_ffi

    return Path(tvm_ffi.__file__).resolve().parent / "include"


def host_runtime_dir() -> Path:
    """This machine's runtime libraries, as installed with the apache-tvm wheels, in one dir."""
    import tvm
    import tvm_ffi

    tvm_ver, ffi_ver = versions()
    out = cache_root() / f"{host_arch()}-tvm{tvm_ver}-ffi{ffi_ver}"
    if all((out / n).is_file() for n in RUNTIME_LIBS):
        return out
    srcs = [Path(tvm.__file__).resolve().parent / "lib" / RUNTIME_LIBS[0],
            Path(tvm_ffi.__file__).resolve().parent / "lib" / RUNTIME_LIBS[1]]
    with atomic_cache_dir(out) as tmp:
        for s in srcs:
            shutil.copy2(s, tmp / s.name)
    return out



def runtime_dir(arch: str) -> Path:
    """A directory holding libtvm_runtime.so and libtvm_ffi.so for ``arch``, fetched once and cached."""
    if arch == host_arch():
        return host_runtime_dir()
    if arch in SOURCE_BUILDS:
        return built_runtime_dir(arch)
    if arch not in WHEEL_PLATFORMS:
        raise DeployError(f"no TVM runtime for {arch} is available: PyPI has no {arch} wheel of apache-tvm",
                          hint="see README.md, 'Edge boards': armv7 artifacts are compile-only")
    tvm_ver, ffi_ver = versions()
    out = cache_root() / f"{arch}-tvm{tvm_ver}-ffi{ffi_ver}"
    if all((out / n).is_file() for n in RUNTIME_LIBS):
        return out
    log.info(f"[cyan]>[/cyan] fetching TVM's runtime for {arch} (apache-tvm {tvm_ver}, apache-tvm-ffi {ffi_ver} wheels)")
    with atomic_cache_dir(out) as tmp:
        dl = tmp / "wheels"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               "-q", "--python-version", "3.11", "--implementation", "cp", "-d", str(dl)]
        for p in WHEEL_PLATFORMS[arch]:
            cmd += ["--platform", p]
        cmd += [f"apache-tvm=={tvm_ver}", f"apache-tvm-ffi=={ffi_ver}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            last = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith("WARNING")][-1:] or [""]
            raise DeployError(f"cannot download the {arch} wheels of apache-tvm {tvm_ver} / apache-tvm-ffi {ffi_ver} "
                              f"from PyPI: {last[0][:300]}",
                              hint=f"connect to PyPI once (the libraries are cached in {cache_root()}), "
                                   "or copy that cache from a machine that has them")
        members = {"libtvm_runtime.so": ("apache_tvm-", "tvm/lib/libtvm_runtime.so"),
                   "libtvm_ffi.so": ("apache_tvm_ffi-", "tvm_ffi/lib/libtvm_ffi.so")}
        for lib, (prefix, member) in members.items():
            wheel = next(iter(sorted(dl.glob(f"{prefix}*.whl"))), None)
            if wheel is None:
                raise DeployError(f"pip downloaded no {prefix.rstrip('-')} wheel for {arch}", hint="run with -v")
            with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(tmp / lib, "wb") as dst:
                shutil.copyfileobj(src, dst)
        shutil.rmtree(dl)
    return out


def built_runtime_dir(arch: str) -> Path:
    """TVM's runtime for ``arch`` compiled from the installed wheels' sources (once; ~5 min on 2 cores)."""
    import concurrent.futures

    import tvm
    import tvm_ffi

    compiler, package, arch_flags = SOURCE_BUILDS[arch]
    tvm_ver, ffi_ver = versions()
    recipe = hashlib.sha256("\0".join([compiler, *arch_flags, *RUNTIME_SOURCES, *(
        p.read_text() for p in sorted(RUNTIME_EXTRA.rglob("*.h")))]).encode()).hexdigest()[:10]
    out = cache_root() / f"{arch}-tvm{tvm_ver}-ffi{ffi_ver}-{recipe}"
    if all((out / n).is_file() for n in RUNTIME_LIBS):
        return out
    check_compiler(compiler, package)
    tvm_root, ffi_root = Path(tvm.__file__).resolve().parent, Path(tvm_ffi.__file__).resolve().parent
    if not (tvm_root / "src" / "runtime").is_dir() or not (ffi_root / "src" / "ffi").is_dir():
        raise DeployError(f"the installed apache-tvm / apache-tvm-ffi wheels hold no C++ sources to build a {arch} "
                          "runtime from", hint=f"install apache-tvm=={tvm_ver} and apache-tvm-ffi=={ffi_ver} from PyPI")
    log.info(f"[cyan]>[/cyan] building TVM's runtime for {arch} from the wheels' sources with {compiler} "
             "(once, a few minutes)")
    common = ["-std=c++17", "-O2", "-fPIC", "-Wno-psabi", *arch_flags, "-DTVM_FFI_CMAKE_LITTLE_ENDIAN=1",
              f"-I{ffi_root / 'include'}", f"-I{ffi_root / '3rdparty' / 'dlpack' / 'include'}"]
    with atomic_cache_dir(out) as tmp:
        src = tmp / "src"
        shutil.copytree(tvm_root / "src" / "runtime", src / "runtime")
        shutil.copytree(RUNTIME_EXTRA / "src" / "support", src / "support")
        ffi_jobs = [(f, ["-fvisibility=hidden", "-fvisibility-inlines-hidden", "-DTVM_FFI_USE_LIBBACKTRACE=0",
                         "-DTVM_FFI_BACKTRACE_ON_SEGFAULT=0"])
                    for f in sorted((ffi_root / "src" / "ffi").rglob("*.cc")) if f.name not in FFI_SKIP]
        rt_jobs = [(src / "runtime" / f, [f"-I{RUNTIME_EXTRA / 'include'}", f"-I{tvm_root / 'include'}"])
                   for f in RUNTIME_SOURCES]

        (tmp / "obj").mkdir()
        jobs = [(i, path, extra) for i, (path, extra) in enumerate(ffi_jobs + rt_jobs)]

        def cc(job):
            i, path, extra = job
            obj = tmp / "obj" / f"{i:02d}-{path.stem}.o"
            r = subprocess.run([compiler, *common, *extra, "-c", str(path), "-o", str(obj)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise DeployError(f"building TVM's {arch} runtime failed in {path.name}: {r.stderr.strip()[-800:]}",
                                  hint="run with -v; see README.md, 'Edge boards'")
            return obj

        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            objs = list(pool.map(cc, jobs))
        ffi_objs, rt_objs = objs[:len(ffi_jobs)], objs[len(ffi_jobs):]
        links = [
            [compiler, "-shared", "-o", str(tmp / "libtvm_ffi.so"), *map(str, ffi_objs), "-Wl,--no-undefined",
             "-lpthread", "-ldl"],
            [compiler, "-shared", "-o", str(tmp / "libtvm_runtime.so"), *map(str, rt_objs), f"-L{tmp}",
             "-Wl,--no-undefined", "-ltvm_ffi", "-lpthread", "-ldl", "-Wl,-rpath,$ORIGIN"],
        ]
        for cmd in links:
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise DeployError(f"linking TVM's {arch} runtime failed: {r.stderr.strip()[-800:]}", hint="run with -v")
        shutil.rmtree(src)
        shutil.rmtree(tmp / "obj")
    return out


def check_compiler(compiler: str, package: str) -> None:
    if shutil.which(compiler) is None:
        raise DeployError(f"the C++ compiler {compiler} is not installed", hint=f"apt-get install {package}")


