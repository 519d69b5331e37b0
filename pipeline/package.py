"""Stage 7, package: one artifact directory (library + manifest.json), written atomically.

Everything is written into a hidden sibling directory and renamed into place at the end, so an
interrupted or failed compile never leaves a half-written artifact at the output path.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import DeployError

LIB_NAME = "model.so"
MANIFEST = "manifest.json"


def check_output(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise DeployError(f"output directory {out} already exists", hint="pass --force to replace it, or choose another -o")
    if out.exists() and not out.is_dir():
        raise DeployError(f"output path {out} exists and is not a directory", hint="choose another -o")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DeployError(f"cannot create {parent}: {e.strerror}", hint="choose a writable -o")
    if not os.access(parent, os.W_OK):
        raise DeployError(f"cannot write to {parent}: permission denied", hint="choose a writable -o")


@contextlib.contextmanager
def atomic_dir(out: Path, force: bool = False):
    """Yield a temp dir beside ``out``; on success it replaces ``out`` in one rename."""
    check_output(out, force)
    out = out.resolve()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, DeployError):
            raise DeployError(f"writing the artifact failed: {e}", hint="check free disk space and permissions") from e
        raise


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_manifest(artifact: Path) -> dict:
    path = Path(artifact) / MANIFEST
    if not path.is_file():
        raise DeployError(f"{artifact} is not an artifact (no {MANIFEST})", hint="pass a directory made by `deploy compile`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DeployError(f"{path} is corrupt: {e}", hint="recompile the artifact")
