"""CPU speed against ONNX Runtime, in one run: untuned and tuned deploy builds of three models.

    .venv/bin/python scripts/bench_speed.py [--budget 15m] [--trials-per-task 64] [--models ...]

For each model (exported from PyTorch, batch 1) it prints ONNX Runtime's latency, deploy's
untuned and tuned latencies with their ratio to ONNX Runtime (same inputs, same thread count,
measured in turns in the same process: each ratio is the median of per-turn ratios), the tuning time and trials, GFLOP/s, and the
largest output difference from ONNX Runtime. Tuning records go to one database shared by all
models (--db), so a re-run reuses them.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # pipeline/ and the model zoo (zoo/)

import onnx  # noqa: E402

import pipeline  # noqa: E402
from pipeline.run.bench import bench  # noqa: E402
from pipeline.frontend.inspect import flops  # noqa: E402
from pipeline.tune import TuneArgs, parse_duration, tune_model  # noqa: E402
from pipeline.run.verify import verify  # noqa: E402


def export(name: str, d: Path) -> tuple[Path, dict]:
    import torch

    from zoo.torch_models import export as onnx_export
    from zoo.torch_models import minilm_encoder, mobilenet_v2, resnet18

    if name == "resnet18":
        return onnx_export(resnet18(), torch.randn(1, 3, 224, 224), d / "resnet18.onnx"), {}
    if name == "mobilenet_v2":
        return onnx_export(mobilenet_v2(), torch.randn(1, 3, 224, 224), d / "mobilenet_v2.onnx"), {}
    if name == "minilm":
        return onnx_export(minilm_encoder(), torch.randn(1, 128, 384), d / "minilm.onnx"), {}
    raise SystemExit(f"unknown model {name}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2", "minilm"])
    ap.add_argument("--target", default="x86-64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", default="15m", help="tuning time budget per model")
    ap.add_argument("--trials-per-task", type=int, default=64)
    ap.add_argument("--work", type=Path, default=Path("/tmp/deploy-bench"))
    ap.add_argument("--db", type=Path, default=None, help="tuning database root [WORK/db]")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    db = a.db or a.work / "db"
    budget = parse_duration(a.budget)
    print(f"# deploy {pipeline.__version__}, target {a.target}, {a.threads} threads, batch 1, "
          f"{platform.processor() or platform.machine()}, tuning budget {a.budget}/model", flush=True)
    rows = []
    for name in a.models:
        path, shapes = export(name, a.work)
        gflop = flops(onnx.load(path)) / 1e9
        untuned = pipeline.compile(path, a.target, output=a.work / f"{name}-untuned", input_shapes=shapes,
                                   force=True, db=a.work / "empty-db")
        t0 = time.perf_counter()
        s = None
        if budget:  # --budget 0: measure with the records already in --db, tune nothing
            s = tune_model(TuneArgs(model=path, target=a.target, input_shapes=shapes, trials=10**6,
                                    trials_per_task=a.trials_per_task, time_budget=budget, db=db), show=False)
        tune_s = time.perf_counter() - t0
        tuned = pipeline.compile(path, a.target, output=a.work / f"{name}-tuned", input_shapes=shapes, force=True, db=db)
        err = verify(tuned, path).max_abs
        r_untuned = bench(untuned, path, threads=a.threads, repeat=10, min_seconds=3.0)
        r_tuned = bench(tuned, path, threads=a.threads, repeat=20, min_seconds=5.0)
        ort_ms = r_tuned["onnxruntime"]["median_ms"]
        row = {
            "model": name, "gflop": round(gflop, 3), "ort_ms": round(ort_ms, 2),
            "untuned_ms": round(r_untuned["deploy"]["median_ms"], 2),
            "untuned_ratio": round(r_untuned["ratio"], 2),
            "tuned_ms": round(r_tuned["deploy"]["median_ms"], 2), "tuned_ratio": round(r_tuned["ratio"], 2),
            "tuning_s": round(tune_s), "trials": s.trials if s else 0,
            "tuned_kernels": f"{tuned.manifest['tuning']['tuned_kernels']}/{tuned.manifest['tuning']['kernels']}",
            "gflops_tuned": round(gflop / (r_tuned["deploy"]["median_ms"] / 1e3), 1),
            "gflops_ort": round(gflop / (ort_ms / 1e3), 1), "max_abs_err": float(f"{err:.3g}"),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    head = f"{'model':<13}{'GFLOP':>7}{'ORT ms':>9}{'untuned ms':>12}{'x ORT':>8}{'tuned ms':>10}{'x ORT':>7}" \
           f"{'tune s':>8}{'trials':>8}{'GFLOP/s':>9}{'ORT GFLOP/s':>13}{'max err':>10}"
    print(head)
    for r in rows:
        print(f"{r['model']:<13}{r['gflop']:>7}{r['ort_ms']:>9}{r['untuned_ms']:>12}{r['untuned_ratio']:>8}"
              f"{r['tuned_ms']:>10}{r['tuned_ratio']:>7}{r['tuning_s']:>8}{r['trials']:>8}{r['gflops_tuned']:>9}"
              f"{r['gflops_ort']:>13}{r['max_abs_err']:>10}")


if __name__ == "__main__":
    main()
