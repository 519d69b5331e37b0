"""The runner: what a board needs to run an artifact without Python, and running it here.

An artifact for a cross target (an ARM board) holds, next to ``model.so`` and the manifest:

- ``runner``: ``src/deploy_runner.cc`` built for the board's architecture; it loads the
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
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from .... import log
from ....errors import DeployError
from ....files import make_cache_dir, output_file, sha256_file
from ....host import host_arch
from .runtime_libs import RUNTIME_LIBS, SOURCE_BUILDS, cache_root, check_compiler, include_dir, runtime_dir, versions

RUNNER_SOURCE = Path(str(files(__package__) / "src" / "deploy_runner.cc"))  # package data
RUNNER_NAME = "runner"
LIB_DIR = "lib"
QEMU_PACKAGE = "qemu-user-static"


def build_runner(compiler: str, libdir: Path, out: Path, package: str = "g++") -> None:
    """Build src/deploy_runner.cc with ``compiler`` against the runtime in ``libdir``; cached by content."""
    check_compiler(compiler, package)
    flags = ["-std=c++17", "-O2", "-Wno-psabi", f"-I{include_dir()}"]
    link = [f"-L{libdir}", "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi", "-Wl,--as-needed",
            "-Wl,-rpath,$ORIGIN/lib"]
    key = hashlib.sha256("\0".join([RUNNER_SOURCE.read_text(), compiler, *flags[:3], *link[1:],
                                    sha256_file(libdir / RUNTIME_LIBS[0])]).encode()).hexdigest()[:16]
    cached = cache_root() / "runners" / f"{compiler}-{key}"
    if not cached.is_file():
        make_cache_dir(cached.parent)
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
    tvm_ver, ffi_ver = versions()
    return {
        "arch": preset.arch,
        "glibc": needed_glibc([*files.values(), artifact_dir / "model.so"]),
        "runner": RUNNER_NAME,
        "files": {rel: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for rel, p in files.items()},
        "runtime_source": (f"apache-tvm {tvm_ver} and apache-tvm-ffi {ffi_ver} "
                           + ("as installed here" if preset.arch == host_arch()
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
    if device["arch"] == host_arch():
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
            outs[o["name"]] = np.load(td / output_file(o["name"]))
    lat = {"median": float(m[1]), "min": float(m[2]), "max": float(m[3])} if m else {}
    return RunnerResult(outs, lat, int(m[4]) if m else 0, wall, cmd)
