"""One entry of `deploy build`: its cache key, its lock, its compile into place, its verification."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
import errno
from pathlib import Path

from .. import log
from ..compile import CompileArgs, compile_model
from ..errors import DeployError
from ..files import sha256_file, write_json
from ..manifest import MANIFEST, read_manifest
from ..package import atomic_dir
from ..quantize.options import QuantOptions
from ..run.runtime import Artifact
from ..targets import get_preset
from ..tune.database import path_for
from ..run.verify import verify
from .cachekey import cache_key, key_inputs
from .config import Entry

def compile_kwargs(entry: Entry) -> dict:
    """CompileArgs keywords for an entry."""
    kw: dict = {"model": entry.model, "target": entry.preset, "input_shapes": entry.input_shapes, "dims": entry.dims,
                "opt_level": entry.opt_level, "precision": entry.precision, "db": entry.db,
                "check": False}  # verify_entry gives deploy verify's verdict, at the entry's tolerances
    if entry.precision == "int8" and entry.calibration is not None:
        kw["quant"] = QuantOptions(calibration=entry.calibration)
    if entry.db is not None and not entry.db.exists():
        raise DeployError(f"tuning database {entry.db} does not exist", hint="run `deploy tune` first, or restore it")
    if entry.calibration is not None and entry.precision == "int8" and not entry.calibration.exists():
        raise DeployError(f"calibration data {entry.calibration} does not exist")
    return kw


def entry_key(entry: Entry, preset) -> tuple[str, dict]:
    options = {"input_shapes": entry.input_shapes, "opt_level": entry.opt_level, "precision": entry.precision}
    if entry.dims:  # (absent for static entries: their cache keys stay as they were)
        options["dims"] = entry.dims
    db = entry.db
    if db is None:  # the compile applies the per-user database's records: they are part of the key
        user = path_for(preset, None)
        db = user if user.is_dir() and any(user.iterdir()) else None
    inputs = key_inputs(model=entry.model, preset=preset, options=options,
                        calibration=entry.calibration if entry.precision == "int8" else None, db=db)
    return cache_key(inputs), inputs


@contextlib.contextmanager
def flock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def clean_stale(out: Path, name: str) -> list[str]:
    """Remove what a killed build of this entry left (its temp and old dirs). Hold the entry lock."""
    removed = []
    for pattern in (f".{name}.partial-*", f".{name}.old-*"):
        for p in out.glob(pattern):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


def file_hashes(out: Path, name: str) -> dict[str, str]:
    d = out / name
    return {p.relative_to(out).as_posix(): sha256_file(p) for p in sorted(d.rglob("*")) if p.is_file()}


def cached_manifest(final: Path, key: str) -> dict | None:
    """The manifest of an up-to-date artifact (same key, library intact), else None."""
    try:
        manifest = json.loads((final / MANIFEST).read_text())
        lib = final / manifest["library"]["file"]
        if manifest.get("cache", {}).get("key") == key and sha256_file(lib) == manifest["library"]["sha256"]:
            return manifest
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def reproducible_manifest(manifest: dict, key: str, inputs: dict) -> tuple[dict, dict]:
    """Split a compile's manifest into the reproducible part and the per-build record."""
    manifest = json.loads(json.dumps(manifest))
    build = manifest.pop("build", {})
    record = {"time_utc": build.pop("time_utc", None), "seconds": build.pop("seconds", None)}
    manifest["build"] = build  # what is left is reproducible (the build host's architecture)
    manifest["cache"] = {"key": key, "inputs": inputs}
    return manifest, record


def _compile_into(entry: Entry, kwargs: dict, final: Path, key: str, inputs: dict) -> dict:
    with atomic_dir(final, force=True) as tmp:
        stage = tmp / "compile"
        quiet = not log.verbose()
        was = log.console.quiet
        log.console.quiet = quiet or was
        try:
            compile_model(CompileArgs(output=stage, **kwargs), show=False)
        finally:
            log.console.quiet = was
        for p in stage.iterdir():
            os.rename(p, tmp / p.name)
        stage.rmdir()
        manifest, record = reproducible_manifest(json.loads((tmp / MANIFEST).read_text()), key, inputs)
        write_json(tmp / MANIFEST, manifest)
    return record


def verify_entry(final: Path, entry: Entry) -> dict:
    """The verdict of `deploy verify` (check.judge) where this machine runs the artifact: a crash,
    a missing output or a mismatch fails the entry. "not verified" is only for an artifact that
    cannot run here (another ISA with no emulator, a GPU artifact with no GPU), saying which."""
    result = {"atol": entry.atol, "rtol": entry.rtol}
    art = Artifact(final)
    reason = art.cannot_run_here()
    if reason:
        return {**result, "status": "not verified", "reason": re.sub(r"^artifact \S+ ", "it ", reason)}
    try:
        v = verify(art, entry.model, atol=entry.atol, rtol=entry.rtol)
    except DeployError as e:  # the model or the artifact's own files: a failure, never a pass
        return {**result, "status": "failed", "max_abs": None, "problems": [e.message]}
    if v.status == "skipped":
        return {**result, "status": "not verified", "reason": v.record["reason"]}
    return {**result, "status": v.status, "tolerance": v.record["tolerance"], "inputs": v.record["inputs"],
            "max_abs": v.max_abs, "outputs": v.record["outputs"], **({"problems": v.problems} if v.problems else {})}


def os_error(e: OSError) -> tuple[str, str]:
    if e.errno == errno.ENOSPC:
        return f"disk full: {e}", "free disk space on the artifacts volume and run again"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied: {e}", "make the output directory writable, or set build.output in the config"
    return f"I/O error: {e}", "check the output directory"


def build_entry(entry: Entry, out: Path, verify: bool = True, force: bool = False, previous: dict | None = None) -> dict:
    """Build (or find cached) one entry; never raises for the entry's own failures."""
    t0 = time.perf_counter()
    final = out / entry.name
    r: dict = {"name": entry.name, "model": entry.model_name, "target": entry.target, "precision": entry.precision,
               "key": None, "status": None, "seconds": None, "bytes": None, "verification": None,
               "error": None, "hint": None, "manifest": None, "files": {}, "built_utc": None, "cleaned": []}
    try:
        with flock(out / ".locks" / f"{entry.name}.lock"):
            r["cleaned"] = clean_stale(out, entry.name)
            try:
                preset = get_preset(entry.preset)
                if not entry.model.is_file():
                    raise DeployError(f"model file not found: {entry.model}", hint="fix models.*.path in the config")
                kwargs = compile_kwargs(entry)
                key, inputs = entry_key(entry, preset)
                r["key"] = key
                manifest = None if force else cached_manifest(final, key)
                if manifest is not None:
                    r["status"] = "cached"
                    prev = previous or {}
                    r["built_utc"] = prev.get("built_utc") if prev.get("key") == key else None
                else:
                    record = _compile_into(entry, kwargs, final, key, inputs)
                    r["status"] = "built"
                    r["built_utc"] = record["time_utc"]
                    r["compile_seconds"] = record["seconds"]
                    manifest = read_manifest(final)
                r["manifest"] = manifest
                r["bytes"] = manifest["library"]["bytes"]
                r["files"] = file_hashes(out, entry.name)
            except BaseException:
                if final.exists() and cached_manifest(final, r["key"] or "") is None:
                    shutil.rmtree(final, ignore_errors=True)  # stale: must not ship as if current
                raise
            if verify:
                prev = (previous or {}).get("verification") or {}
                if (r["status"] == "cached" and (previous or {}).get("key") == r["key"] and prev.get("status") == "passed"
                        and (previous or {}).get("files") == r["files"]  # the very bytes that passed
                        and prev.get("atol") == entry.atol and prev.get("rtol") == entry.rtol):
                    r["verification"] = {**prev, "reused": True}
                else:
                    r["verification"] = verify_entry(final, entry)
                if r["verification"]["status"] == "failed":
                    v = r["verification"]
                    r["status"] = "failed"
                    r["error"] = ("does not match ONNX Runtime: " + "; ".join(v.get("problems") or ["outputs differ"]))[:1000]
                    r["hint"] = ("set atol/rtol for this model in the config if the difference is expected, else "
                                 "report the model; `deploy verify` shows the same figures")
                    shutil.rmtree(final, ignore_errors=True)  # a broken artifact never ships
                    r["files"] = {}
            else:
                r["verification"] = {"status": "not verified", "reason": "verification turned off"}
    except DeployError as e:
        r.update(status="failed", error=e.message, hint=e.hint)
    except OSError as e:
        msg, hint = os_error(e)
        r.update(status="failed", error=msg, hint=hint)
    except Exception as e:  # a bug of ours or TVM's: keep the others going
        last = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        r.update(status="failed", error=f"internal error: {type(e).__name__}: {last}"[:500], hint="run with -v")
        if log.verbose():
            import traceback
            traceback.print_exc()
    r["seconds"] = round(time.perf_counter() - t0, 3)
    return r


def run_in_worker(entry: Entry, out: Path, verify: bool, force: bool, previous: dict | None, verbose: bool) -> dict:
    log.set_verbose(verbose)
    if not verbose:
        log.console.quiet = True
    return build_entry(entry, out, verify, force, previous)
