"""Latency of an artifact next to ONNX Runtime's: same inputs, same thread count, one run.

Each engine runs in a process of its own (ONNX Runtime's and TVM's thread pools slow each other
down in one process: ORT's DenseNet-121 read 66 ms next to TVM and 35 ms alone). The parent
drives the two in alternating turns, so both see the same machine, and every inference is timed
on its own: p50/p90/p99, mean and spread are over all inferences of all turns. The ratio is
deploy's p50 over ONNX Runtime's p50: the two medians printed next to it.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DeployError, last_line
from ..frontend.tflite import is_tflite
from ..procs import sigint_ignored_by_children
from .remote import connect, parse_tracker
from .runtime import Artifact, check_inputs, inputs_for, read_npz, to_storage

RATIO_DEFINITION = ("deploy's median latency / ONNX Runtime's median latency (each engine in its own process, "
                    "timed in alternating turns)")
# the peers `--against` takes: name -> what a user may write for it
PEERS = {"onnxruntime": ("ort", "onnxruntime"), "openvino": ("openvino", "ov")}
OPENVINO_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}  # f32: no bf16 on AMX CPUs


def parse_peers(text: str | None) -> list[str]:
    """``--against ort,openvino`` -> ["onnxruntime", "openvino"]; default: ONNX Runtime alone."""
    if not text:
        return ["onnxruntime"]
    names = {alias: name for name, aliases in PEERS.items() for alias in aliases}
    out = []
    for item in filter(None, (t.strip().lower() for t in text.split(","))):
        if item not in names:
            raise DeployError(f"--against: unknown engine '{item}'", hint="use ort, openvino or both: --against ort,openvino")
        if names[item] not in out:
            out.append(names[item])
    return out or ["onnxruntime"]


def check_peer(name: str) -> None:
    """A clear message where a peer engine is not installed."""
    if name == "openvino":
        try:
            import openvino  # noqa: F401
        except ImportError:
            raise DeployError("--against openvino: OpenVINO is not installed",
                              hint="pip install 'deploy[peers]' (or pip install openvino)") from None


def _openvino_runner(path: str, threads: int, inputs: dict):
    """OpenVINO's CPU plugin on the ONNX model, reshaped to the inputs' shapes, f32, latency hint."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(path)
    model.reshape({i.get_any_name(): list(inputs[i.get_any_name()].shape) for i in model.inputs
                   if i.get_any_name() in inputs})
    compiled = core.compile_model(model, "CPU", {**OPENVINO_CONFIG, "INFERENCE_NUM_THREADS": threads})
    feed = {i.get_any_name(): inputs[i.get_any_name()] for i in model.inputs if i.get_any_name() in inputs}

    def make_run():  # an infer request per request in flight
        req = compiled.create_infer_request()
        return lambda: req.infer(feed)
    return make_run


@dataclass
class Latency:
    median_ms: float
    p90_ms: float
    samples: int
    p99_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    min_ms: float | None = None

    @classmethod
    def of(cls, seconds: list[float]) -> "Latency":
        ms = np.asarray(seconds) * 1e3
        return cls(float(np.median(ms)), float(np.percentile(ms, 90)), len(ms), float(np.percentile(ms, 99)),
                   float(ms.mean()), float(ms.std()), float(ms.min()))


def set_threads(threads: int) -> None:
    """TVM's thread pool reads TVM_NUM_THREADS when it starts: call before the first run."""
    os.environ["TVM_NUM_THREADS"] = str(threads)


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def _throughput(make_run, concurrency: int, seconds: float) -> dict:
    """Inferences per second with ``concurrency`` requests in flight: one thread per request, each
    with its own runner from ``make_run()``, running back to back for ``seconds``."""
    import threading

    runs = [make_run() for _ in range(concurrency)]
    for r in runs:
        r()
    counts = [0] * concurrency
    errors: list[BaseException] = []
    go = threading.Event()
    deadline = [0.0]

    def loop(i):
        go.wait()
        try:
            while time.perf_counter() < deadline[0] and not errors:
                runs[i]()
                counts[i] += 1
        except BaseException as e:  # noqa: BLE001 - raised below, in the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    go.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:  # a count without the failed requests' share would read as a slower engine
        e = errors[0]
        raise DeployError(f"an inference failed with {concurrency} requests in flight: "
                          + (e.message if isinstance(e, DeployError) else f"{type(e).__name__}: {last_line(e)[:300]}"))
    return {"concurrency": concurrency, "inferences": sum(counts), "seconds": round(elapsed, 3),
            "per_second": sum(counts) / elapsed}


def _serve(kind: str, path: str, threads: int, inputs_file: str, conn) -> None:
    """A benchmark process: one engine, loaded once; times ``n`` single inferences per request, or
    measures throughput with N requests in flight."""
    try:
        inputs = read_npz(inputs_file)
        if kind == "deploy":
            set_threads(threads)

            def make_run():  # a VM per request in flight: a VM runs one call at a time
                return Artifact(path).bind(inputs)
        elif kind == "openvino":
            make_run = _openvino_runner(path, threads, inputs)
        elif kind == "litert":
            from ..frontend.tflite import LiteRTSession

            def make_run():  # an interpreter per request in flight: one runs one invoke at a time
                sess = LiteRTSession(path, threads)
                return lambda: sess.run(None, inputs)
        else:
            from .reference import ort_session

            sess = ort_session(Path(path), threads)
            feed = {i.name: inputs[i.name] for i in sess.get_inputs()}

            def make_run():  # ONNX Runtime sessions take concurrent runs
                return lambda: sess.run(None, feed)
        run = make_run()
        run()
        rss_loaded = _peak_rss_mb()
        conn.send(("ready", rss_loaded))
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                conn.send(("stopped", {"peak_rss_mb": _peak_rss_mb(), "rss_after_first_run_mb": rss_loaded}))
                return
            if msg[0] == "throughput":
                conn.send(("throughput", _throughput(make_run, msg[1], msg[2])))
                continue
            times = []
            for _ in range(msg[1]):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
            conn.send(("times", times))
    except BaseException as e:  # noqa: BLE001 - reported by the parent
        conn.send(("error", e.message if isinstance(e, DeployError) else f"{type(e).__name__}: {str(e)[:300]}"))


class _Engine:
    """The parent's handle of one benchmark process."""

    def __init__(self, kind: str, path: Path, threads: int, inputs_file: Path):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # TVM in a forked process is not safe
        self.kind = kind
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(kind, str(path), threads, str(inputs_file), child), daemon=True)
        with sigint_ignored_by_children():  # Ctrl-C: the parent kills the engines (bench's finally)
            self.proc.start()
        self._reply("ready")

    def _reply(self, want: str):
        if not self.conn.poll(600):
            raise DeployError(f"the {self.kind} benchmark process did not answer", hint="run with -v")
        tag, value = self.conn.recv()
        if tag == "error":
            raise DeployError(f"the {self.kind} benchmark process failed: {value}", hint="run with -v")
        return value

    def run(self, n: int) -> list[float]:
        self.conn.send(("run", n))
        return self._reply("times")

    def throughput(self, concurrency: int, seconds: float) -> dict:
        self.conn.send(("throughput", concurrency, seconds))
        return self._reply("throughput")

    def stop(self) -> dict:
        self.conn.send(("stop",))
        out = self._reply("stopped")
        self.proc.join(10)
        return out

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()


def bench(artifact: Artifact, model_path: Path | None, threads: int = 2, repeat: int = 20,
          min_seconds: float = 2.0, warmup: int = 3, inputs: dict[str, np.ndarray] | None = None,
          iterations: int | None = None, concurrency: int | None = None,
          peers: list[str] | None = None) -> dict:
    """deploy's latency and, given the model, its peers' (``peers``: default ONNX Runtime; OpenVINO
    too with ``["onnxruntime", "openvino"]``), each engine in its own process, in
    ``repeat`` alternating turns of about ``min_seconds / repeat`` each (or ``iterations``
    inferences in all); every inference timed. ``concurrency`` N adds throughput with N requests
    in flight (inferences per second), measured for each engine in alternating turns too."""
    artifact.check_integrity()
    inputs = inputs_for(artifact.inputs, inputs, artifact.dims, artifact.unused_inputs)
    peers = (peers or ["onnxruntime"]) if model_path is not None else []
    ref = "onnxruntime"
    if model_path is not None and is_tflite(model_path):  # a .tflite's reference peer is LiteRT
        ref = "litert"
        peers = [ref if p == "onnxruntime" else p for p in peers]
    for p in peers:
        check_peer(p)
    kinds = [("deploy", artifact.path)] + [(p, Path(model_path)) for p in peers]
    engines: list[_Engine] = []
    with tempfile.TemporaryDirectory(prefix="deploy-bench-") as td:
        np.savez(Path(td) / "inputs.npz", **inputs)
        try:
            for kind, path in kinds:
                engines.append(_Engine(kind, path, threads, Path(td) / "inputs.npz"))
            samples, turns = _alternate({e.kind: e for e in engines}, repeat, min_seconds, warmup, iterations)
            through: dict[str, list[dict]] = {e.kind: [] for e in engines}
            if concurrency:
                for _ in range(2):  # two alternating turns each, the better one counts
                    for e in engines:
                        through[e.kind].append(e.throughput(concurrency, max(0.5, min_seconds / 4)))
            memory = {e.kind: e.stop() for e in engines}
        finally:
            for e in engines:
                e.kill()
    out = {"threads": threads, "deploy": Latency.of(samples["deploy"]).__dict__,
           "memory": {"deploy": dict(memory["deploy"], **_plan(artifact))}}
    for p in peers:
        o = Latency.of(samples[p])
        out[p] = o.__dict__
        out["memory"][p] = memory[p]
    if ref in peers:
        out["ratio"] = out["deploy"]["median_ms"] / out[ref]["median_ms"]
        out["ratio_definition"] = RATIO_DEFINITION.replace("ONNX Runtime", "LiteRT") if ref == "litert" else RATIO_DEFINITION
        out["turn_ratios"] = [round(a / b, 4) for a, b in zip(turns["deploy"], turns[ref])]
    if peers:
        out["ratios"] = {p: out["deploy"]["median_ms"] / out[p]["median_ms"] for p in peers}
        fastest = min(peers, key=lambda p: out[p]["median_ms"])
        out["fastest_peer"] = {"engine": fastest, "ratio": out["ratios"][fastest]}
    if concurrency:
        best = {k: max(v, key=lambda r: r["per_second"]) for k, v in through.items()}
        out["throughput"] = dict(concurrency=concurrency, **best)
        if ref in best:
            out["throughput"]["ratio"] = best[ref]["per_second"] / best["deploy"]["per_second"]
            out["throughput"]["ratio_definition"] = (THROUGHPUT_RATIO_DEFINITION.replace("ONNX Runtime", "LiteRT")
                                                     if ref == "litert" else THROUGHPUT_RATIO_DEFINITION)
    return out


def _alternate(engines: dict[str, _Engine], repeat: int, min_seconds: float, warmup: int,
               iterations: int | None = None) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Every inference's seconds for each engine, and each turn's median, in ``repeat``
    alternating turns of about ``min_seconds / repeat`` each (or ``iterations`` inferences in all)."""
    share = min_seconds / max(1, repeat)  # seconds per turn, each engine
    per_turn = {}
    for name, e in engines.items():
        e.run(warmup)
        once = min(e.run(3))
        per_turn[name] = (max(1, -(-iterations // repeat)) if iterations
                          else max(1, int(share / max(once, 1e-6))))
    samples: dict[str, list[float]] = {n: [] for n in engines}
    turns: dict[str, list[float]] = {n: [] for n in engines}
    for _ in range(repeat):
        for name, e in engines.items():
            t = e.run(per_turn[name])
            samples[name] += t
            turns[name].append(float(np.median(t)))
    return samples, turns


def compare(artifacts: dict[str, Path], threads: int = 2, repeat: int = 10, min_seconds: float = 2.0,
            warmup: int = 3) -> dict[str, float]:
    """Median latency (ms) of each of several builds of one model, each in its own process, timed
    in ``repeat`` alternating turns on the same inputs."""
    first = Artifact(next(iter(artifacts.values())))
    inputs = inputs_for(first.inputs, None, first.dims, first.unused_inputs)
    return time_engines({n: ("deploy", Path(p)) for n, p in artifacts.items()}, inputs, threads, repeat,
                        min_seconds, warmup)


def time_engines(engines: dict[str, tuple[str, Path]], inputs: dict[str, np.ndarray], threads: int = 2,
                 repeat: int = 10, min_seconds: float = 2.0, warmup: int = 3) -> dict[str, float]:
    """Median latency (ms) of each engine (name -> ("deploy", artifact) or ("onnxruntime", model))
    on ``inputs``, each in its own process, in ``repeat`` alternating turns."""
    procs: dict[str, _Engine] = {}
    with tempfile.TemporaryDirectory(prefix="deploy-compare-") as td:
        np.savez(Path(td) / "inputs.npz", **inputs)
        try:
            for name, (kind, path) in engines.items():
                procs[name] = _Engine(kind, Path(path), threads, Path(td) / "inputs.npz")
            samples, _ = _alternate(procs, repeat, min_seconds, warmup)
            for e in procs.values():
                e.stop()
        finally:
            for e in procs.values():
                e.kill()
    return {n: float(np.median(t)) * 1e3 for n, t in samples.items()}


THROUGHPUT_RATIO_DEFINITION = ("ONNX Runtime's inferences per second / deploy's, with the same requests in flight "
                               "(below 1: deploy serves more); the better of two alternating turns each")


def _plan(artifact: Artifact) -> dict:
    """The artifact's static memory plan from its manifest (compile records it), in MB."""
    mem = artifact.manifest.get("memory") or {}
    out = {}
    if "params_bytes" in mem:
        out["params_mb"] = round(mem["params_bytes"] / 1e6, 3)
    if "workspace_bytes" in mem:
        out["workspace_mb"] = round(mem["workspace_bytes"] / 1e6, 3)
        out["workspace_note"] = ("static plan: storage the VM allocates once and reuses for every inference"
                                 + (f"; {mem['dynamic_allocations']} tensors allocated per run besides"
                                    if mem.get("dynamic_allocations") else ""))
    return out


EMULATED_NOTE = ("emulated timings are not board timings: qemu-user translates every instruction, so this says "
                 "nothing about the board's speed. Run the bundle on the board (`deploy package`, then "
                 "`./runner --repeat 50` there), or measure through a TVM RPC tracker with --rpc-tracker/--rpc-key.")


def bench_emulated(artifact: Artifact, threads: int = 2, repeat: int = 5) -> dict:
    """Time the artifact's runner under qemu-user: only to show it runs; see EMULATED_NOTE."""
    r = artifact.run_runner(artifact.random_inputs(), repeat=repeat, warmup=1, threads=threads)
    lat = Latency(r.latency_ms["median"], r.latency_ms["max"], r.runs)
    emu = (artifact.device.get("emulation") or {})
    return {"threads": threads, "emulated": True, "emulator": f"{emu.get('qemu')} -cpu {emu.get('qemu_cpu')}",
            "deploy": lat.__dict__, "note": EMULATED_NOTE}


def bench_rpc(artifact: Artifact, tracker: str, key: str, threads: int = 0, repeat: int = 20,
              min_seconds: float = 2.0, timeout: int = 60) -> dict:
    """Upload the library to a board registered with a TVM RPC tracker and time ``main`` there."""
    host, port = parse_tracker(tracker)
    artifact.check_integrity()
    import tvm
    from tvm import relax

    session = connect(tracker, key)
    try:
        remote = session.request(key, priority=1, session_timeout=0, max_retry=2)
    except Exception as e:
        last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise DeployError(f"cannot get a '{key}' device from the RPC tracker at {host}:{port}: {last[:300]}",
                          hint="the device may be busy or gone; check `python -m tvm.exec.query_rpc_tracker`")
    inputs = artifact.random_inputs()
    try:
        remote.upload(str(artifact.library), artifact.library.name)
        rlib = remote.load_module(artifact.library.name)
        dev = remote.cpu(0)
        if threads:
            remote.get_function("runtime.config_threadpool")(1, threads)
        vm = relax.VirtualMachine(rlib, dev)
        arrays = to_storage(artifact.inputs, check_inputs(artifact.inputs, inputs, artifact.dims,
                                                          artifact.unused_inputs))
        fn = artifact.function_for(arrays)
        args = [tvm.runtime.tensor(a, dev) for a in arrays]
        vm.set_input(fn, *args)
        vm.invoke_stateful(fn)  # warm up
        single = min(vm.time_evaluator("invoke_stateful", dev, number=1, repeat=1)(fn).results)
        number = max(1, int(min_seconds / repeat / max(single, 1e-6)))
        res = vm.time_evaluator("invoke_stateful", dev, number=number, repeat=repeat)(fn).results
    except DeployError:
        raise
    except Exception as e:
        last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise DeployError(f"running {artifact.library.name} on the '{key}' device failed: {last[:300]}",
                          hint="the board needs TVM's runtime of the version in the manifest and the "
                               "artifact's architecture; run with -v") from e
    return {"threads": threads or None, "rpc": f"{key}@{host}:{port}", "deploy": Latency.of(list(res)).__dict__}
