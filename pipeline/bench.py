"""Latency of an artifact next to ONNX Runtime's, same inputs, same thread count, one run."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .runtime import Artifact, random_inputs
from .verify import ort_session


@dataclass
class Latency:
    median_ms: float
    p90_ms: float
    samples: int

    @classmethod
    def of(cls, seconds: list[float]) -> "Latency":
        ms = np.asarray(seconds) * 1e3
        return cls(float(np.median(ms)), float(np.percentile(ms, 90)), len(ms))


def set_threads(threads: int) -> None:
    """TVM's thread pool reads TVM_NUM_THREADS when it starts: call before the first run."""
    os.environ["TVM_NUM_THREADS"] = str(threads)


def bench_artifact(artifact: Artifact, inputs: dict[str, np.ndarray], repeat: int, min_seconds: float) -> Latency:
    single = min(artifact.time(inputs, number=1, repeat=1))
    number = max(1, int(min_seconds / repeat / max(single, 1e-6)))
    return Latency.of(artifact.time(inputs, number=number, repeat=repeat))


def bench_ort(model_path: Path, inputs: dict[str, np.ndarray], threads: int, repeat: int, min_seconds: float) -> Latency:
    sess = ort_session(model_path, threads)
    sess.run(None, inputs)
    t0 = time.perf_counter()
    sess.run(None, inputs)
    single = time.perf_counter() - t0
    number = max(1, int(min_seconds / repeat / max(single, 1e-6)))
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            sess.run(None, inputs)
        samples.append((time.perf_counter() - t0) / number)
    return Latency.of(samples)


def bench(artifact: Artifact, model_path: Path | None, threads: int = 2, repeat: int = 20,
          min_seconds: float = 2.0) -> dict:
    set_threads(threads)
    inputs = random_inputs(artifact.inputs)
    result = {"threads": threads, "deploy": bench_artifact(artifact, inputs, repeat, min_seconds).__dict__}
    if model_path is not None:
        ort = bench_ort(Path(model_path), inputs, threads, repeat, min_seconds)
        result["onnxruntime"] = ort.__dict__
        result["ratio"] = result["deploy"]["median_ms"] / ort.median_ms
    return result
