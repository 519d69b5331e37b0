"""`deploy build-merge`: the outputs of `deploy build --shard K/N`, K = 1..N, combined into one.

Each shard directory is what a shard wrote (index.json with its ``shard`` record, SHA256SUMS and
the artifact directories). The merge takes from each shard the entries that shard owns, checks
their files against the shard's index, and writes one output directory (artifacts, index.json,
SHA256SUMS) in a temp directory renamed into place: the same SHA256SUMS one unsharded build
gives. It refuses, before writing anything, shards of different configs, selections or tool
versions, a shard given twice, and a missing shard.
"""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

from ..errors import DeployError
from ..package import atomic_dir
from .entry import file_hashes
from .matrix import INDEX, write_index

REBUILD_HINT = "build every shard from the same commit with the same installation (one CI run), then merge"


def _label(s: dict) -> str:
    return f"shard {s['info']['index']}/{s['info']['count']} ({s['dir']})"


def read_shard(d: Path) -> dict:
    d = Path(d)
    if not (d / INDEX).is_file():
        inner = d / "artifacts" / INDEX
        raise DeployError(f"{d}: no {INDEX}: not the output of `deploy build --shard K/N`",
                          hint=f"pass {d / 'artifacts'} instead" if inner.is_file()
                          else "pass the directories the shards wrote (their --output / build.output)")
    try:
        index = json.loads((d / INDEX).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DeployError(f"cannot read {d / INDEX}: {e}", hint="download or build that shard again")
    info = index.get("shard") if isinstance(index, dict) else None
    keys = {"index", "count", "entries", "total", "config_sha256", "versions"}
    if not isinstance(info, dict) or not keys <= set(info) or not isinstance(index.get("entries"), dict):
        raise DeployError(f"{d} holds no finished shard: its {INDEX} has no shard record",
                          hint="build it with `deploy build CONFIG --shard K/N` (a shard that was stopped midway "
                               "has no record: build it again)")
    return {"dir": d, "index": index, "info": info}


def _differences(a: dict, b: dict) -> str:
    keys = sorted(set(a) | set(b))
    return ", ".join(f"{k} {a.get(k, '(none)')} vs {b.get(k, '(none)')}" for k in keys if a.get(k) != b.get(k))


def check_shards(shards: list[dict]) -> None:
    """Raise a DeployError naming the shard that does not belong with the first, and how."""
    first = shards[0]
    a = first["info"]
    for s in shards[1:]:
        b = s["info"]
        if b["count"] != a["count"]:
            raise DeployError(f"{_label(s)} is one of {b['count']} shards, {_label(first)} one of {a['count']}",
                              hint="build every shard with the same N in --shard K/N")
        if b["config_sha256"] != a["config_sha256"]:
            raise DeployError(f"{_label(s)} was built from another config than {_label(first)}: config sha256 "
                              f"{b['config_sha256'][:12]} vs {a['config_sha256'][:12]}", hint=REBUILD_HINT)
        if b.get("only") != a.get("only"):
            raise DeployError(f"{_label(s)} was built with another --only than {_label(first)}: "
                              f"{b.get('only')} vs {a.get('only')}", hint="build every shard with the same --only")
        if b["versions"] != a["versions"]:
            raise DeployError(f"{_label(s)} was built with other tool versions than {_label(first)}: "
                              + _differences(b["versions"], a["versions"]), hint=REBUILD_HINT)
    n = a["count"]
    seen: dict[int, dict] = {}
    for s in shards:
        k = s["info"]["index"]
        if k in seen:
            raise DeployError(f"shard {k}/{n} is given twice: {seen[k]['dir']} and {s['dir']}",
                              hint="pass each shard's directory once")
        seen[k] = s
    missing = [k for k in range(1, n + 1) if k not in seen]
    if missing:
        raise DeployError(f"shard{'s' if len(missing) > 1 else ''} {', '.join(f'{k}/{n}' for k in missing)} "
                          f"missing: given {', '.join(f'{k}/{n}' for k in sorted(seen))}",
                          hint=f"pass the outputs of all {n} shards (`deploy build --shard K/{n}` for K = 1..{n})")
    owner: dict[str, dict] = {}
    for s in shards:
        for name in s["info"]["entries"]:
            if name in owner:
                raise DeployError(f"{_label(s)} and {_label(owner[name])} both own entry {name}", hint=REBUILD_HINT)
            owner[name] = s
    if len(owner) != a["total"]:
        raise DeployError(f"the shards own {len(owner)} entries, their config has {a['total']}", hint=REBUILD_HINT)
    for s in shards:
        for name in s["info"]["entries"]:
            e = s["index"]["entries"].get(name)
            if not isinstance(e, dict):
                raise DeployError(f"{_label(s)}: entry {name} is not in its {INDEX}", hint="build that shard again")
            if (s["dir"] / name).is_dir():
                files = file_hashes(s["dir"], name)
                listed = e.get("files") or {}
                bad = sorted(p for p in set(files) | set(listed) if files.get(p) != listed.get(p))
                if bad:
                    raise DeployError(f"{_label(s)}: {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} "
                                      f"{'does' if len(bad) == 1 else 'do'} not match its {INDEX}",
                                      hint="the shard's output was changed or copied incompletely: "
                                           "download or build it again")


def merge_shards(dirs: list[Path], out: Path, force: bool = False) -> tuple[list[dict], dict]:
    """Check and combine shard outputs into ``out``; returns the entries (in name order) and the merge record."""
    if not dirs:
        raise DeployError("no shard directories given", hint="deploy build-merge SHARD_DIR... -o OUT")
    out = Path(out).resolve()
    shards = [read_shard(d) for d in dirs]
    for s in shards:
        if s["dir"].resolve() == out:
            raise DeployError(f"the output {out} is one of the shards", hint="merge into a new directory with -o")
    check_shards(shards)
    shards.sort(key=lambda s: s["info"]["index"])
    a = shards[0]["info"]
    entries: dict[str, dict] = {}
    record = {"count": a["count"], "config": a.get("config"), "config_sha256": a["config_sha256"],
              "only": a.get("only"), "versions": a["versions"],
              "shards": {f"{s['info']['index']}/{a['count']}": {"from": str(s["dir"]), "entries": s["info"]["entries"],
                                                                "finished_utc": s["info"].get("finished_utc")}
                         for s in shards}}
    with atomic_dir(out, force=force) as tmp:
        for s in shards:
            for name in s["info"]["entries"]:
                entries[name] = {**s["index"]["entries"][name], "shard": f"{s['info']['index']}/{a['count']}"}
                if (s["dir"] / name).is_dir():
                    shutil.copytree(s["dir"] / name, tmp / name, symlinks=True)
        index = {"format": 1, "entries": dict(sorted(entries.items())), "merged": record,
                 "updated_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        write_index(tmp, index)
    return list(index["entries"].values()), record
