"""`deploy build`: a matrix of models x targets x precisions from one config, cached by content.

Config (``deploy.toml``; relative paths are relative to the file)::

    [build]
    output = "artifacts"          # where the matrix goes
    jobs = 1                      # parallel builds (separate processes)
    verify = true                 # compare each artifact that runs here with ONNX Runtime

    [targets.x86-64]              # a preset name (or `preset = "path/to/board.toml"`)
    db = "tuning/x86-64"          # optional MetaSchedule database for this target

    [models.tiny_cnn]
    path = "examples/tiny_cnn.onnx"
    input_shapes = { image = [1, 3, 32, 32] }
    targets = ["x86-64", "rpi4"]  # default: every [targets.*]
    precisions = ["fp32"]         # fp32 | fp16 | int8; entries for fp16/int8 are named MODEL-TARGET-PREC
    calibration = "calib/"        # int8 calibration data (file or directory)
    atol = 1e-4                   # verification tolerance
    rtol = 1e-3
    opt_level = 3

Layout of the output directory::

    artifacts/
      MODEL-TARGET[-PREC]/{model.so, manifest.json}  one per entry, replaced by one rename
      index.json                                   every entry: key, status, times, verification, manifest
      SHA256SUMS                                   every file of every artifact (`sha256sum -c SHA256SUMS`)
      .lock, .locks/ENTRY.lock                     flock: index updates; one builder per entry

Reproducibility: an artifact's files (library and manifest) are a function of its cache key.
The manifest written by ``deploy compile`` records the build time and per-stage seconds; a
matrix build moves those into ``index.json`` (which is per-run and not in SHA256SUMS) and adds
the cache key and what it was computed from.

An entry asking for an option this deploy cannot do yet (a tuning database, fp16/int8: the
CompileArgs field does not exist) fails with a message naming it; nothing is built for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import fnmatch
import json
import os
import re
import shutil
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from . import log
from .errors import DeployError

INDEX = "index.json"
SUMS = "SHA256SUMS"
PRECISIONS = ("fp32", "fp16", "int8")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_BUILD_KEYS = {"output", "jobs", "verify"}
_TARGET_KEYS = {"preset", "db"}
_MODEL_KEYS = {"path", "input_shapes", "targets", "precisions", "calibration", "atol", "rtol", "opt_level"}
STALL_ENV = "DEPLOY_BUILD_TEST_STALL"  # tests only: an entry name to hang on just before its rename


@dataclass
class Entry:
    name: str
    model_name: str
    model: Path
    target: str
    preset: str
    precision: str = "fp32"
    input_shapes: dict = field(default_factory=dict)
    opt_level: int = 3
    calibration: Path | None = None
    db: Path | None = None
    atol: float = 1e-4
    rtol: float = 1e-3


@dataclass
class Config:
    path: Path
    output: Path
    jobs: int
    verify: bool
    entries: list[Entry]


# ---------------------------------------------------------------- config

def _bad(path: Path, what: str, hint: str | None = None) -> DeployError:
    return DeployError(f"{path}: {what}", hint=hint)


def _check_keys(path: Path, table: str, data, known: set[str]) -> None:
    if not isinstance(data, dict):
        raise _bad(path, f"'{table}' must be a table")
    unknown = sorted(set(data) - known)
    if unknown:
        raise _bad(path, f"unknown key(s) {unknown} in table '{table}'", hint=f"valid keys: {sorted(known)}")


def _shapes(path: Path, model: str, value) -> dict[str, list[int]]:
    if not isinstance(value, dict) or not all(
            isinstance(v, list) and all(isinstance(d, int) and d > 0 for d in v) for v in value.values()):
        raise _bad(path, f"models.{model}.input_shapes must map input names to lists of positive ints",
                   hint='e.g. input_shapes = { image = [1, 3, 224, 224] }')
    return {str(k): list(v) for k, v in value.items()}


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise DeployError(f"build config not found: {path}", hint="pass a deploy.toml (see README, 'CI builds')")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise DeployError(f"cannot read {path}: {e}")
    except tomllib.TOMLDecodeError as e:
        raise DeployError(f"{path} is not valid TOML: {e}")
    base = path.resolve().parent
    unknown = sorted(set(data) - {"build", "targets", "models"})
    if unknown:
        raise _bad(path, f"unknown table(s) {unknown}", hint="a build config has the tables build, targets.NAME and models.NAME")
    build = data.get("build", {})
    _check_keys(path, "build", build, _BUILD_KEYS)
    jobs = build.get("jobs", 1)
    if not isinstance(jobs, int) or jobs < 1:
        raise _bad(path, "build.jobs must be a positive integer")
    targets = data.get("targets", {})
    models = data.get("models", {})
    if not models:
        raise _bad(path, "no models.NAME tables", hint='add a table models.net with path = "net.onnx"')
    if not targets:
        raise _bad(path, "no targets.NAME tables", hint="add a table, e.g. targets.x86-64 (see `deploy targets`)")
    tinfo: dict[str, tuple[str, Path | None]] = {}
    for tname, t in targets.items():
        _check_keys(path, f"targets.{tname}", t, _TARGET_KEYS)
        if not _NAME.match(tname):
            raise _bad(path, f"target name '{tname}' may only use letters, digits, '.', '_', '+', '-'")
        preset = t.get("preset", tname)
        if preset.endswith(".toml"):
            preset = str((base / preset).resolve())
        tinfo[tname] = (preset, (base / t["db"]).resolve() if t.get("db") else None)
    entries: list[Entry] = []
    for mname, m in models.items():
        _check_keys(path, f"models.{mname}", m, _MODEL_KEYS)
        if not _NAME.match(mname):
            raise _bad(path, f"model name '{mname}' may only use letters, digits, '.', '_', '+', '-'")
        if "path" not in m:
            raise _bad(path, f"models.{mname} has no path", hint=f'add path = "{mname}.onnx"')
        mtargets = m.get("targets", list(targets))
        missing = [t for t in mtargets if t not in tinfo]
        if missing:
            raise _bad(path, f"models.{mname} names target(s) {missing} with no targets.NAME table",
                       hint=f"define them or use one of {list(tinfo)}")
        precisions = m.get("precisions", ["fp32"])
        bad = [p for p in precisions if p not in PRECISIONS]
        if bad:
            raise _bad(path, f"models.{mname}.precisions: unknown {bad}", hint=f"use {list(PRECISIONS)}")
        for tname in mtargets:
            for prec in precisions:
                entries.append(Entry(
                    name=f"{mname}-{tname}" + ("" if prec == "fp32" else f"-{prec}"),
                    model_name=mname, model=(base / m["path"]).resolve(), target=tname,
                    preset=tinfo[tname][0], precision=prec,
                    input_shapes=_shapes(path, mname, m.get("input_shapes", {})),
                    opt_level=int(m.get("opt_level", 3)),
                    calibration=(base / m["calibration"]).resolve() if m.get("calibration") else None,
                    db=tinfo[tname][1], atol=float(m.get("atol", 1e-4)), rtol=float(m.get("rtol", 1e-3))))
    seen: dict[str, Entry] = {}
    for e in entries:
        if e.name in seen:
            raise _bad(path, f"two entries are both named '{e.name}'", hint="rename a model or a target")
        seen[e.name] = e
    output = (base / build.get("output", "artifacts")).resolve()
    return Config(path=path, output=output, jobs=jobs, verify=bool(build.get("verify", True)), entries=entries)


def select(entries: list[Entry], only: list[str] | None) -> list[Entry]:
    """Entries whose name, model or target matches one of the (glob) patterns."""
    if not only:
        return entries
    patterns = [p for item in only for p in item.split(",") if p]
    chosen = [e for e in entries if any(fnmatch.fnmatchcase(x, p) for p in patterns
                                        for x in (e.name, e.model_name, e.target))]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(x, p) for e in entries
                                                for x in (e.name, e.model_name, e.target))]
    if unmatched:
        raise DeployError(f"--only {', '.join(unmatched)} matches no entry",
                          hint="entries: " + ", ".join(e.name for e in entries))
    return chosen


# ---------------------------------------------------------------- one entry

def compile_kwargs(entry: Entry) -> dict:
    """CompileArgs keywords for an entry; an option this deploy does not have yet is an error."""
    from .compile import CompileArgs

    have = {f.name for f in dataclasses.fields(CompileArgs)}
    kw: dict = {"model": entry.model, "target": entry.preset, "input_shapes": entry.input_shapes,
                "opt_level": entry.opt_level}
    wanted = {}
    if entry.precision != "fp32":
        wanted["precision"] = (entry.precision, f"precision '{entry.precision}'")
    if entry.precision == "int8" and entry.calibration is not None:
        wanted["calibration"] = (entry.calibration, "calibration data")
    if entry.db is not None:
        wanted["db"] = (entry.db, f"a tuning database ({entry.db.name})")
    for fname, (value, what) in wanted.items():
        if fname not in have:
            raise DeployError(f"{what} is not supported by this version of deploy (compile has no '{fname}' option)",
                              hint="remove it from the config, or update deploy")
        kw[fname] = value
    if entry.db is not None and not entry.db.exists():
        raise DeployError(f"tuning database {entry.db} does not exist", hint="run `deploy tune` first, or restore it")
    if entry.calibration is not None and entry.precision == "int8" and not entry.calibration.exists():
        raise DeployError(f"calibration data {entry.calibration} does not exist")
    return kw


def entry_key(entry: Entry, preset) -> tuple[str, dict]:
    from .cachekey import cache_key, key_inputs

    options = {"input_shapes": entry.input_shapes, "opt_level": entry.opt_level, "precision": entry.precision}
    inputs = key_inputs(model=entry.model, preset=preset, options=options,
                        calibration=entry.calibration if entry.precision == "int8" else None, db=entry.db)
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
    from .load import sha256_file

    d = out / name
    return {p.relative_to(out).as_posix(): sha256_file(p) for p in sorted(d.rglob("*")) if p.is_file()}


def cached_manifest(final: Path, key: str) -> dict | None:
    """The manifest of an up-to-date artifact (same key, library intact), else None."""
    from .load import sha256_file
    from .package import MANIFEST

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
    from .compile import CompileArgs, compile_model
    from .package import MANIFEST, atomic_dir, write_json

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
        if os.environ.get(STALL_ENV) == entry.name:  # tests: be killed with the artifact half-made
            (tmp / ".stalled").touch()
            time.sleep(3600)
    return record


def verify_entry(final: Path, entry: Entry) -> dict:
    """Compare with ONNX Runtime where this machine can run the artifact; say why not otherwise."""
    from .runtime import Artifact
    from .verify import verify

    result = {"atol": entry.atol, "rtol": entry.rtol}
    try:
        # No check_host() of our own: Artifact.run decides what it can run here (natively now, ARM
        # under emulation once that lands) and raises DeployError saying why not.
        errors = verify(Artifact(final), entry.model, atol=entry.atol, rtol=entry.rtol)
    except DeployError as e:
        return {**result, "status": "not verified", "reason": re.sub(r"^artifact \S+ ", "it ", e.message)}
    result.update(status="passed" if all(e.ok for e in errors) else "failed",
                  max_abs=max((e.max_abs for e in errors), default=0.0),
                  max_rel=max((e.max_rel for e in errors), default=0.0),
                  outputs={e.name: {"max_abs": e.max_abs, "max_rel": e.max_rel, "ok": e.ok} for e in errors})
    return result


def _os_error(e: OSError) -> tuple[str, str]:
    if e.errno == errno.ENOSPC:
        return f"disk full: {e}", "free disk space on the artifacts volume and run again"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied: {e}", "make the output directory writable, or set build.output in the config"
    return f"I/O error: {e}", "check the output directory"


def build_entry(entry: Entry, out: Path, verify: bool = True, force: bool = False, previous: dict | None = None) -> dict:
    """Build (or find cached) one entry; never raises for the entry's own failures."""
    from .targets import get_preset

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
                    from .package import read_manifest

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
                        and prev.get("atol") == entry.atol and prev.get("rtol") == entry.rtol):
                    r["verification"] = {**prev, "reused": True}
                else:
                    r["verification"] = verify_entry(final, entry)
                if r["verification"]["status"] == "failed":
                    v = r["verification"]
                    r["status"] = "failed"
                    r["error"] = (f"outputs differ from ONNX Runtime: max abs error {v['max_abs']:.3g}, "
                                  f"max rel error {v['max_rel']:.3g} (atol {entry.atol}, rtol {entry.rtol})")
                    r["hint"] = "loosen atol/rtol for this model if expected, else report the model"
            else:
                r["verification"] = {"status": "not verified", "reason": "verification turned off"}
    except DeployError as e:
        r.update(status="failed", error=e.message, hint=e.hint)
    except OSError as e:
        msg, hint = _os_error(e)
        r.update(status="failed", error=msg, hint=hint)
    except Exception as e:  # a bug of ours or TVM's: keep the others going
        last = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        r.update(status="failed", error=f"internal error: {type(e).__name__}: {last}"[:500], hint="run with -v")
        if log.verbose():
            import traceback
            traceback.print_exc()
    r["seconds"] = round(time.perf_counter() - t0, 3)
    return r


def _worker(entry: Entry, out: Path, verify: bool, force: bool, previous: dict | None, verbose: bool) -> dict:
    log.set_verbose(verbose)
    if not verbose:
        log.console.quiet = True
    return build_entry(entry, out, verify, force, previous)


# ---------------------------------------------------------------- the index

def read_index(out: Path) -> dict:
    try:
        data = json.loads((out / INDEX).read_text())
        if isinstance(data, dict) and isinstance(data.get("entries"), dict):
            return data
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        log.warn(f"{out / INDEX} is unreadable; starting a new one")
    return {"format": 1, "entries": {}}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def update_index(out: Path, results: list[dict]) -> dict:
    """Merge results into index.json and rewrite SHA256SUMS, under the output's lock."""
    with flock(out / ".lock"):
        for stale in [*out.glob(f".{INDEX}.*.tmp"), *out.glob(f".{SUMS}.*.tmp")]:
            stale.unlink(missing_ok=True)  # left by a killed run; nobody else writes while we hold the lock
        index = read_index(out)
        for r in results:
            index["entries"][r["name"]] = {k: v for k, v in r.items() if k != "cleaned"}
        index["entries"] = dict(sorted(index["entries"].items()))
        index["updated_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        _write_atomic(out / INDEX, json.dumps(index, indent=2, sort_keys=True, default=str) + "\n")
        lines = []
        for name, e in index["entries"].items():
            if (out / name).is_dir():
                lines += [f"{h}  {p}" for p, h in e.get("files", {}).items()]
        _write_atomic(out / SUMS, "".join(line + "\n" for line in sorted(lines, key=lambda s: s[66:])))
    return index


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".locks").mkdir(exist_ok=True)
        with flock(out / ".lock"):
            probe = out / f".write-test.{os.getpid()}"
            probe.write_text("")
            probe.unlink()
    except OSError as e:
        msg, hint = _os_error(e)
        raise DeployError(f"cannot write to {out}: {msg}", hint=hint)


# ---------------------------------------------------------------- the matrix

def build_matrix(config: Config, only: list[str] | None = None, jobs: int | None = None, verify: bool | None = None,
                 force: bool = False, output: Path | None = None, progress=None) -> list[dict]:
    """Build every selected entry; a failing entry does not stop the others. Returns one dict per entry."""
    entries = select(config.entries, only)
    out = Path(output).resolve() if output else config.output
    jobs = jobs or config.jobs
    verify = config.verify if verify is None else verify
    check_writable(out)
    previous = read_index(out)["entries"]
    if entries and (jobs <= 1 or len(entries) <= 1):
        from .cachekey import versions

        versions()  # imports TVM and asks the toolchain once, so the first entry's time is its own
    results: list[dict] = []

    def done(r: dict) -> None:
        update_index(out, [r])
        results.append(r)
        if progress:
            progress(r, len(results), len(entries))

    if jobs <= 1 or len(entries) <= 1:
        for e in entries:
            done(build_entry(e, out, verify, force, previous.get(e.name)))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")  # TVM in a forked process is not safe
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(_worker, e, out, verify, force, previous.get(e.name), log.verbose()): e
                       for e in entries}
            for f in as_completed(futures):
                e = futures[f]
                try:
                    r = f.result()
                except Exception as exc:  # the worker process died (killed, out of memory)
                    r = {"name": e.name, "model": e.model_name, "target": e.target, "precision": e.precision,
                         "status": "failed", "error": f"build process died: {type(exc).__name__}: {exc}"[:300],
                         "hint": "run again with --jobs 1 to see the error", "seconds": None, "bytes": None,
                         "verification": None, "key": None, "files": {}}
                done(r)
    order = {e.name: i for i, e in enumerate(entries)}
    return sorted(results, key=lambda r: order[r["name"]])


# ---------------------------------------------------------------- reports

def verification_text(r: dict) -> str:
    v = r.get("verification") or {}
    if v.get("status") in ("passed", "failed"):
        return f"{v['status']} (max abs {v['max_abs']:.2g})"
    if v.get("status") == "not verified":
        return f"not verified: {v.get('reason', '')}"
    return "-"


def summary_json(results: list[dict], out: Path) -> dict:
    keep = ("name", "model", "target", "precision", "status", "key", "seconds", "bytes", "verification", "error", "hint")
    counts = {s: sum(r["status"] == s for r in results) for s in ("built", "cached", "failed")}
    verified = sum((r.get("verification") or {}).get("status") == "passed" for r in results)
    return {"output": str(out), "counts": {**counts, "verified": verified, "total": len(results)},
            "ok": counts["failed"] == 0, "entries": [{k: r.get(k) for k in keep} for r in results]}


def print_table(results: list[dict], console) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table("entry", "status", "time", "size", "verification", "error", title="deploy build")
    colors = {"built": "green", "cached": "cyan", "failed": "red"}
    for r in results:
        status = r["status"] + (" (key unchanged)" if r["status"] == "cached" else "")
        t.add_row(r["name"], f"[{colors[r['status']]}]{status}[/]",
                  f"{r['seconds']:.1f} s" if r.get("seconds") is not None else "-",
                  f"{r['bytes'] / 1e6:.2f} MB" if r.get("bytes") else "-",
                  escape(verification_text(r)), escape((r.get("error") or "")[:300]))
    console.print(t)
    c = summary_json(results, Path("."))["counts"]
    console.print(f"{c['total']} entries: {c['built']} built, {c['cached']} cached, {c['failed']} failed; "
                  f"{c['verified']} verified against ONNX Runtime")


def junit_xml(results: list[dict]) -> str:
    import xml.etree.ElementTree as ET

    failures = sum(r["status"] == "failed" for r in results)
    total = sum(r.get("seconds") or 0 for r in results)
    suites = ET.Element("testsuites", name="deploy build", tests=str(len(results)), failures=str(failures))
    suite = ET.SubElement(suites, "testsuite", name="deploy build", tests=str(len(results)), failures=str(failures),
                          errors="0", skipped="0", time=f"{total:.3f}")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"deploy.{r['model']}", name=r["name"],
                             time=f"{r.get('seconds') or 0:.3f}")
        if r["status"] == "failed":
            fail = ET.SubElement(case, "failure", message=(r.get("error") or "failed")[:500], type="BuildFailure")
            fail.text = (r.get("error") or "") + (f"\nfix: {r['hint']}" if r.get("hint") else "")
        out = ET.SubElement(case, "system-out")
        out.text = (f"status: {r['status']}\nkey: {r.get('key')}\nbytes: {r.get('bytes')}\n"
                    f"verification: {verification_text(r)}\n")
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
