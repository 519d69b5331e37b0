"""The header every file in benchmarks/ starts with: the date, the commit, the command, the CPU and the versions."""

from __future__ import annotations

import datetime
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions(*extra: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("deploy", "apache-tvm", "onnxruntime", *extra):
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


def header(title: str, *extra_packages: str) -> str:
    """Comment lines for the top of a benchmarks/ file."""
    import os

    cmd = " ".join([Path(sys.executable).name, *sys.argv])
    return "\n".join([
        f"# {title}",
        f"# {datetime.date.today().isoformat()}, commit {commit()}; command: {cmd}",
        f"# CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} CPUs; Python {platform.python_version()}; "
        f"{versions(*extra_packages)}",
    ])
