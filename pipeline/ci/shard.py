"""`deploy build --shard K/N`: a deterministic, cost-balanced share of a config's entries.

Every runner of a CI matrix computes the same split on its own, from the config and the files it
names alone (never from the machine it runs on), so the shards need not talk to each other:

- each entry gets an estimated cost (:func:`entry_cost`, integer units): the model's size (nodes
  and bytes, external data included), times factors for what makes a build slower: int8
  (calibration, and a float32 build for the speed check), fp16, a tuning database to apply, a
  cross-linked target (its verification runs under qemu) and a target with device code (nvcc);
- entries are dealt, costliest first (ties by name), each to the shard with the least cost so
  far (ties to the lowest K): the greedy longest-processing-time split (:func:`assign`).

A shard's output records its place (K, N), the entries it owns, the config's sha256 and the tool
versions in ``index.json`` (key ``shard``); ``merge`` checks those before combining shards.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

from ..errors import DeployError
from .config import Config, Entry

SHARD_HINT = "write it as K/N, K from 1 to N: --shard 2/3 builds the second of 3 shards"
BASE_COST = 20               # what any entry costs: import, the build's fixed steps, verification
PRECISION_PERCENT = {"fp32": 100, "fp16": 130, "int8": 300}
TUNED_PERCENT = 150          # a tuning database to read and apply (layout rewrites)
CROSS_PERCENT = 150          # cross-linked; verified under qemu-user when verification is on
DEVICE_PERCENT = 200         # device code compiled by nvcc besides the host code


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N), 1 <= K <= N; anything else is the user's error."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise DeployError(f"--shard '{text}' is not K/N", hint=SHARD_HINT)
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1:
        raise DeployError(f"--shard {text}: N (the number of shards) must be at least 1", hint=SHARD_HINT)
    if not 1 <= k <= n:
        raise DeployError(f"--shard {text}: K must be from 1 to {n}", hint=SHARD_HINT)
    return k, n


def model_size(path: Path) -> tuple[int, int]:
    """(nodes, bytes) of an ONNX file, its external-data files included; (0, 0) if unreadable
    (the build reports that, quickly)."""
    try:
        st = path.stat()
    except OSError:
        return 0, 0
    return _model_size(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _model_size(path: Path, size: int, mtime_ns: int) -> tuple[int, int]:
    import onnx

    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception:
        return 0, 0
    locations = {e.value for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                 for e in t.external_data if e.key == "location"}
    for loc in sorted(locations):
        f = path.parent / loc
        size += f.stat().st_size if f.is_file() else 0
    return len(m.graph.node), size


def entry_cost(entry: Entry) -> int:
    """An entry's estimated build time, in arbitrary integer units (the same on every machine)."""
    from ..targets import get_preset

    nodes, size = model_size(Path(entry.model))
    cost = BASE_COST + nodes + size // 1_000_000
    factors = [PRECISION_PERCENT.get(entry.precision, 100)]
    if entry.db is not None:
        factors.append(TUNED_PERCENT)
    try:
        preset = get_preset(entry.preset)
    except DeployError:
        preset = None  # the build reports it
    if preset is not None and preset.is_cross:
        factors.append(CROSS_PERCENT)
    if preset is not None and preset.host is not None:  # a separate host: the target's own code is device code
        factors.append(DEVICE_PERCENT)
    for f in factors:
        cost = cost * f // 100
    return cost


def assign(costs: dict[str, int], n: int) -> list[list[str]]:
    """Entry names dealt into n shards: costliest first (ties by name), each to the shard with the
    least cost so far (ties to the first). Each shard's names come back sorted."""
    shards: list[list[str]] = [[] for _ in range(n)]
    loads = [0] * n
    for name in sorted(costs, key=lambda x: (-costs[x], x)):
        i = min(range(n), key=lambda j: (loads[j], j))
        shards[i].append(name)
        loads[i] += costs[name]
    return [sorted(s) for s in shards]


def config_sha256(config: Config) -> str:
    return hashlib.sha256(Path(config.path).read_bytes()).hexdigest()


def shard_info(config: Config, entries: list[Entry], k: int, n: int, only: list[str] | None) -> dict:
    """Shard K of N of the selected entries: what its output records (index.json, reports)."""
    from .cachekey import versions

    costs = {e.name: entry_cost(e) for e in entries}
    plan = assign(costs, n)
    mine = plan[k - 1]
    return {"index": k, "count": n, "entries": mine, "total": len(entries),
            "cost": sum(costs[x] for x in mine), "total_cost": sum(costs.values()),
            "config": Path(config.path).name, "config_sha256": config_sha256(config),
            "only": sorted(p for item in only or [] for p in item.split(",") if p) or None,
            "versions": versions()}
