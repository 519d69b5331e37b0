"""The tuning database: MetaSchedule records kept per full target, shared across models.

Layout (plain JSON-lines text, one record per line, so files diff and merge cleanly)::

    ROOT/<preset>-<key>/target.json                    what the records are for
    ROOT/<preset>-<key>/database_workload.json         one TIR workload per line
    ROOT/<preset>-<key>/database_tuning_record.json    one measured candidate per line

``key`` hashes the full TVM target (kind, CPU, features, cores, GPU arch) and the TVM version:
raw MetaSchedule matches records by workload alone, so a folder per target keeps records tuned
for one machine from being applied to another. MetaSchedule appends each record as it is
measured, so a killed run keeps what it measured; a line cut short by a kill is dropped on open.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import log
from ..backends import families, for_family, for_tvm_kind
from ..errors import DeployError
from ..files import cache_root, check_output_path, write_lines, write_text
from ..targets import Preset

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
REJECTED = "rejected_records.json"  # records set aside because they no longer load
META = "target.json"
FAILED_RUN = 1e9  # MetaSchedule records failed runs with 1e10 s


def default_root() -> Path:
    env = os.environ.get("DEPLOY_TUNING_DB")
    if env:
        return Path(env)
    return cache_root() / "tuning"


def target_identity(preset: Preset) -> dict:
    import tvm

    return {"target": preset.target_json(), "tvm": tvm.__version__}


def target_key(preset: Preset) -> str:
    blob = json.dumps(target_identity(preset), sort_keys=True, default=str)
    return f"{preset.name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _repair(path: Path) -> int:
    """Drop lines that do not parse (a write cut short by a kill); returns how many."""
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    good = []
    for ln in lines:
        if not ln.strip():
            continue
        try:
            json.loads(ln)
            good.append(ln)
        except json.JSONDecodeError:
            pass
    dropped = len([ln for ln in lines if ln.strip()]) - len(good)
    if dropped:
        write_lines(path, good)
    return dropped


def _drop_unreplayable(path: Path) -> int:
    """Move records whose schedule trace does not replay on their workload to REJECTED.

    MetaSchedule files a record under the first stored workload that is structurally equal to
    the tuned kernel, and structural equality ignores block names, which traces refer to: a
    kernel of another model (an int8 build's mean, say) can leave records that no longer load
    for the stored workload, and one such record makes the whole database unreadable.
    """
    from tvm.s_tir import meta_schedule as ms

    workloads = [ms.database.Workload.from_json(json.loads(ln))
                 for ln in (path / WORKLOADS).read_text().splitlines() if ln.strip()]
    good, bad = [], []
    for ln in (path / RECORDS).read_text().splitlines():
        if not ln.strip():
            continue
        try:
            idx, rec = json.loads(ln)
            ms.database.TuningRecord.from_json(rec, workloads[idx])
            good.append(ln)
        except Exception:  # noqa: BLE001 - any record that does not load is set aside
            bad.append(ln)
    if bad:
        with open(path / REJECTED, "a") as f:
            f.write("".join(ln + "\n" for ln in bad))
        write_lines(path / RECORDS, good)
    return len(bad)


@dataclass
class TargetDB:
    """The records of one target."""

    path: Path

    @property
    def backend(self):
        """The backend of the target in target.json (None when there is none)."""
        meta = self.path / META
        kind = json.loads(meta.read_text()).get("target", {}).get("kind") if meta.exists() else None
        return None if kind is None else for_tvm_kind(str(kind))

    def open(self):
        from tvm.s_tir import meta_schedule as ms

        # Records of tensorized kernels name their intrinsic (deploy's VNNI one, or TVM's x86/ARM
        # ones the search used): reading them needs those registered, in any process. A folder
        # that does not say its target gets every family's.
        backend = self.backend
        for b in [backend] if backend is not None else [for_family(f) for f in families()]:
            b.load_tensor_intrinsics()
        self.path.mkdir(parents=True, exist_ok=True)
        _repair(self.path / WORKLOADS)
        _repair(self.path / RECORDS)
        try:
            return ms.database.JSONDatabase(work_dir=str(self.path), module_equality="structural")
        except Exception:  # noqa: BLE001 - set aside the records that do not load, then retry
            n = _drop_unreplayable(self.path)
            if n:
                log.warn(f"set aside {n} tuning record(s) whose schedule no longer applies to their kernel "
                         f"({self.path / REJECTED})")
        try:
            return ms.database.JSONDatabase(work_dir=str(self.path), module_equality="structural")
        except Exception as e:
            raise DeployError(f"tuning database {self.path} cannot be read: {str(e).strip().splitlines()[-1][:200]}",
                              hint="move the folder away to start a new database")

    def stats(self) -> dict:
        meta = json.loads((self.path / META).read_text()) if (self.path / META).exists() else {}
        records = valid = 0
        if (self.path / RECORDS).exists():
            for ln in (self.path / RECORDS).read_text().splitlines():
                try:
                    rec = json.loads(ln)[1]
                except (json.JSONDecodeError, IndexError, TypeError):
                    continue
                records += 1
                secs = rec[1] if isinstance(rec, list) and len(rec) > 1 else None
                if secs and min(float(s) for s in secs) < FAILED_RUN:
                    valid += 1
        workloads = 0
        if (self.path / WORKLOADS).exists():
            workloads = sum(1 for ln in (self.path / WORKLOADS).read_text().splitlines() if ln.strip())
        return {"name": self.path.name, "preset": meta.get("preset"), "workloads": workloads,
                "records": records, "valid_records": valid, "tvm": meta.get("tvm")}


def path_for(preset: Preset, root: Path | None = None) -> Path:
    """Where the records of ``preset`` live under ``root`` (default: the per-user database)."""
    return (Path(root) if root else default_root()) / target_key(preset)


def for_target(preset: Preset, root: Path | None = None) -> TargetDB:
    """The database folder of ``preset`` under ``root``, created with its target.json."""
    path = path_for(preset, root)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DeployError(f"cannot create tuning database {path}: {e.strerror}", hint="pass a writable --db DIR")
    meta = path / META
    if not meta.exists():
        write_text(meta, json.dumps({"preset": preset.name, **target_identity(preset)}, indent=2, sort_keys=True,
                                    default=str))
    return TargetDB(path)


def list_dbs(root: Path | None = None) -> list[TargetDB]:
    root = Path(root) if root else default_root()
    if not root.is_dir():
        return []
    return [TargetDB(p) for p in sorted(root.iterdir()) if (p / META).exists()]


def merge_into(dest: TargetDB, src: TargetDB) -> int:
    """Copy src's records (not already in dest) into dest; returns how many were added."""
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    d, s = dest.open(), src.open()
    def key(r):
        return tvm_ffi.structural_hash(r.workload.mod), str(r.trace), tuple(float(x) for x in (r.run_secs or []))

    seen = {key(r) for r in d.get_all_tuning_records()}
    added = 0
    for r in s.get_all_tuning_records():
        k = key(r)
        if k in seen:
            continue
        w = d.commit_workload(r.workload.mod)
        d.commit_tuning_record(ms.database.TuningRecord(r.trace, w, r.run_secs, r.target, r.args_info))
        seen.add(k)
        added += 1
    return added


def merge_roots(dest_root: Path, src_root: Path) -> dict[str, int]:
    """Merge every target folder of src_root into dest_root (folders matched by key)."""
    out = {}
    for src in list_dbs(src_root):
        dest_path = Path(dest_root) / src.path.name
        if not (dest_path / META).exists():
            try:
                dest_path.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src.path / META, dest_path / META)
            except OSError as e:
                raise DeployError(f"cannot write tuning database {dest_path}: {e.strerror or e}",
                                  hint="pass a writable --db DIR (the default is under $XDG_CACHE_HOME)") from e
        out[src.path.name] = merge_into(TargetDB(dest_path), src)
    return out


def export_archive(root: Path, out: Path) -> Path:
    root = Path(root)
    if not list_dbs(root):
        raise DeployError(f"no tuning database under {root}", hint="tune first, or pass --db DIR")
    check_output_path(out, "-o")
    tmp = Path(str(out) + ".tmp")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for db in list_dbs(root):
                for f in (META, WORKLOADS, RECORDS):
                    if (db.path / f).exists():
                        tar.add(db.path / f, arcname=f"{db.path.name}/{f}")
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DeployError(f"cannot write {out}: {e.strerror or e}", hint="choose another -o") from e
    return out


def import_archive(archive: Path, root: Path) -> dict[str, int]:
    if not Path(archive).is_file():
        raise DeployError(f"archive not found: {archive}", hint="pass a file made by `deploy db export`")
    with tempfile.TemporaryDirectory() as d:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(d, filter="data")
        except (tarfile.TarError, EOFError) as e:  # (EOFError: a gzip stream cut short)
            raise DeployError(f"{archive} is not a tuning database archive: {e}", hint="use `deploy db export` to make one")
        return merge_roots(Path(root), Path(d))
