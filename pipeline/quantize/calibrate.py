"""Calibration for int8 quantization: load sample data, run the float model, collect activation ranges.

Data: an .npz, or a directory of .npz/.npy files, keyed by input name. Each array is one sample
(the input's shape) or a stack of samples (an extra leading axis, or along a batch axis of 1).
A .npy file holds the input named like the file (or the only input).

Ranges are collected the way ONNX Runtime's quantization/calibrate.py does it: the cleaned-up
ONNX model runs in ONNX Runtime with the tensors to observe added as graph outputs. Three
calibrators share one interface (``collect(array)``, ``range() -> (lo, hi)``):
- minmax: the extremes seen;
- percentile: the 99.999th percentile of |x| (outliers clipped);
- entropy: the |x| threshold that minimizes the KL divergence between the float histogram
  and its 128-level quantization (TensorRT's method, as in ORT's EntropyCalibrater).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx

from ..errors import DeployError
from ..files import sha256_tree
from ..run.reference import ort_session

_SAMPLE_CAP = 1 << 20  # values kept per tensor for the histogram calibrators


# ---------------------------------------------------------------- data

def _split_samples(name: str, arr: np.ndarray, spec: dict, where: str) -> list[np.ndarray]:
    shape = list(spec["shape"])
    if list(arr.shape) == shape:
        return [arr]
    if arr.ndim == len(shape) + 1 and list(arr.shape[1:]) == shape:
        return list(arr)
    if shape and shape[0] == 1 and arr.ndim == len(shape) and list(arr.shape[1:]) == shape[1:]:
        return [a[None] for a in arr]
    raise DeployError(f"calibration data {where}: input '{name}' has shape {list(arr.shape)}, the model expects "
                      f"{shape} (or a stack of them, [S, {', '.join(map(str, shape))}])",
                      hint="save one array per input with the model's input shape, stacked along a new first axis")


def load_calibration(path: Path, specs: list[dict]) -> tuple[list[dict[str, np.ndarray]], str]:
    """Samples (one dict of arrays per sample) and the sha256 of the data, or a DeployError."""
    from ..run.runtime import read_npy, read_npz

    path = Path(path)
    if not path.exists():
        raise DeployError(f"calibration data {path} does not exist",
                          hint="pass an .npz (or a directory of .npy/.npz) keyed by input name")
    files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy")) if path.is_dir() else [path]
    if path.is_file() and path.suffix not in (".npz", ".npy"):
        raise DeployError(f"calibration data {path} is not an .npz or .npy file",
                          hint="save it with numpy.savez(path, **{input_name: samples})")
    if not files:
        raise DeployError(f"calibration directory {path} holds no .npy or .npz files", hint="add samples to it")
    names = [s["name"] for s in specs]
    by_name = {s["name"]: s for s in specs}
    columns: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for f in files:
        if f.suffix == ".npz":
            arrays = read_npz(f, "calibration data")
        else:
            key = f.stem if f.stem in by_name or len(names) != 1 else names[0]
            arrays = {key: read_npy(f, "calibration data")}
        unknown = sorted(set(arrays) - set(names))
        if unknown:
            raise DeployError(f"calibration data {f.name}: unknown input name(s) {unknown}",
                              hint=f"the model's inputs are: {', '.join(names)}")
        for k, a in arrays.items():
            spec = by_name[k]
            if a.size == 0:
                raise DeployError(f"calibration data {f.name}: input '{k}' is empty", hint="add samples")
            want = np.dtype(spec["dtype"])
            if a.dtype != want:
                if a.dtype.kind == want.kind == "f":
                    a = a.astype(want)
                else:
                    raise DeployError(f"calibration data {f.name}: input '{k}' has dtype {a.dtype}, the model "
                                      f"expects {want}", hint=f"convert it with array.astype('{want}')")
            columns[k].extend(_split_samples(k, a, spec, f.name))
    counts = {k: len(v) for k, v in columns.items()}
    if not any(counts.values()):
        raise DeployError(f"calibration data {path} holds no samples", hint="add samples keyed by input name")
    missing = [k for k, c in counts.items() if c == 0]
    if missing:
        raise DeployError(f"calibration data {path} has no samples for input(s) {missing}",
                          hint=f"every input needs samples: {', '.join(names)}")
    if len(set(counts.values())) != 1:
        raise DeployError(f"calibration data {path} has different sample counts per input: {counts}",
                          hint="give every input the same number of samples")
    n = next(iter(counts.values()))
    # the same hash `deploy build` keys its cache with, so manifests and cache keys agree
    return [{k: columns[k][i] for k in names} for i in range(n)], sha256_tree(path)


def random_calibration(specs: list[dict], n: int = 16, seed: int = 0) -> list[dict[str, np.ndarray]]:
    from ..run.runtime import random_inputs

    return [random_inputs(specs, seed + i) for i in range(n)]


def split(samples: list, held_out: float = 0.25) -> tuple[list, list]:
    """(calibration, held-out): the last quarter is held out for the accuracy report (at least 1)."""
    if len(samples) < 2:
        return samples, samples
    k = max(1, int(round(len(samples) * held_out)))
    return samples[:-k], samples[-k:]


# ---------------------------------------------------------------- calibrators

CALIBRATORS: dict[str, type] = {}  # name -> class; the CLI's help and validation read it


def register(cls):
    """Add a calibrator class (with a ``name``) to the registry."""
    CALIBRATORS[cls.name] = cls
    return cls


def check_calibrator(name: str) -> None:
    if name not in CALIBRATORS:
        raise DeployError(f"unknown calibrator '{name}'", hint=f"use one of {', '.join(CALIBRATORS)}")


class Calibrator:
    name = ""

    def __init__(self):
        self.lo, self.hi = np.inf, -np.inf

    def collect(self, a: np.ndarray) -> None:
        self.lo = min(self.lo, float(a.min()))
        self.hi = max(self.hi, float(a.max()))

    def range(self) -> tuple[float, float]:
        return self.lo, self.hi


@register
class MinMax(Calibrator):
    name = "minmax"


class _Sampled(Calibrator):
    """Keeps a bounded random sample of |x| for the histogram-based methods."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.abs: list[np.ndarray] = []
        self.kept = 0
        self.rng = np.random.default_rng(seed)

    def collect(self, a: np.ndarray) -> None:
        super().collect(a)
        v = np.abs(a.astype(np.float32).ravel())
        room = _SAMPLE_CAP // 8
        if v.size > room:
            v = self.rng.choice(v, room, replace=False)
        self.abs.append(v)
        self.kept += v.size
        if self.kept > _SAMPLE_CAP:
            allv = np.concatenate(self.abs)
            self.abs = [self.rng.choice(allv, _SAMPLE_CAP // 2, replace=False)]
            self.kept = self.abs[0].size

    def threshold(self, v: np.ndarray) -> float:
        raise NotImplementedError

    def range(self) -> tuple[float, float]:
        v = np.concatenate(self.abs) if self.abs else np.zeros(1, np.float32)
        t = float(self.threshold(v))
        t = t if t > 0 else float(v.max())
        return max(self.lo, -t), min(self.hi, t)


@register
class Percentile(_Sampled):
    name = "percentile"
    percentile = 99.999

    def threshold(self, v):
        return np.percentile(v, self.percentile)


@register
class Entropy(_Sampled):
    name = "entropy"
    bins, levels = 2048, 128

    def threshold(self, v):
        top = float(v.max())
        if top <= 0:
            return 0.0
        hist, edges = np.histogram(v, bins=self.bins, range=(0, top))
        hist = hist.astype(np.float64)
        best, best_i = np.inf, self.bins
        for i in range(self.levels, self.bins + 1, 8):
            p = hist[:i].copy()
            p[-1] += hist[i:].sum()
            nz = p > 0
            # quantize the first i bins into `levels` groups, spread each group over its non-empty bins
            groups = np.array_split(np.arange(i), self.levels)
            q = np.zeros(i)
            src = hist[:i]
            for g in groups:
                mask = src[g] > 0
                cnt = mask.sum()
                if cnt:
                    q[g[mask]] = src[g].sum() / cnt
            if p.sum() == 0 or q.sum() == 0:
                continue
            pn, qn = p / p.sum(), q / q.sum()
            ok = nz & (qn > 0)
            if (nz & ~(qn > 0)).any():
                qn = np.where(nz & (qn == 0), 1e-10, qn)
                ok = nz
            kl = float(np.sum(pn[ok] * np.log(pn[ok] / qn[ok])))
            if kl < best:
                best, best_i = kl, i
        return float(edges[best_i])


def make_calibrator(name: str) -> Calibrator:
    check_calibrator(name)
    return CALIBRATORS[name]()


# ---------------------------------------------------------------- running the float model

def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    m = copy.deepcopy(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=n))
    return m


def session(model: onnx.ModelProto):
    return ort_session(model, optimize=False)


def run_onnx(model: onnx.ModelProto, samples: list[dict], outputs: list[str] | None = None) -> list[dict]:
    """Run an ONNX model on each sample; returns {output name: array} per sample."""
    sess = session(model)
    names = outputs or [o.name for o in sess.get_outputs()]
    return [dict(zip(names, sess.run(names, s))) for s in samples]


def collect_ranges(model: onnx.ModelProto, tensors: list[str], samples: list[dict],
                   calibrator: str = "minmax") -> dict[str, tuple[float, float]]:
    """Run the float model on the samples and calibrate the range of each named tensor."""
    if not samples:
        raise DeployError("no calibration samples", hint="pass --calibration DATA with at least one sample")
    cals = {t: make_calibrator(calibrator) for t in tensors}
    sess = session(_with_outputs(model, tensors))
    for s in samples:
        for t, a in zip(tensors, sess.run(tensors, s)):
            cals[t].collect(np.asarray(a))
    return {t: c.range() for t, c in cals.items()}
