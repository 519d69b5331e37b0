"""Per-kernel time of a deploy artifact next to ONNX Runtime's per-node time, in execution order.

    .venv/bin/python scripts/profile_layers.py ARTIFACT MODEL.onnx [--runs 50]

deploy: each kernel call of the Relax VM timed by an instrument hook (adds ~1-2 us per call; VM
built-ins are left out). ORT: its own profiler (enable_profiling), intra-op threads = deploy's.
Medians over --runs runs after a warm-up. Where a model loses to ORT, this says which layers.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

import pipeline  # noqa: F401  (sets TVM_NUM_THREADS)
from pipeline.run.runtime import Artifact, random_inputs


def deploy_kernels(art: Artifact, inputs: dict, runs: int) -> list[tuple[str, float]]:
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(art.library)), tvm.cpu())
    args = [tvm.runtime.tensor(v) for v in inputs.values()]
    rec, t = [], [0.0]

    def instrument(func, sym, before, ret, *a):
        if before:
            t[0] = time.perf_counter()
        else:
            rec.append((str(sym), time.perf_counter() - t[0]))
        return 0

    vm.set_instrument(instrument)
    warm = 10
    for _ in range(warm + runs):
        vm["main"](*args)
    n = len(rec) // (warm + runs)
    out = []
    for j in range(n):
        if "builtin" not in rec[j][0]:
            out.append((rec[j][0], float(np.median([rec[r * n + j][1] for r in range(warm, warm + runs)]))))
    return out


def ort_nodes(model: Path, inputs: dict, runs: int, threads: int) -> list[tuple[str, float]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(os.environ.get("TMPDIR", "/tmp")) / "deploy_ort_profile")
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    for _ in range(10 + runs):
        sess.run(None, inputs)
    path = Path(sess.end_profiling())
    events = json.loads(path.read_text())
    path.unlink()
    times: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times.setdefault(e["name"][: -len("_kernel_time")], []).append(e["dur"] / 1e6)
    return [(k, float(np.median(v[-runs:]))) for k, v in times.items()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact", type=Path)
    ap.add_argument("model", type=Path)
    ap.add_argument("--runs", type=int, default=50)
    a = ap.parse_args()
    art = Artifact(a.artifact)
    inputs = random_inputs(art.inputs)
    threads = int(os.environ["TVM_NUM_THREADS"])
    for title, rows in (("deploy kernels", deploy_kernels(art, inputs, a.runs)),
                        ("ONNX Runtime nodes", ort_nodes(a.model, inputs, a.runs, threads))):
        print(f"# {title}: {sum(s for _, s in rows) * 1e3:.3f} ms in {len(rows)} calls ({threads} threads)")
        for name, s in rows:
            print(f"{s * 1e6:9.1f} us  {name}")


if __name__ == "__main__":
    main()
