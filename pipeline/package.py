"""Package: one artifact directory (library + manifest.json), written atomically.

Everything is written into a hidden sibling directory and renamed into place at the end, so an
interrupted or failed compile never leaves a half-written artifact at the output path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from .errors import DeployError
from .files import check_output_path, sha256_file
from .manifest import LIB_NAME, MANIFEST


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


def make_bundle(artifact, out: Path, force: bool = False) -> Path:
    """A .tar.gz of the artifact (library, manifest, runner, runtime) with a README for the board.

    The archive holds one folder named after the artifact; it is written beside ``out`` and
    renamed into place.
    """
    import io
    import tarfile

    from .backends import for_family

    out = Path(out)
    if not out.name.endswith((".tar.gz", ".tgz")):
        raise DeployError(f"bundle name {out} must end in .tar.gz", hint="e.g. -o bundle.tar.gz")
    check_output_path(out, "-o")
    if out.exists() and not force:
        raise DeployError(f"{out} already exists", hint="pass --force to replace it, or choose another -o")
    artifact.check_integrity()
    folder = artifact.path.resolve().name
    files = [LIB_NAME, MANIFEST]
    if artifact.device is not None:
        files += sorted(artifact.device["files"])
    readme = for_family(artifact.manifest["target"]["family"]).bundle_readme(artifact.manifest, out.name, folder).encode()
    sums = "".join(f"{sha256_file(artifact.path / f)}  {f}\n" for f in files).encode()
    tmp = None
    try:
        out.resolve().parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.partial-", dir=out.resolve().parent)
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
            for rel in files:
                tar.add(artifact.path / rel, arcname=f"{folder}/{rel}", recursive=False)
            for name, data in (("README.md", readme), ("SHA256SUMS", sums)):
                info = tarfile.TarInfo(f"{folder}/{name}")
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise DeployError(f"cannot write {out}: {e.strerror or e}", hint="choose another -o") from e
        raise
    return out
