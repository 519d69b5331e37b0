"""int8 against float32 on this CPU, in one run: latency, artifact size and agreement.

    .venv/bin/python scripts/bench_int8.py [--budget 0] [--models resnet18 mobilenet_v2] [--samples 64]

For each model (exported from PyTorch, batch 1, random weights: nothing is downloaded) it builds
float32 and int8 (minmax calibration on 32 random-normal samples) artifacts, with default
schedules, or after tuning both with --budget each into one database, and prints:
latency of each and their ratio (measured in the same process, one after the other), the size
of the libraries, and on --samples fresh inputs the int8 outputs' cosine similarity to float32
and top-1 agreement with float32. The models have random weights: their logits are close to
each other, so top-1 agreement here is a harsher test than on a trained classifier.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # pipeline/ and the model zoo (zoo/)

import pipeline  # noqa: E402
from pipeline.run.bench import bench  # noqa: E402
from pipeline.run.runtime import random_inputs  # noqa: E402
from pipeline.tune import TuneArgs, parse_duration, tune_model  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from bench_speed import export  # noqa: E402  the same PyTorch exports as the speed benchmark


def agreement(fp32, int8, samples: int) -> dict:
    cos, agree = [], 0
    for i in range(samples):
        x = random_inputs(fp32.inputs, seed=1000 + i)
        a = next(iter(fp32.run(x).values())).reshape(-1).astype(np.float64)
        b = next(iter(int8.run(x).values())).reshape(-1).astype(np.float64)
        cos.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30)))
        agree += int(a.argmax() == b.argmax())
    return {"cosine_min": round(min(cos), 5), "cosine_mean": round(float(np.mean(cos)), 5),
            "top1_agreement": round(agree / samples, 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    ap.add_argument("--target", default="x86-64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", default="0", help="tuning time budget per model and precision (0: default schedules)")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--tune", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"],
                    help="precisions to tune with --budget (fp32 already tuned in --db: --tune int8)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/deploy-bench-int8"))
    ap.add_argument("--db", type=Path, default=None, help="tuning database root [WORK/db]; records in it are reused")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    budget = parse_duration(a.budget) if a.budget not in ("0", "") else None
    db = a.db or a.work / "db"
    if not budget and a.db is None:
        db = a.work / "empty-db"  # default schedules only
    print(f"# deploy {pipeline.__version__}, target {a.target}, {a.threads} threads, batch 1, "
          f"{platform.processor() or platform.machine()}, "
          + (f"tuned {a.budget} per model and precision into {db}" if budget else
             f"records from {db} where it has them, default schedules elsewhere" if a.db else
             "default schedules (untuned)"), flush=True)
    for name in a.models:
        path, _ = export(name, a.work)
        calib = a.work / f"{name}-calib.npz"
        rng = np.random.default_rng(0)
        import onnx

        in_name = onnx.load(path).graph.input[0].name
        np.savez(calib, **{in_name: rng.standard_normal((32, 1, 3, 224, 224)).astype(np.float32)})
        tune_s = {}
        if budget:
            from pipeline import QuantOptions

            for prec in ("fp32", "int8"):
                if prec not in a.tune:
                    continue
                t0 = time.perf_counter()
                tune_model(TuneArgs(model=path, target=a.target, trials=10**6, time_budget=budget, db=db,
                                    precision=prec, quant=QuantOptions(calibration=calib)), show=False)
                tune_s[prec] = round(time.perf_counter() - t0)
        fp32 = pipeline.compile(path, a.target, output=a.work / f"{name}-fp32", force=True, db=db)
        int8 = pipeline.compile(path, a.target, output=a.work / f"{name}-int8", force=True, db=db,
                                quantize="int8", calibration=calib)
        r32 = bench(fp32, path, threads=a.threads, repeat=15, min_seconds=3.0)
        r8 = bench(int8, None, threads=a.threads, repeat=15, min_seconds=3.0)
        ms32, ms8 = r32["deploy"]["median_ms"], r8["deploy"]["median_ms"]
        row = {"model": name, "ort_fp32_ms": round(r32["onnxruntime"]["median_ms"], 2),
               "fp32_ms": round(ms32, 2), "int8_ms": round(ms8, 2), "int8_speedup": round(ms32 / ms8, 2),
               "fp32_MB": round(fp32.manifest["library"]["bytes"] / 1e6, 1),
               "int8_MB": round(int8.manifest["library"]["bytes"] / 1e6, 1),
               "size_ratio": round(fp32.manifest["library"]["bytes"] / int8.manifest["library"]["bytes"], 2),
               "tuned_kernels": {"fp32": f"{fp32.manifest['tuning']['tuned_kernels']}/{fp32.manifest['tuning']['kernels']}",
                                 "int8": f"{int8.manifest['tuning']['tuned_kernels']}/{int8.manifest['tuning']['kernels']}"},
               "tuning_s": tune_s,
               "quantized_layers": len(int8.manifest["quantization"]["quantized_layers"]),
               **agreement(fp32, int8, a.samples)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
