"""Two services on one host: a model's latency alone and beside a neighbour process under load.

    .venv/bin/python scripts/bench_neighbours.py [--seconds 4] [--out benchmarks/neighbours.txt]

The measured model is the bundled example CNN (1x3x32x32), served by deploy and by ONNX Runtime,
2 threads each. The neighbour is a second process that runs another model (a 5-layer 64-channel
56x56 CNN) in a loop with 2 threads: deploy's artifact, ONNX Runtime, or a plain CPU-bound Python
loop. Each engine and each neighbour runs in its own process; the neighbour starts first and
warms up, then the measured engine runs for --seconds and reports every call's latency.

The last rows time the neighbour's 5-layer CNN itself, alone, under each setting: what the
setting costs a model that keeps both cores busy when nothing else runs.

deploy's runs are repeated under each thread-pool setting in SETTINGS: TVM's own defaults (workers
pinned to cores, 300,000 spins before a worker sleeps) and deploy's (what ``import pipeline`` sets
unless the environment says otherwise), so the table shows what the setting buys alone and beside
a neighbour. The neighbour deploy process runs under the same setting as the measured one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

THREADS = 2
# thread-pool environment per setting; "deploy" is empty: what `import pipeline` sets by default
SETTINGS = {
    "TVM defaults": {"TVM_THREAD_POOL_SPIN_COUNT": "300000", "TVM_BIND_THREADS": "1"},
    "deploy defaults": {},
}


def _neighbour_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x, c = [], [], "x", 32
    for i in range(5):
        w = (rng.standard_normal((64, c, 3, 3)) * 0.05).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x, c = f"r{i}", 64
    g = helper.make_graph(nodes, "neighbour", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 56, 56])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 64, 56, 56])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _runner(engine: str, path: str):
    """A callable that runs one inference on fixed random inputs."""
    if engine == "deploy":
        import pipeline
        from pipeline.run.runtime import random_inputs

        art = pipeline.load(path)
        inputs = random_inputs(art.inputs, seed=0)
        return lambda: art(inputs)
    if engine == "ort":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = THREADS
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        feeds = {i.name: np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in i.shape])
                 .astype(np.float32) for i in sess.get_inputs()}
        return lambda: sess.run(None, feeds)
    if engine == "busy":  # a CPU-bound process with as many threads as the others
        import threading

        def spin():
            while True:
                sum(range(10000))

        for _ in range(THREADS - 1):
            threading.Thread(target=spin, daemon=True).start()
        return lambda: sum(range(10000))
    raise SystemExit(f"unknown engine {engine}")


def _worker(mode: str, engine: str, path: str, seconds: float) -> None:
    run = _runner(engine, path)
    if mode == "loop":
        print("ready", flush=True)
        while True:
            run()
    for _ in range(20):  # warm-up
        run()
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    print(json.dumps(times))


def _env(setting: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TVM_")}
    env.update({"TVM_NUM_THREADS": str(THREADS), "OMP_NUM_THREADS": str(THREADS), **setting})
    return env


def _measure(engine, path, seconds, setting, neighbour) -> list[float]:
    me = [sys.executable, __file__, "_worker", "measure", engine, str(path), str(seconds)]
    nb = None
    try:
        if neighbour:
            n_engine, n_path = neighbour
            nb = subprocess.Popen([sys.executable, __file__, "_worker", "loop", n_engine, str(n_path), "0"],
                                  stdout=subprocess.PIPE, text=True, env=_env(setting))
            assert nb.stdout.readline().strip() == "ready"
            time.sleep(1.0)
        out = subprocess.run(me, capture_output=True, text=True, env=_env(setting), check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    finally:
        if nb:
            nb.kill()
            nb.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()

    import onnx

    import pipeline
    from pipeline import examples
    from provenance import header

    work = Path(tempfile.mkdtemp(prefix="neighbours-"))
    model = work / "tiny_cnn.onnx"
    onnx.save(examples.tiny_cnn(), model)
    heavy = _neighbour_model(work / "neighbour.onnx")
    art = pipeline.compile(model, "x86-64", output=work / "a", force=True).path
    heavy_art = pipeline.compile(heavy, "x86-64", output=work / "b", force=True).path

    neighbours = {"none": None, "deploy (same setting)": ("deploy", heavy_art), "ONNX Runtime": ("ort", heavy),
                  "CPU-bound Python": ("busy", "-")}
    rows = []
    for n_name, nb in neighbours.items():
        ort_ms = np.asarray(_measure("ort", model, a.seconds, {}, nb)) * 1e3
        rows.append((n_name, "ONNX Runtime", ort_ms, None))
        for s_name, setting in SETTINGS.items():
            ms = np.asarray(_measure("deploy", art, a.seconds, setting, nb)) * 1e3
            rows.append((n_name, f"deploy, {s_name}", ms, float(np.median(ms) / np.median(ort_ms))))
            print(f"{n_name:24} {s_name:16} p50 {np.median(ms):.3f} ms  ORT {np.median(ort_ms):.3f} ms", flush=True)

    # what the setting costs a model large enough to use both cores, alone
    big_ort = np.asarray(_measure("ort", heavy, a.seconds, {}, None)) * 1e3
    rows.append(("none (the 5-layer CNN measured)", "ONNX Runtime", big_ort, None))
    for s_name, setting in SETTINGS.items():
        ms = np.asarray(_measure("deploy", heavy_art, a.seconds, setting, None)) * 1e3
        rows.append(("none (the 5-layer CNN measured)", f"deploy, {s_name}", ms, float(np.median(ms) / np.median(big_ort))))

    lines = [header("scripts/bench_neighbours.py: the example CNN alone and beside a neighbour process under load",
                    "openvino"),
             f"# {THREADS} threads per process; each engine and each neighbour in its own process; "
             f"{a.seconds:g} s of calls per row; ratio = deploy p50 / ONNX Runtime p50 beside the same neighbour",
             "# deploy defaults: " + ", ".join(f"{k}={v}" for k, v in sorted(_deploy_defaults().items())),
             "",
             "| neighbour | engine | calls | p50 ms | p99 ms | ratio |",
             "|---|---|---|---|---|---|"]
    for n_name, engine, ms, ratio in rows:
        lines.append(f"| {n_name} | {engine} | {len(ms)} | {np.median(ms):.3f} | {np.percentile(ms, 99):.3f} | "
                     f"{'' if ratio is None else f'{ratio:.2f}x'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)


def _deploy_defaults() -> dict:
    code = ("import json, os, pipeline; print(json.dumps({k: v for k, v in os.environ.items() "
            "if k.startswith('TVM_') and k != 'TVM_NUM_THREADS'}))")
    env = {k: v for k, v in _env({}).items() if k != "TVM_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        _worker(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
    else:
        main()
