"""Files, written the one safe way: content hashes, atomic writes, the cache root, output names.

Every write that must never be seen half-done goes through here: a temp file or directory beside
the destination, renamed over it in one step.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import DeployError


def cache_root() -> Path:
    """deploy's per-user cache (``$XDG_CACHE_HOME/deploy``): tuning records, board runtimes, runners."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deploy"


CACHE_HINT = "make it writable, or set XDG_CACHE_HOME to a writable directory"


def make_cache_dir(path: Path) -> Path:
    """``path`` (under cache_root()) made with its parents, or a DeployError saying the cache is unwritable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DeployError(f"cannot write deploy's cache {path}: {e.strerror or e}", hint=CACHE_HINT) from e
    return path


def check_output_path(path: Path, flag: str, is_dir: bool = False) -> None:
    """Raise a DeployError (naming ``flag``, the option that gave the path) unless ``path`` can be
    written as a file (``is_dir``: a directory, made with its parents where missing): before the
    work, so that a long run does not end in an error about where its result goes."""
    path = Path(path)
    why = None
    if path.exists() and path.is_dir() != is_dir:
        why = "it is a directory" if path.is_dir() else "it is a file, not a directory"
    elif path.exists():
        place = path if is_dir else path.absolute().parent  # (a file is replaced by a rename in its folder)
        why = None if os.access(place, os.W_OK) else f"permission denied ({place} is not writable)"
    else:
        place = next(p for p in path.absolute().parents if p.exists())
        if not place.is_dir():
            why = f"{place} is a file, not a directory"
        elif not os.access(place, os.W_OK):
            why = f"permission denied ({place} is not writable)"
    if why:
        raise DeployError(f"cannot write {path}: {why}", hint=f"choose another {flag}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_tree(path: Path) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents, sorted)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        rel = p.relative_to(path).as_posix()
        if any(part.startswith(".") for part in p.relative_to(path).parts):
            continue  # lock files, editor droppings
        h.update(f"{rel}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically: a temp file beside it (named per process), then rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_lines(path: Path, lines: list[str]) -> None:
    write_text(path, "".join(ln + "\n" for ln in lines))


class atomic_cache_dir:
    """A temp dir beside ``out`` renamed into place on success (another process may win the race)."""

    def __init__(self, out: Path):
        self.out = out

    def __enter__(self) -> Path:
        make_cache_dir(self.out.parent)
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


def output_file(name: str) -> str:
    """The .npy file name an output is written to (by `deploy run` and the C++ runner alike)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) + ".npy"
