"""Compile, verify and time torch-exported models against ONNX Runtime, in one run.

    .venv/bin/python scripts/bench_models.py [--models resnet18 encoder] [--threads 2] [--out DIR]

Prints per model: compile seconds, max abs error vs ONNX Runtime, latency of deploy and of
ONNX Runtime (median, same inputs and threads) and their ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # pipeline/ and the model zoo (zoo/)

import pipeline  # noqa: E402
from pipeline.run.bench import bench  # noqa: E402
from pipeline.run.verify import verify  # noqa: E402


def make(name: str, d: Path) -> tuple[Path, dict]:
    import torch

    from zoo.torch_models import EncoderBlock, export, resnet18

    if name == "resnet18":
        return export(resnet18(), torch.randn(1, 3, 224, 224), d / "resnet18.onnx"), {}
    if name == "encoder":  # BERT-base-sized block at 128 tokens
        m = EncoderBlock(d=768, heads=12, ff=3072).eval()
        return export(m, torch.randn(1, 128, 768), d / "encoder.onnx", {"input": {0: "batch", 1: "seq"}}), \
            {"input": [1, 128, 768]}
    raise SystemExit(f"unknown model {name}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["resnet18", "encoder"])
    ap.add_argument("--target", default="x86-64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    work = Path(a.out or tempfile.mkdtemp(prefix="bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in a.models:
        path, shapes = make(name, work)
        t0 = time.perf_counter()
        art = pipeline.compile(path, a.target, output=work / f"{name}-{a.target}", input_shapes=shapes, force=True)
        compile_s = time.perf_counter() - t0
        err = verify(art, path, atol=1e-3, rtol=1e-3).max_abs
        r = bench(art, path, threads=a.threads, repeat=5, min_seconds=3.0)
        rows.append({"model": name, "compile_s": round(compile_s, 1), "max_abs_err": err,
                     "deploy_ms": round(r["deploy"]["median_ms"], 2), "ort_ms": round(r["onnxruntime"]["median_ms"], 2),
                     "ratio": round(r["ratio"], 2)})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'model':<10} {'compile s':>9} {'max abs err':>11} {'deploy ms':>10} {'ORT ms':>8} {'ratio':>7}")
    for r in rows:
        print(f"{r['model']:<10} {r['compile_s']:>9} {r['max_abs_err']:>11.2e} {r['deploy_ms']:>10} {r['ort_ms']:>8} {r['ratio']:>6}x")


if __name__ == "__main__":
    main()
