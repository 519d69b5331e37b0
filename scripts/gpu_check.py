"""Run deploy's CUDA artifacts on a real GPU: outputs against ONNX Runtime, and their speed.

Two steps, because the GPU machine need not have deploy (or TVM's compiler) installed:

    # here, with deploy's environment: export, compile for cuda-sm90, ORT reference outputs
    .venv/bin/python scripts/gpu_check.py prepare bundle/ [--target cuda-sm90]

    # on the GPU machine, with TVM's runtime only (see README.md, "CUDA artifacts on a GPU")
    python3 bundle/gpu_check.py run bundle/ [--out DIR]

`prepare` exports the models (the bundled tiny CNN, MobileNetV2 and a BERT-mini-sized encoder
from zoo/torch_models.py), compiles each for the CUDA preset in fp32 and fp16, plus the tiny
CNN for an x86-64-v3 CPU as a control, runs ONNX Runtime (CPU) on fixed inputs here for the
reference outputs, and writes everything `run` needs into the bundle, this script included.
The ONNX files in the bundle have their large float weights stripped (the reference outputs
were computed here with the real ones); `run` refills them with random values to time ONNX
Runtime, as weights' values do not change its speed.

`run` loads each artifact with TVM's runtime alone (TVM_USE_RUNTIME_LIB=1 works: it loads
libtvm_runtime_cuda.so itself), checks its library's sha256 and that its GPU code is for this
GPU, runs it on cuda:0, and compares with the reference: fp32 within atol 1e-4 + rtol 1e-3
(element-wise, as `deploy verify`), fp16 within 1e-3 + 2e-2 x max|ref| and cosine >= 0.999.
It then times the artifact (TVM's time_evaluator on inputs already on the GPU; and a host call
that copies numpy inputs in and outputs back), ONNX Runtime on this machine's CPU, and PyTorch
eager on the GPU (the same architecture, rebuilt from zoo/torch_models.py with the same seed;
its outputs are compared too). It prints a table and writes gpu_check.txt and gpu_check.json to
--out ($OUT when set). Exit code 1 if any artifact failed to load or mismatched, 2 if no GPU was
visible (CUDA artifacts then only load: their host code and cubin loader, not the kernels).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

# name -> how to make it. "torch": a constructor in zoo/torch_models.py (called after
# torch.manual_seed(seed)), with the example input shape; "onnx": a file in the repository.
MODELS = {
    "tiny_cnn": {"onnx": "examples/tiny_cnn.onnx", "shape": [1, 3, 32, 32],
                 "about": "bundled example: 2 conv + BN, pool, Gemm, softmax (1x3x32x32)"},
    "mobilenet_v2": {"torch": "MobileNetV2", "kwargs": {}, "seed": 0, "shape": [1, 3, 224, 224],
                     "about": "MobileNetV2 (torchvision layout), 1x3x224x224"},
    "bert_mini": {"torch": "MiniLMEncoder", "kwargs": {"layers": 4, "d": 256, "heads": 4, "ff": 1024}, "seed": 0,
                  "shape": [1, 128, 256], "about": "BERT-mini-sized encoder: 4 blocks, d=256, 4 heads, FFN 1024, seq 128"},
}
DEFAULT_FP16 = ["tiny_cnn", "mobilenet_v2", "bert_mini"]
CPU_CONTROL = ("tiny_cnn", "x86-64-v3")  # a CPU artifact: the runtime itself works there
TOL = {"fp32": {"atol": 1e-4, "rtol": 1e-3}, "fp16": {"atol": 1e-3, "rel_to_max": 2e-2, "min_cos": 0.999}}
STRIP_MIN_ELEMS = 1024  # float initializers at least this big leave the bundle as zero-size placeholders


# --------------------------------------------------------------------------------------------
# prepare (here, with deploy)
# --------------------------------------------------------------------------------------------

def _torch_model(spec: dict, torch_models):
    import torch

    torch.manual_seed(spec["seed"])
    m = getattr(torch_models, spec["torch"])(**spec["kwargs"]).eval()
    if spec["torch"] in ("MobileNetV2", "ResNet"):
        torch_models._randomize_bn(m, spec["seed"])
    return m


def _state_digest(model) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def strip_weights(model, min_elems: int = STRIP_MIN_ELEMS) -> list[str]:
    """Empty the big float initializers in place; returns their names (recorded in metadata)."""
    from onnx import TensorProto

    stripped = []
    for init in model.graph.initializer:
        n = int(np.prod(init.dims)) if init.dims else 1
        if init.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16) and n >= min_elems:
            init.ClearField("raw_data")
            init.ClearField("float_data")
            init.ClearField("int32_data")
            stripped.append(init.name)
    entry = model.metadata_props.add()
    entry.key, entry.value = "gpu_check.stripped", json.dumps(stripped)
    return stripped


def prepare(a) -> None:
    sys.path.insert(0, str(ROOT))
    import onnx

    import pipeline
    from pipeline.run.verify import reference_outputs

    out: Path = a.outdir
    if out.exists():
        if not a.force:
            raise SystemExit(f"{out} exists (--force replaces it)")
        shutil.rmtree(out)
    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    for d in ("artifacts", "models", "data"):
        (out / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(__file__), out / "gpu_check.py")
    shutil.copy2(ROOT / "zoo" / "torch_models.py", out / "torch_models.py")

    entries, models = [], {}
    for name in a.models:
        spec = MODELS[name]
        t0 = time.perf_counter()
        info = {"about": spec["about"], "shape": spec["shape"]}
        if "onnx" in spec:
            src = ROOT / spec["onnx"]
        else:
            import torch

            from zoo import torch_models

            m = _torch_model(spec, torch_models)
            src = torch_models.export(m, torch.randn(*spec["shape"]), work / f"{name}.onnx")
            info["torch"] = {k: spec[k] for k in ("torch", "kwargs", "seed")}
            info["torch"]["state_sha256"] = _state_digest(m)
        model = onnx.load(src)
        in_name = model.graph.input[0].name
        x = np.random.default_rng(0).standard_normal(spec["shape"]).astype(np.float32)
        ref = reference_outputs(src, {in_name: x})
        np.savez(out / "data" / f"{name}.npz", **{f"in:{in_name}": x}, **{f"ref:{k}": v for k, v in ref.items()})
        bundled = onnx.load(src)
        stripped = strip_weights(bundled) if src.stat().st_size > 1 << 20 else []
        onnx.save(bundled, out / "models" / f"{name}.onnx")
        info.update(onnx=f"models/{name}.onnx", data=f"data/{name}.npz", input=in_name, outputs=list(ref),
                    onnx_sha256=hashlib.sha256(src.read_bytes()).hexdigest(), onnx_bytes=src.stat().st_size,
                    stripped=len(stripped))
        models[name] = info
        builds = [(a.target, "fp32")] + ([(a.target, "fp16")] if name in a.fp16 else [])
        if a.cpu_control and name == CPU_CONTROL[0]:
            builds.append((CPU_CONTROL[1], "fp32"))
        for target, prec in builds:
            label = f"{name}-{target}" + ("-fp16" if prec == "fp16" else "")
            t1 = time.perf_counter()
            art = pipeline.compile(src, target, output=out / "artifacts" / label, precision=prec, force=True)
            entries.append({"label": label, "model": name, "target": target, "precision": prec,
                            "artifact": f"artifacts/{label}", "compile_s": round(time.perf_counter() - t1, 1),
                            "bytes": art.library.stat().st_size})
            print(f"  {label}: {art.library.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t1:.1f} s", flush=True)
        print(f"{name}: done in {time.perf_counter() - t0:.1f} s", flush=True)
    import tvm

    meta = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "deploy": pipeline.__version__, "tvm": tvm.__version__, "target": a.target,
            "tolerances": TOL, "models": models, "entries": entries}
    (out / "bundle.json").write_text(json.dumps(meta, indent=1))
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out}: {len(entries)} artifacts, {total / 1e6:.1f} MB")


# --------------------------------------------------------------------------------------------
# run (on the GPU machine, TVM runtime only)
# --------------------------------------------------------------------------------------------

def import_tvm_runtime():
    """Import TVM, and make sure its CUDA runtime (device API, cubin loader) is registered.

    In runtime-only mode (TVM_USE_RUNTIME_LIB=1, or no libtvm_compiler.so) `import tvm` loads no
    backends, so libtvm_runtime_cuda.so is loaded here. Returns (tvm, note)."""
    import tvm
    import tvm_ffi

    note = "runtime-only" if getattr(tvm, "_RUNTIME_ONLY", False) or tvm.base._RUNTIME_ONLY else "full"
    if tvm_ffi.get_global_func("device_api.cuda", allow_missing=True) is None:
        from tvm.base import _LOADED_LIBS
        from tvm_ffi.libinfo import load_lib_ctypes

        lib_dir = Path(_LOADED_LIBS["tvm_runtime"]._name).resolve().parent
        try:
            _LOADED_LIBS["tvm_runtime_cuda"] = load_lib_ctypes(package="tvm", target_name="tvm_runtime_cuda",
                                                               extra_lib_paths=[lib_dir], mode="RTLD_LOCAL")
            note += ", loaded libtvm_runtime_cuda.so"
        except (OSError, RuntimeError, FileNotFoundError) as e:
            note += f", no CUDA runtime ({str(e).splitlines()[0][:120]})"
    return tvm, note


def _flatten(result) -> list[np.ndarray]:
    if hasattr(result, "numpy"):
        return [result.numpy()]
    out = []
    for r in result:
        out.extend(_flatten(r))
    return out


def compare(ours: np.ndarray, ref: np.ndarray, precision: str) -> dict:
    o, r = ours.astype(np.float64), ref.astype(np.float64)
    if o.shape != r.shape:
        return {"ok": False, "max_abs": float("inf"), "max_rel": float("inf"), "cos": 0.0,
                "why": f"shape {list(o.shape)} != {list(r.shape)}"}
    diff = np.abs(o - r)
    max_abs, scale = float(diff.max()), float(np.abs(r).max())
    cos = float((o * r).sum() / (np.linalg.norm(o) * np.linalg.norm(r) + 1e-30))
    if not np.all(np.isfinite(o)):
        ok = False
    elif precision == "fp16":
        t = TOL["fp16"]
        ok = max_abs <= t["atol"] + t["rel_to_max"] * scale and cos >= t["min_cos"]
    else:
        t = TOL["fp32"]
        ok = bool(np.all(diff <= t["atol"] + t["rtol"] * np.abs(r)))
    return {"ok": bool(ok), "max_abs": max_abs, "max_rel": max_abs / scale if scale else max_abs, "cos": cos}


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def time_calls(fn, sync, min_runs: int, max_runs: int, budget_s: float, warmup: int = 5) -> dict:
    """Wall-clock per call (each call followed by a sync), median and p90 in ms."""
    for _ in range(warmup):
        fn()
    sync()
    samples, start = [], time.perf_counter()
    while len(samples) < max_runs and (len(samples) < min_runs or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return {"median_ms": _median_ms(samples), "p90_ms": samples[int(0.9 * (len(samples) - 1))] * 1e3, "runs": len(samples)}


def refill_onnx(path: Path):
    """The bundled ONNX with its stripped weights refilled (random, seeded): for timing only."""
    import onnx

    model = onnx.load(path)
    meta = {p.key: p.value for p in model.metadata_props}
    names = set(json.loads(meta.get("gpu_check.stripped", "[]")))
    rng = np.random.default_rng(1)
    for init in model.graph.initializer:
        if init.name in names:
            dt = np.float16 if init.data_type == onnx.TensorProto.FLOAT16 else np.float32
            init.raw_data = (rng.standard_normal(list(init.dims)) * 0.05).astype(dt).tobytes()
    return model.SerializeToString()


class TinyCNN:
    """tiny_cnn in PyTorch, its weights read from the ONNX file (made with onnx.helper, not torch)."""

    @staticmethod
    def build(onnx_path: Path):
        import onnx
        import torch
        from onnx import numpy_helper
        from torch import nn

        w = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in onnx.load(onnx_path).graph.initializer}

        def bn(n, g, b, m, v):
            layer = nn.BatchNorm2d(n)
            layer.weight.data, layer.bias.data, layer.running_mean.data, layer.running_var.data = w[g], w[b], w[m], w[v]
            return layer

        c1, c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1, bias=False)
        c1.weight.data, c1.bias.data, c2.weight.data = w["w1"], w["b1"], w["w2"]
        fc = nn.Linear(32, w["wf"].shape[0])
        fc.weight.data, fc.bias.data = w["wf"], w["bf"]
        return nn.Sequential(c1, bn(16, "g1", "be1", "m1", "v1"), nn.ReLU(), nn.MaxPool2d(2),
                             c2, bn(32, "g2", "be2", "m2", "v2"), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             fc, nn.Softmax(dim=1)).eval()


def environment(tvm, note: str) -> dict:
    env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "python": platform.python_version(), "tvm": f"{tvm.__version__} ({note})"}
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
        env["gpu"] = q.splitlines()[0] if q else "?"
    except (OSError, subprocess.SubprocessError):
        env["gpu"] = "? (no nvidia-smi)"
    try:
        model = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        env["cpu"] = f"{model[0]} x {len(model)} logical" if model else platform.machine()
    except OSError:
        env["cpu"] = platform.machine()
    for mod in ("torch", "onnxruntime", "numpy"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = None
    return env


def run(a) -> int:
    if a.runtime_only:
        os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")
    # tvm_ffi would otherwise JIT-compile a torch extension (minutes, with nvcc) at import
    os.environ.setdefault("TVM_FFI_DISABLE_TORCH_C_DLPACK", "1")
    torch = None
    if not a.no_torch:  # first, so that torch loads the CUDA runtime it was built with
        try:
            import torch

            sys.path.insert(0, str(a.bundle))
            import torch_models
            if not torch.cuda.is_available():
                torch = None
        except ImportError as e:
            print(f"# torch baseline off: {e}")
            torch = None
    bundle: Path = a.bundle
    meta = json.loads((bundle / "bundle.json").read_text())
    out = Path(a.out or os.environ.get("OUT") or ".")
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    tvm, note = import_tvm_runtime()
    env = environment(tvm, note)
    import tvm_ffi

    gpu = tvm.cuda(0)
    has_gpu = tvm_ffi.get_global_func("device_api.cuda", allow_missing=True) is not None and bool(gpu.exist)
    sm = f"sm_{gpu.compute_version.replace('.', '')}" if has_gpu else None
    if has_gpu:
        env["tvm_device"] = f"{gpu.device_name}, {sm}, {gpu.multi_processor_count} SMs"
    env["bundle"] = f"{meta['created']}, deploy {meta['deploy']}, TVM {meta['tvm']}"
    for k, v in env.items():
        print(f"# {k}: {v}", flush=True)

    ort = None
    if not a.no_ort:
        try:
            import onnxruntime as ort
        except ImportError as e:
            print(f"# ONNX Runtime baseline off: {e}")
    rows, failed = [], 0
    ort_sessions: dict[str, object] = {}
    torch_cache: dict[str, object] = {}
    for e in meta["entries"]:
        if a.only and not any(s in e["label"] for s in a.only):
            continue
        minfo = meta["models"][e["model"]]
        row = {"label": e["label"], "model": e["model"], "precision": e["precision"], "target": e["target"]}
        rows.append(row)
        t_entry = time.perf_counter()
        try:
            art = bundle / e["artifact"]
            man = json.loads((art / "manifest.json").read_text())
            lib = art / man["library"]["file"]
            if hashlib.sha256(lib.read_bytes()).hexdigest() != man["library"]["sha256"]:
                raise RuntimeError(f"{lib} does not match its manifest's sha256")
            cuda = man["target"]["family"] == "cuda"
            if cuda:
                code = {c["arch"] for c in man["target"].get("gpu_code", []) if c["kind"] == "cubin"}
                if not has_gpu:
                    tvm.runtime.load_module(str(lib))  # the host part and the cubin loader, at least
                    row["status"] = "loaded; not run (no GPU here)"
                    print(f"{e['label']}: {row['status']}", flush=True)
                    continue
                if sm not in code:
                    raise RuntimeError(f"artifact has GPU code for {sorted(code)}, this GPU is {sm}")
            dev = gpu if cuda else tvm.cpu(0)
            mod = tvm.runtime.load_module(str(lib))
            from tvm.runtime.vm import VirtualMachine

            vm = VirtualMachine(mod, dev)
            data = np.load(bundle / minfo["data"])
            x = data[f"in:{minfo['input']}"]
            spec = man["model"]["inputs"][0]
            if list(x.shape) != spec["shape"] or np.dtype(spec["dtype"]) != x.dtype:
                raise RuntimeError(f"input {x.dtype}{list(x.shape)} != artifact's {spec['dtype']}{spec['shape']}")
            t0 = time.perf_counter()
            outs = _flatten(vm["main"](tvm.runtime.tensor(x, dev)))
            row["first_call_ms"] = (time.perf_counter() - t0) * 1e3
            errs = {}
            for o, name in zip(outs, minfo["outputs"]):
                errs[name] = compare(o, data[f"ref:{name}"], e["precision"])
            row["outputs"] = errs
            row["ok"] = all(v["ok"] for v in errs.values()) and len(outs) == len(minfo["outputs"])
            row["max_abs"] = max(v["max_abs"] for v in errs.values())
            row["max_rel"] = max(v["max_rel"] for v in errs.values())
            row["cos"] = min(v["cos"] for v in errs.values())
            # speed: inputs resident on the device, TVM's timer (CUDA events / device sync)
            xd = tvm.runtime.tensor(x, dev)
            ev = vm.time_evaluator("main", dev, number=1, repeat=a.repeat, min_repeat_ms=a.min_repeat_ms)
            res = list(ev(xd).results)
            row["tvm_ms"] = _median_ms(res)
            row["tvm_min_ms"] = min(res) * 1e3
            # a host call: numpy in, run, numpy out
            f = vm["main"]
            row["tvm_host_ms"] = time_calls(lambda: _flatten(f(tvm.runtime.tensor(x, dev))), dev.sync,
                                            20, 2000, a.budget)["median_ms"]
            if not row["ok"]:
                failed += 1
        except Exception as exc:  # noqa: BLE001 - report and go on with the others
            failed += 1
            row["ok"] = False
            row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:400] if str(exc).strip() else ''}"
            traceback.print_exc()
        # baselines: once per model (fp32 rows) / per precision for torch
        if _on_gpu(e) and ort is not None and e["precision"] == "fp32":
            try:
                sess = ort_sessions.get(e["model"])
                if sess is None:
                    opts = ort.SessionOptions()
                    opts.log_severity_level = 3
                    sess = ort.InferenceSession(refill_onnx(bundle / minfo["onnx"]), opts, providers=["CPUExecutionProvider"])
                    ort_sessions[e["model"]] = sess
                x = np.load(bundle / minfo["data"])[f"in:{minfo['input']}"]
                feed = {minfo["input"]: x}
                row["ort_cpu_ms"] = time_calls(lambda: sess.run(None, feed), lambda: None, 20, 2000, a.budget)["median_ms"]
            except Exception as exc:  # noqa: BLE001
                row["ort_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        if _on_gpu(e) and torch is not None:
            try:
                key = e["model"]
                m = torch_cache.get(key)
                if m is None:
                    if "torch" in minfo:
                        spec = minfo["torch"]
                        torch.manual_seed(spec["seed"])
                        m = getattr(torch_models, spec["torch"])(**spec["kwargs"]).eval()
                        if spec["torch"] in ("MobileNetV2", "ResNet"):
                            torch_models._randomize_bn(m, spec["seed"])
                        row_same = _state_digest(m) == spec["state_sha256"]
                    else:
                        m = TinyCNN.build(bundle / minfo["onnx"])
                        row_same = True
                    torch_cache[key] = m = (m, row_same)
                model, same = m
                dt = torch.float16 if e["precision"] == "fp16" else torch.float32
                torch.backends.cuda.matmul.allow_tf32 = False
                torch.backends.cudnn.allow_tf32 = False
                tm = copy.deepcopy(model).to("cuda", dt)
                data = np.load(bundle / minfo["data"])
                xt = torch.from_numpy(data[f"in:{minfo['input']}"]).to("cuda", dt)
                with torch.inference_mode():
                    y = tm(xt).float().cpu().numpy()
                    row["torch_same_weights"] = same
                    if same:
                        row["torch_err"] = compare(y, data[f"ref:{minfo['outputs'][0]}"], e["precision"])
                    row["torch_ms"] = time_calls(lambda: tm(xt), torch.cuda.synchronize, 20, 2000, a.budget)["median_ms"]
            except Exception as exc:  # noqa: BLE001
                row["torch_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        row["seconds"] = round(time.perf_counter() - t_entry, 1)
        print(_line(row), flush=True)

    text = report(env, meta, rows, a)
    print()
    print(text)
    (out / "gpu_check.txt").write_text(text + "\n")
    about = {k: meta[k] for k in ("created", "deploy", "tvm", "target", "tolerances", "models")}
    (out / "gpu_check.json").write_text(json.dumps({"env": env, "bundle": about, "rows": rows}, indent=1, default=str))
    print(f"\n{len(rows)} artifacts, {failed} failed, {time.perf_counter() - t_start:.0f} s; wrote {out / 'gpu_check.txt'}")
    if failed:
        return 1
    if any("tvm_ms" not in r for r in rows):
        print("no GPU visible here: the CUDA artifacts were loaded, not run (exit code 2)")
        return 2
    return 0


def _on_gpu(e: dict) -> bool:
    return e["target"].startswith(("cuda", "jetson-orin")) and not e["target"].endswith("-cpu")


def _fmt(v, spec=".3f", none="-"):
    return none if v is None else format(v, spec)


def _line(r: dict) -> str:
    if "error" in r:
        return f"{r['label']}: FAILED {r['error']}"
    if "tvm_ms" not in r:
        return f"{r['label']}: {r.get('status', '?')}"
    return (f"{r['label']}: {'ok' if r['ok'] else 'MISMATCH'} max_abs {r['max_abs']:.2e} max_rel {r['max_rel']:.2e} "
            f"cos {r['cos']:.6f}; tvm {r['tvm_ms']:.3f} ms (host call {r['tvm_host_ms']:.3f}), "
            f"ort {_fmt(r.get('ort_cpu_ms'))}, torch {_fmt(r.get('torch_ms'))} ms  [{r['seconds']} s]")


def report(env: dict, meta: dict, rows: list[dict], a) -> str:
    lines = ["# deploy CUDA artifacts on a GPU: scripts/gpu_check.py", ""]
    lines += [f"{k:<11} {v}" for k, v in env.items()]
    lines += ["", "Models:"] + [f"  {k:<13} {v['about']}" for k, v in meta["models"].items()]
    lines += ["", "Accuracy: the artifact on the device vs ONNX Runtime (CPU, on the build machine), same input.",
              "  fp32: |d| <= 1e-4 + 1e-3|ref| element-wise; fp16: max|d| <= 1e-3 + 2e-2 max|ref| and cosine >= 0.999.",
              f"Speed, batch 1, median ms: tvm = TVM time_evaluator (input on the GPU, {a.repeat} repeats of >= "
              f"{a.min_repeat_ms} ms); host = numpy in -> run -> numpy out, wall clock;",
              "  ort = ONNX Runtime 'CPUExecutionProvider' on this machine's CPU (default threads); torch = PyTorch eager",
              "  on this GPU, same architecture and dtype, TF32 off, input on the GPU, synchronized each call.", ""]
    hdr = (f"{'artifact':<36} {'result':<9} {'max abs':>9} {'max rel':>9} {'cosine':>9} {'tvm':>8} {'host':>8} "
           f"{'ort cpu':>8} {'torch':>8} {'tvm/torch':>9}")
    lines += [hdr, "-" * len(hdr)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['label']:<36} FAILED    {r['error']}")
            continue
        if "tvm_ms" not in r:
            lines.append(f"{r['label']:<36} {r.get('status', '?')}")
            continue
        ratio = f"{r['tvm_ms'] / r['torch_ms']:.2f}x" if r.get("torch_ms") else "-"
        lines.append(f"{r['label']:<36} {'ok' if r['ok'] else 'MISMATCH':<9} {r['max_abs']:>9.2e} {r['max_rel']:>9.2e} "
                     f"{r['cos']:>9.6f} {r['tvm_ms']:>8.3f} {r['tvm_host_ms']:>8.3f} {_fmt(r.get('ort_cpu_ms')):>8} "
                     f"{_fmt(r.get('torch_ms')):>8} {ratio:>9}")
    notes = []
    for r in rows:
        te = r.get("torch_err")
        if te:
            notes.append(f"  {r['label']}: torch eager vs ORT reference: max abs {te['max_abs']:.2e}, "
                         f"cosine {te['cos']:.6f} ({'ok' if te['ok'] else 'outside tolerance'})")
        elif "torch_same_weights" in r and not r["torch_same_weights"]:
            notes.append(f"  {r['label']}: torch rebuilt different weights here (seeded init differs): timing only")
        for k in ("ort_error", "torch_error"):
            if k in r:
                notes.append(f"  {r['label']}: {k}: {r[k]}")
    if notes:
        lines += ["", "Baselines' own checks:"] + notes
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="export, compile and compute references (needs deploy)")
    p.add_argument("outdir", type=Path)
    p.add_argument("--target", default="cuda-sm90")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--fp16", nargs="*", default=DEFAULT_FP16, help="models also built with --precision fp16")
    p.add_argument("--no-cpu-control", dest="cpu_control", action="store_false")
    p.add_argument("--work", type=Path, default=Path("/tmp/gpu-check-work"))
    p.add_argument("--force", action="store_true")
    r = sub.add_parser("run", help="run the bundle on this machine's GPU (TVM runtime only)")
    r.add_argument("bundle", type=Path)
    r.add_argument("--out", type=Path, default=None, help="where gpu_check.txt/json go [$OUT or .]")
    r.add_argument("--only", nargs="*", default=None, help="labels containing any of these")
    r.add_argument("--repeat", type=int, default=50)
    r.add_argument("--min-repeat-ms", type=int, default=20)
    r.add_argument("--budget", type=float, default=2.0, help="seconds per wall-clock timing loop")
    r.add_argument("--no-torch", action="store_true")
    r.add_argument("--no-ort", action="store_true")
    r.add_argument("--full-tvm", dest="runtime_only", action="store_false",
                   help="do not set TVM_USE_RUNTIME_LIB=1 (with a full TVM install)")
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(a)
        return 0
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
