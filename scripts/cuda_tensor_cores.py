"""Count, without a GPU, the kernels of float16 CUDA builds that run on tensor cores, and time the
compiles: tests/test_cuda_tensor_cores.py's BERT-base layer and ResNet-50 bottleneck for a preset.
The PTX is what nvcc writes while building (TVM_KERNEL_DUMP). Run with PYTHONPATH at the tree to
measure (benchmarks/cuda_tensor_cores_nogpu.txt compares two trees this way).

    PYTHONPATH=. .venv/bin/python scripts/cuda_tensor_cores.py [cuda-sm90] [> OUT]

It prints the header every benchmarks/ file starts with (scripts/provenance.py), then one line per graph.
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "backends"))
sys.path.insert(0, str(ROOT / "scripts"))

import test_cuda_tensor_cores as graphs  # noqa: E402

import pipeline  # noqa: E402


def main(target: str = "cuda-sm90") -> None:
    from provenance import header

    print(header(f"float16 {target} builds without a GPU: kernels on tensor cores (PTX) and compile time"))
    for name, make in [("BERT-base layer (seq 128)", graphs.bert_block), ("ResNet-50 bottleneck", graphs.resnet_block)]:
        work = Path(tempfile.mkdtemp())
        dump = work / "kernels"
        dump.mkdir()
        os.environ["TVM_KERNEL_DUMP"] = str(dump)
        model = make(work / "model.onnx")
        t0 = time.perf_counter()
        art = pipeline.compile(model, target, output=work / "a", precision="fp16")
        seconds = time.perf_counter() - t0
        ptx = graphs._ptx_kernels(dump)
        mma = sum("mma.sync.aligned.m16n8k16" in b and "ldmatrix" in b for b in ptx.values())
        wmma = sum("wmma." in b for b in ptx.values())
        report = json.loads((art.path / "layers.json").read_text())
        rules = sorted({k["schedule"] for k in report["kernels"]})
        print(f"{name}, {target}: compile {seconds:.1f} s, {len(ptx)} kernels, ldmatrix+mma.sync in {mma}, "
              f"wmma in {wmma}, schedules: {', '.join(rules)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
