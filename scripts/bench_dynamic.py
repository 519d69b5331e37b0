"""Dynamic shapes: one artifact for a range of batch sizes and sequence lengths, against a static
build and ONNX Runtime.

    .venv/bin/pip install -e '.[zoo]'   # transformers, for the BERT-style encoder
    .venv/bin/python scripts/bench_dynamic.py [--out benchmarks/dynamic.txt] [--seconds 6]

1. A BERT-style encoder (transformers' BertModel from a config, all-MiniLM-L6-sized: 6 layers,
   d=384, 12 heads; random weights) exported from torch with dynamic batch and sequence length,
   compiled once with ``--dim B=1..8@1 --dim S=1..256@128``. Its outputs are compared with ONNX
   Runtime at (1,7), (2,64), (8,256), (3,200); its latency at S=128 (the specialized function)
   is timed next to a static build for 1x128, and at sizes nothing was specialized for next to
   ONNX Runtime at the same size.
2. A ResNet-18-style CNN with a dynamic batch (``--dim N=1..32``): outputs compared at batch 1, 5
   and 32, and batch-32 throughput against ONNX Runtime's.

Every engine runs in a process of its own (pipeline.run.bench's), in alternating turns, 2 threads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402
from pipeline.run.bench import time_engines  # noqa: E402
from pipeline.run.reference import reference_outputs  # noqa: E402


def export_bert(path: Path) -> Path:
    import transformers as T

    if path.exists():
        return path
    torch.manual_seed(0)
    cfg = T.BertConfig(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536,
                       attn_implementation="eager")
    bert = T.BertModel(cfg, add_pooling_layer=False).eval()

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids, mask):
            return self.m(input_ids=ids, attention_mask=mask).last_hidden_state

    ids, mask = torch.randint(0, 1000, (2, 16)), torch.ones(2, 16, dtype=torch.int64)
    dyn = {"input_ids": {0: "B", 1: "S"}, "attention_mask": {0: "B", 1: "S"}, "output": {0: "B", 1: "S"}}
    with torch.no_grad():
        torch.onnx.export(Wrap(bert), (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["output"], dynamic_axes=dyn, opset_version=17, dynamo=False)
    return path


def export_cnn(path: Path) -> Path:
    from zoo.torch_models import export, resnet18

    if not path.exists():
        export(resnet18(), torch.randn(1, 3, 224, 224), path, {"input": {0: "N"}})
    return path


def bert_inputs(b: int, s: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    mask = np.ones((b, s), np.int64)
    mask[:, s - s // 4:] = 0 if s > 3 else 1  # padded tails, as batches of sentences have
    return {"input_ids": rng.integers(0, 1000, (b, s)).astype(np.int64), "attention_mask": mask}


def max_error(art, model: Path, inputs: dict) -> float:
    ours, ref = art(inputs), reference_outputs(model, inputs)
    return max(float(np.abs(ours[k] - ref[k]).max()) for k in ref)


def time_together(engines: dict[str, tuple[str, Path]], inputs: dict, seconds: float, turns: int = 8) -> dict:
    """Median ms of each engine on ``inputs``, each in its own process, in alternating turns."""
    return time_engines(engines, inputs, threads=2, repeat=turns, min_seconds=seconds, warmup=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--seconds", type=float, default=6.0, help="timing per engine and shape")
    ap.add_argument("--work", type=Path, default=ROOT / "artifacts" / "dynamic")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    lines = [f"# Dynamic shapes ({time.strftime('%Y-%m-%d')}; 2 threads; each engine in its own process, "
             "alternating turns; medians)", ""]

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    bert = export_bert(a.work / "bert_minilm.onnx")
    t0 = time.perf_counter()
    dyn = pipeline.compile(bert, "x86-64", output=a.work / "bert-dyn", force=True, dims={"B": "1..8@1", "S": "1..256@128"})
    t_dyn = time.perf_counter() - t0
    t0 = time.perf_counter()
    static = pipeline.compile(bert, "x86-64", output=a.work / "bert-1x128", force=True,
                              input_shapes={"input_ids": [1, 128], "attention_mask": [1, 128]})
    t_static = time.perf_counter() - t0
    say("## BERT-style encoder (transformers BertModel, 6 layers, d=384), one artifact for B=1..8, S=1..256@128")
    say(f"compile: dynamic {t_dyn:.0f} s (functions: main, "
        + ", ".join(f["name"] for f in dyn.functions) + f"), static 1x128 {t_static:.0f} s")
    say()
    say("| B, S | max abs error vs ONNX Runtime |")
    say("|---|---|")
    for b, s in [(1, 7), (2, 64), (8, 256), (3, 200)]:
        say(f"| {b}, {s} | {max_error(dyn, bert, bert_inputs(b, s, seed=b + s)):.2e} |")
    say()
    r = time_together({"dynamic": ("deploy", dyn.path), "static": ("deploy", static.path)}, bert_inputs(1, 128),
                      a.seconds)
    say(f"S=128 (specialized function main_B1_S128): dynamic artifact {r['dynamic']:.2f} ms, static 1x128 build "
        f"{r['static']:.2f} ms: **{r['dynamic'] / r['static']:.2f}x** (bar: 1.2x)")
    say()
    say("| B, S (no function specialized for it) | deploy ms | ONNX Runtime ms | ratio |")
    say("|---|---|---|---|")
    for b, s in [(1, 77), (1, 200), (4, 64)]:
        r = time_together({"deploy": ("deploy", dyn.path), "ort": ("onnxruntime", bert)}, bert_inputs(b, s), a.seconds)
        say(f"| {b}, {s} | {r['deploy']:.2f} | {r['ort']:.2f} | **{r['deploy'] / r['ort']:.2f}x** |")
    say("(bar at S=77: 1.5x)")
    say()
    cnn = export_cnn(a.work / "resnet18_dyn.onnx")
    art = pipeline.compile(cnn, "x86-64", output=a.work / "resnet18-dyn", force=True, dims={"N": "1..32"})
    say("## ResNet-18-style CNN, one artifact for batch N=1..32")
    errs = {n: max_error(art, cnn, art.random_inputs(seed=n, sizes={"N": n})) for n in (1, 5, 32)}
    say("max abs error vs ONNX Runtime: " + ", ".join(f"N={n}: {e:.2e}" for n, e in errs.items()))
    for n in (1, 32):
        r = time_together({"deploy": ("deploy", art.path), "ort": ("onnxruntime", cnn)},
                          art.random_inputs(sizes={"N": n}), a.seconds * (2 if n > 1 else 1), turns=4)
        say(f"N={n}: deploy {r['deploy']:.1f} ms ({n / r['deploy'] * 1e3:.1f} images/s), ONNX Runtime "
            f"{r['ort']:.1f} ms ({n / r['ort'] * 1e3:.1f} images/s): throughput ratio deploy/ORT "
            f"**{r['ort'] / r['deploy']:.2f}x** (above 1: deploy serves more)")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
