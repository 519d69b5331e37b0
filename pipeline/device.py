"""The device runtime: what a board needs to run an artifact without Python, and running it here.

An artifact for a cross target (an ARM board) holds, next to ``model.so`` and the manifest:

- ``runner``: ``runner/deploy_runner.cc`` built for the board's architecture; it loads the
  library, runs ``main`` on .npy inputs, writes .npy outputs and prints the median latency;
- ``lib/``: TVM's runtime for that architecture (``libtvm_runtime.so``, ``libtvm_ffi.so``),
  taken from PyPI's manylinux wheels of apache-tvm and apache-tvm-ffi (same versions as the
  compiler here) and cached in ``~/.cache/deploy/runtime/<arch>-tvm<ver>-ffi<ver>/``.

On this machine such an artifact runs under Debian's qemu-user, emulating the board's CPU
(``qemu-aarch64-static -cpu cortex-a72 -L /usr/aarch64-linux-gnu``). Emulated timings say
nothing about the board: `deploy bench` says so, and measures on a real board through a TVM RPC
tracker instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cpu, log
from .errors import DeployError
from .load import sha256_file

RUNNER_SOURCE = Path(__file__).resolve().parent.parent / "runner" / "deploy_runner.cc"
RUNNER_NAME = "runner"
LIB_DIR = "lib"
RUNTIME_LIBS = ("libtvm_runtime.so", "libtvm_ffi.so")

# PyPI platform tags of the manylinux wheels per architecture (none exist for armv7).
WHEEL_PLATFORMS = {
    "aarch64": ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"],
}
# Architectures whose runtime is built here from the sources the installed wheels ship:
# apache-tvm-ffi's src/ and apache-tvm's src/runtime, plus the few headers the wheels leave out,
# written for deploy in runner/runtime/. Value: (compiler, Debian package, flags).
SOURCE_BUILDS = {
    "armv7l": ("arm-linux-gnueabihf-g++", "g++-arm-linux-gnueabihf",
               ["-march=armv7-a", "-mfpu=neon", "-mfloat-abi=hard"]),
}
RUNTIME_EXTRA = Path(__file__).resolve().parent.parent / "runner" / "runtime"
# The runtime's sources needed to load and run a Relax VM artifact on a CPU (LLM caches, RPC,
# GPU backends and the fp16 fallbacks, which libgcc provides, are left out).
RUNTIME_SOURCES = [
    "const_loader_module.cc", "cpu_device_api.cc", "device_api.cc", "file_utils.cc", "logging.cc", "module.cc",
    "static_library.cc", "tensor.cc", "thread_pool.cc", "threading_backend.cc", "timer.cc", "workspace_pool.cc",
    "memory/memory_manager.cc", "vm/builtin.cc", "vm/bytecode.cc", "vm/executable.cc", "vm/vm.cc",
]
FFI_SKIP = ("backtrace_win.cc", "testing.cc")
QEMU_PACKAGE = "qemu-user-static"


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deploy" / "runtime"


def _versions() -> tuple[str, str]:
    import tvm
    import tvm_ffi

    return tvm.__version__, tvm_ffi.__version__


def supported(arch: str) -> bool:
    """Whether deploy can provide TVM's runtime for ``arch`` (this host's, a PyPI wheel's, or built here)."""
    return arch == cpu.host_arch() or arch in WHEEL_PLATFORMS or arch in SOURCE_BUILDS


def include_dir() -> Path:
    import tvm_ffi

    return Path(tvm_ffi.__file__).resolve().parent / "include"


def host_runtime_dir() -> Path:
    """This machine's runtime libraries, as installed with the apache-tvm wheels, in one dir."""
    import tvm
    import tvm_ffi

    tvm_ver, ffi_ver = _versions()
    out = cache_root() / f"{cpu.host_arch()}-tvm{tvm_ver}-ffi{ffi_ver}"
    if all((out / n).is_file() for n in RUNTIME_LIBS):
        return out
    srcs = [Path(tvm.__file__).resolve().parent / "lib" / RUNTIME_LIBS[0],
            Path(tvm_ffi.__file__).resolve().parent / "lib" / RUNTIME_LIBS[1]]
    with _atomic_cache_dir(out) as tmp:
        for s in srcs:
            shutil.copy2(s, tmp / s.name)
    return out


class _atomic_cache_dir:
    """A temp dir beside ``out`` renamed into place on success (another process may win the race)."""

    def __init__(self, out: Path):
        self.out = out

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                os.rename(self.tmp, self.out)
            except OSError:  # another process filled the cache first
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)
        return False


def runtime_dir(arch: str) -> Path:
    """A directory holding libtvm_runtime.so and libtvm_ffi.so for ``arch``, fetched once and cached."""
    if arch == cpu.host_arch():
        return host_runtime_dir()
    if arch in SOURCE_BUILDS:
        return built_runtime_dir(arch)
    if arch not in WHEEL_PLATFORMS:
        raise DeployError(f"no TVM runtime for {arch} is available: PyPI has no {arch} wheel of apache-tvm",
                          hint="see README.md, 'Edge boards': armv7 artifacts are compile-only")
    tvm_ver, ffi_ver = _versions()
    out = cache_root() / f"{arch}-tvm{tvm_ver}-ffi{ffi_ver}"
    if all((out / n).is_file() for n in RUNTIME_LIBS):
        return out
    log.info(f"[cyan]>[/cyan] fetching TVM's runtime for {arch} (apache-tvm {tvm_ver}, apache-tvm-ffi {ffi_ver} wheels)")
    with _atomic_cache_dir(out) as tmp:
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
    tvm_ver, ffi_ver = _versions()
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
    with _atomic_cache_dir(out) as tmp:
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


def build_runner(compiler: str, libdir: Path, out: Path, package: str = "g++") -> None:
    """Build runner/deploy_runner.cc with ``compiler`` against the runtime in ``libdir``; cached by content."""
    check_compiler(compiler, package)
    flags = ["-std=c++17", "-O2", "-Wno-psabi", f"-I{include_dir()}"]
    link = [f"-L{libdir}", "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi", "-Wl,--as-needed",
            "-Wl,-rpath,$ORIGIN/lib"]
    key = hashlib.sha256("\0".join([RUNNER_SOURCE.read_text(), compiler, *flags[:3], *link[1:],
                                    sha256_file(libdir / RUNTIME_LIBS[0])]).encode()).hexdigest()[:16]
    cached = cache_root() / "runners" / f"{compiler}-{key}"
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(cached.name + f".{os.getpid()}.tmp")
        cmd = [compiler, *flags, str(RUNNER_SOURCE), "-o", str(tmp), *link]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise DeployError(f"building the runner with {compiler} failed: {r.stderr.strip()[-600:]}",
                              hint="check the compiler works: " + " ".join(cmd))
        os.replace(tmp, cached)
    shutil.copy2(cached, out)


def add_device_files(artifact_dir: Path, preset) -> dict:
    """Put the runner and TVM's runtime for the preset's architecture into the artifact; manifest entry."""
    libdir = runtime_dir(preset.arch)
    compiler = preset.cross_compiler or "g++"
    build_runner(compiler, libdir, artifact_dir / RUNNER_NAME, preset.cross_package or "g++")
    (artifact_dir / LIB_DIR).mkdir()
    files = {RUNNER_NAME: artifact_dir / RUNNER_NAME}
    for name in RUNTIME_LIBS:
        shutil.copy2(libdir / name, artifact_dir / LIB_DIR / name)
        files[f"{LIB_DIR}/{name}"] = artifact_dir / LIB_DIR / name
    tvm_ver, ffi_ver = _versions()
    return {
        "arch": preset.arch,
        "glibc": needed_glibc([*files.values(), artifact_dir / "model.so"]),
        "runner": RUNNER_NAME,
        "files": {rel: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for rel, p in files.items()},
        "runtime_source": (f"apache-tvm {tvm_ver} and apache-tvm-ffi {ffi_ver} "
                           + ("as installed here" if preset.arch == cpu.host_arch()
                              else f"built for {preset.arch} from the wheels' C++ sources" if preset.arch in SOURCE_BUILDS
                              else f"manylinux {preset.arch} wheels from PyPI")),
        "emulation": {"qemu": preset.qemu, "qemu_cpu": preset.qemu_cpu, "sysroot": preset.sysroot}
        if preset.qemu else None,
    }


def needed_glibc(paths: list[Path]) -> str:
    """The newest glibc symbol version these ELF files reference: the board's glibc must be at least this."""
    best = (2, 17)
    for p in paths:
        if p.is_file():
            for m in re.finditer(rb"GLIBC_(\d+)\.(\d+)", p.read_bytes()):
                best = max(best, (int(m[1]), int(m[2])))
    return f"{best[0]}.{best[1]}"


def check_files(artifact_dir: Path, device: dict) -> None:
    for rel, info in device["files"].items():
        p = artifact_dir / rel
        if not p.is_file():
            raise DeployError(f"{p} is missing", hint="recompile the artifact, or unpack the whole bundle")
        if sha256_file(p) != info["sha256"]:
            raise DeployError(f"{p} does not match the sha256 in its manifest: the artifact was modified",
                              hint="recompile it, or restore the original files")


def launcher(device: dict) -> list[str]:
    """The command prefix that runs the device's runner here: nothing on a matching host, else qemu-user."""
    if device["arch"] == cpu.host_arch():
        return []
    emu = device.get("emulation") or {}
    qemu = emu.get("qemu")
    if not qemu:
        raise DeployError(f"no emulator is known for {device['arch']}", hint="run the bundle on a board")
    if shutil.which(qemu) is None:
        raise DeployError(f"{qemu} is needed to run {device['arch']} code here and is not installed",
                          hint=f"apt-get install {QEMU_PACKAGE}")
    sysroot = emu.get("sysroot")
    if sysroot and not Path(sysroot, "lib").is_dir():
        pkg = {"aarch64": "libc6-arm64-cross libstdc++6-arm64-cross (or g++-aarch64-linux-gnu)",
               "armv7l": "libc6-armhf-cross libstdc++6-armhf-cross (or g++-arm-linux-gnueabihf)"}.get(device["arch"], "")
        raise DeployError(f"the {device['arch']} system libraries qemu needs are missing ({sysroot})",
                          hint=f"apt-get install {pkg}")
    cmd = [qemu]
    if emu.get("qemu_cpu"):
        cmd += ["-cpu", emu["qemu_cpu"]]
    if sysroot:
        cmd += ["-L", sysroot]
    return cmd


@dataclass
class RunnerResult:
    outputs: dict[str, np.ndarray]
    latency_ms: dict[str, float]   # median, min, max of the runner's own timing
    runs: int
    wall_s: float                  # the whole runner process, emulation included
    command: list[str]


_LATENCY = re.compile(r"latency: median ([\d.]+) ms, min ([\d.]+) ms, max ([\d.]+) ms over (\d+) runs")


def run_runner(artifact_dir: Path, device: dict, outputs: list[dict], inputs: dict[str, np.ndarray] | None,
               repeat: int = 1, warmup: int = 0, threads: int | None = None, timeout: float = 1800) -> RunnerResult:
    """Run the artifact's runner (under qemu when the architecture differs) and read its outputs."""
    import time

    artifact_dir = Path(artifact_dir).resolve()
    prefix = launcher(device)
    with tempfile.TemporaryDirectory(prefix="deploy-run-") as td:
        td = Path(td)
        cmd = [*prefix, str(artifact_dir / device["runner"]), "--artifact", str(artifact_dir),
               "--output-dir", str(td), "--repeat", str(repeat), "--warmup", str(warmup)]
        if threads:
            cmd += ["--threads", str(threads)]
        for name, arr in (inputs or {}).items():
            path = td / f"in{len(cmd)}.npy"
            np.save(path, np.ascontiguousarray(arr))
            cmd += ["--input", f"{name}={path}"]
        log.debug(" ".join(cmd))
        t0 = time.perf_counter()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeployError(f"the runner did not finish within {timeout:.0f} s", hint="try a smaller --repeat")
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            msg = r.stderr.strip().removeprefix("error: ") or f"exit code {r.returncode}"
            where = "under " + prefix[0] if prefix else "here"
            raise DeployError(f"the runner failed {where}: {msg}"[:1500],
                              hint="check the inputs against the manifest" if r.returncode == 2
                              else "run with -v, or run the runner by hand: " + " ".join(cmd))
        m = _LATENCY.search(r.stdout)
        outs = {}
        for o in outputs:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in o["name"])
            outs[o["name"]] = np.load(td / f"{safe}.npy")
    lat = {"median": float(m[1]), "min": float(m[2]), "max": float(m[3])} if m else {}
    return RunnerResult(outs, lat, int(m[4]) if m else 0, wall, cmd)


BOARD_OS = {
    "aarch64": "a 64-bit Linux (aarch64): Raspberry Pi OS 64-bit (bookworm), Ubuntu 22.04+ or Debian 12+ arm64, "
               "Jetson Linux 36 (JetPack 6)",
    "armv7l": "a 32-bit hard-float Linux (armhf): Raspberry Pi OS 32-bit (bookworm), Debian 12+ armhf",
    "x86_64": "a 64-bit x86 Linux",
}


def board_readme(manifest: dict, bundle_name: str, folder: str) -> str:
    """The one-page README that goes into a bundle: copy, run, what it prints."""
    m, t, dev = manifest["model"], manifest["target"], manifest.get("device")
    ver = manifest["versions"]
    rows = "\n".join(f"| {kind} | `{s['name']}` | {s['dtype']} | {s['shape']} |"
                     for kind, specs in (("input", m["inputs"]), ("output", m["outputs"])) for s in specs)
    emu = (dev or {}).get("emulation") or {}
    emu_line = (f"\nWithout a board (Debian, `apt-get install {QEMU_PACKAGE}`): `{emu['qemu']} -cpu {emu['qemu_cpu']} "
                f"-L {emu['sysroot']} ./runner`." if emu.get("qemu") else "")
    first = m["inputs"][0]["name"] if m["inputs"] else "input"
    out = m["outputs"][0] if m["outputs"] else {"name": "output", "dtype": "float32", "shape": []}
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in out["name"])
    head = f"""# {m['name']} for {t['description']}

Compiled by deploy {ver['deploy']} with Apache TVM {ver['tvm']} for target `{t['preset']}`
({t['arch']}, `{t['tvm_target'].get('mcpu', 'generic')}`) on {manifest['build']['time_utc']}.

| | name | dtype | shape |
|---|---|---|---|
{rows}
"""
    if dev is None:
        return head + f"""
This bundle holds the compiled library (`model.so`) and its `manifest.json` only: no runner was built
for {t['arch']}. Load `model.so` with TVM {ver['tvm']}'s runtime on the board
(`tvm.runtime.load_module` + `tvm.relax.VirtualMachine`), or with `deploy run` where deploy is installed.
"""
    return head + f"""
## Copy

```sh
scp {bundle_name} user@board:
ssh user@board
tar xzf {bundle_name} && cd {folder}
sha256sum -c SHA256SUMS        # optional: every file as built
```

The board needs {BOARD_OS.get(t['arch'], t['arch'] + ' Linux')}; that is, glibc {dev['glibc']} or newer and
libstdc++. Nothing else: TVM's runtime is in `lib/` ({dev['runtime_source']}); no Python.

## Run

```sh
./runner                                       # random inputs, 10 timed runs
./runner --input {first}=x.npy --output-dir out   # your inputs as .npy (numpy.save), outputs as .npy
./runner --repeat 100 --threads 4              # median over 100 runs, 4 threads
```

The runner finds `model.so` and `manifest.json` beside itself (`--artifact DIR` for another place).
Inputs not given are random; a given input must match the table above in name, shape and dtype.

## What it prints

```
output {out['name']}: {out['dtype']}{out['shape']} -> out/{safe}.npy
latency: median 12.345 ms, min 12.001 ms, max 13.210 ms over 10 runs
```

The latency is measured on the board: the number that counts (timings under emulation do not).{emu_line}
Exit codes: 0 ok; 2 a bad argument or input (the message lists the inputs the model expects);
3 an error inside TVM's runtime. A "cannot open shared object file" or "Illegal instruction"
means the board is not {t['arch']} / lacks a CPU feature of `{t['tvm_target'].get('mcpu', 'generic')}`.
"""
