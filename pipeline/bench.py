"""Latency of an artifact next to ONNX Runtime's, same inputs, same thread count, one run."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .remote import connect, parse_tracker
from .runtime import Artifact, random_inputs
from .reference import ort_session


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


def _runs_per_sample(once, seconds: float) -> int:
    """How many runs make a sample of about ``seconds``, from the fastest of 3 single runs."""
    return max(1, int(seconds / max(min(once() for _ in range(3)), 1e-6)))


def bench_artifact(artifact: Artifact, inputs: dict[str, np.ndarray], repeat: int, min_seconds: float) -> Latency:
    number = _runs_per_sample(lambda: artifact.time(inputs, number=1, repeat=1)[0], min_seconds / repeat)
    return Latency.of(artifact.time(inputs, number=number, repeat=repeat))


def bench(artifact: Artifact, model_path: Path | None, threads: int = 2, repeat: int = 20,
          min_seconds: float = 2.0) -> dict:
    """deploy's latency and, given the model, ONNX Runtime's: measured in turns (a deploy sample,
    then an ORT sample, ``repeat`` times), so both see the same machine, and the ratio is the
    median of the per-turn ratios. On a shared, noisy machine that holds where two separate
    stretches of timing would not."""
    set_threads(threads)
    inputs = random_inputs(artifact.inputs)
    if model_path is None:
        return {"threads": threads, "deploy": bench_artifact(artifact, inputs, repeat, min_seconds).__dict__}
    sess = ort_session(Path(model_path), threads)
    sess.run(None, inputs)

    def ort(number: int) -> float:
        t0 = time.perf_counter()
        for _ in range(number):
            sess.run(None, inputs)
        return (time.perf_counter() - t0) / number

    def ours(number: int) -> float:
        return artifact.time(inputs, number=number, repeat=1)[0]

    share = min_seconds / repeat  # seconds per sample, each side
    d_number = _runs_per_sample(lambda: ours(1), share)
    o_number = _runs_per_sample(lambda: ort(1), share)
    d, o = [], []
    for _ in range(repeat):
        d.append(ours(d_number))
        o.append(ort(o_number))
    ratios = [round(float(a / b), 4) for a, b in zip(d, o)]
    return {"threads": threads, "deploy": Latency.of(d).__dict__, "onnxruntime": Latency.of(o).__dict__,
            "ratio": float(np.median(ratios)), "turn_ratios": ratios}


EMULATED_NOTE = ("emulated timings are not board timings: qemu-user translates every instruction, so this says "
                 "nothing about the board's speed. Run the bundle on the board (`deploy package`, then "
                 "`./runner --repeat 50` there), or measure through a TVM RPC tracker with --rpc-tracker/--rpc-key.")


def bench_emulated(artifact: Artifact, threads: int = 2, repeat: int = 5) -> dict:
    """Time the artifact's runner under qemu-user: only to show it runs; see EMULATED_NOTE."""
    r = artifact.run_runner(random_inputs(artifact.inputs), repeat=repeat, warmup=1, threads=threads)
    lat = Latency(r.latency_ms["median"], r.latency_ms["max"], r.runs)
    emu = (artifact.device.get("emulation") or {})
    return {"threads": threads, "emulated": True, "emulator": f"{emu.get('qemu')} -cpu {emu.get('qemu_cpu')}",
            "deploy": lat.__dict__, "note": EMULATED_NOTE}


def bench_rpc(artifact: Artifact, tracker: str, key: str, threads: int = 0, repeat: int = 20,
              min_seconds: float = 2.0, timeout: int = 60) -> dict:
    """Upload the library to a board registered with a TVM RPC tracker and time ``main`` there."""
    from .errors import DeployError
    from .runtime import check_inputs

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
    inputs = random_inputs(artifact.inputs)
    try:
        remote.upload(str(artifact.library), artifact.library.name)
        rlib = remote.load_module(artifact.library.name)
        dev = remote.cpu(0)
        if threads:
            remote.get_function("runtime.config_threadpool")(1, threads)
        vm = relax.VirtualMachine(rlib, dev)
        args = [tvm.runtime.tensor(a, dev) for a in check_inputs(artifact.inputs, inputs)]
        vm.set_input("main", *args)
        vm.invoke_stateful("main")  # warm up
        single = min(vm.time_evaluator("invoke_stateful", dev, number=1, repeat=1)("main").results)
        number = max(1, int(min_seconds / repeat / max(single, 1e-6)))
        res = vm.time_evaluator("invoke_stateful", dev, number=number, repeat=repeat)("main").results
    except DeployError:
        raise
    except Exception as e:
        last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise DeployError(f"running {artifact.library.name} on the '{key}' device failed: {last[:300]}",
                          hint="the board needs TVM's runtime of the version in the manifest and the "
                               "artifact's architecture; run with -v") from e
    return {"threads": threads or None, "rpc": f"{key}@{host}:{port}", "deploy": Latency.of(list(res)).__dict__}
