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

Sharding (``shard``, ``merge``): ``--shard K/N`` builds only shard K's entries, a split every
runner computes alike from the config (greedy by estimated cost); ``index.json`` then records
the shard (K, N, its entries, the config's sha256, the tool versions) once they are all done.
``deploy build-merge`` checks N such outputs belong together and combines them into one
directory whose SHA256SUMS is byte for byte the unsharded build's.

Reproducibility: an artifact's files (library and manifest) are a function of its cache key.
The manifest written by ``deploy compile`` records the build time and per-stage seconds; a
matrix build moves those into ``index.json`` (which is per-run and not in SHA256SUMS) and adds
the cache key and what it was computed from.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from .. import log
from ..errors import DeployError
from ..files import write_text
from ..procs import sigint_ignored_by_children, stop_pool
from .cachekey import versions
from .config import Config, select
from .entry import build_entry, flock, os_error, run_in_worker

INDEX = "index.json"
SUMS = "SHA256SUMS"


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
        write_index(out, index)
    return index


def sums_text(out: Path, entries: dict) -> str:
    """SHA256SUMS for the entries whose artifact is in ``out``: one line per file, sorted by path."""
    lines = []
    for name, e in entries.items():
        if (out / name).is_dir():
            lines += [f"{h}  {p}" for p, h in e.get("files", {}).items()]
    return "".join(line + "\n" for line in sorted(lines, key=lambda s: s[66:]))


def write_index(out: Path, index: dict) -> None:
    """index.json, then SHA256SUMS, each replaced in one rename."""
    write_text(out / INDEX, json.dumps(index, indent=2, sort_keys=True, default=str) + "\n")
    write_text(out / SUMS, sums_text(out, index["entries"]))


def record_shard(out: Path, info: dict | None) -> None:
    """Set (a finished shard) or clear (a run starting, or not sharded) index.json's shard record."""
    with flock(out / ".lock"):
        index = read_index(out)
        if info is None and "shard" not in index:
            return
        index.pop("shard", None)
        if info is not None:
            index["shard"] = {**info, "finished_utc": datetime.datetime.now(datetime.timezone.utc)
                              .isoformat(timespec="seconds")}
        write_index(out, index)


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".locks").mkdir(exist_ok=True)
        with flock(out / ".lock"):
            probe = out / f".write-test.{os.getpid()}"
            probe.write_text("")
            probe.unlink()
    except OSError as e:
        msg, hint = os_error(e)
        raise DeployError(f"cannot write to {out}: {msg}", hint=hint)


def build_matrix(config: Config, only: list[str] | None = None, jobs: int | None = None, verify: bool | None = None,
                 force: bool = False, output: Path | None = None, progress=None, shard: dict | None = None) -> list[dict]:
    """Build every selected entry; a failing entry does not stop the others. Returns one dict per entry.

    ``shard`` (``shard.shard_info``) limits the run to that shard's entries; index.json records it
    once every one of them is done (and loses any earlier record when the run starts)."""
    entries = select(config.entries, only)
    if shard is not None:
        entries = [e for e in entries if e.name in set(shard["entries"])]
    out = Path(output).resolve() if output else config.output
    jobs = jobs or config.jobs
    verify = config.verify if verify is None else verify
    check_writable(out)
    record_shard(out, None)  # a shard killed midway must not look finished
    previous = read_index(out)["entries"]
    if entries and (jobs <= 1 or len(entries) <= 1):
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
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)
        try:
            with sigint_ignored_by_children():  # Ctrl-C: this process ends the workers (procs.py)
                futures = {pool.submit(run_in_worker, e, out, verify, force, previous.get(e.name), log.verbose()): e
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
        except BaseException:  # Ctrl-C, or a failure here: the builds in flight stop, not run on unseen
            stop_pool(pool)
            raise
        pool.shutdown()
    if shard is not None:
        record_shard(out, shard)
    order = {e.name: i for i, e in enumerate(entries)}
    return sorted(results, key=lambda r: order[r["name"]])
