"""Run deploy's CUDA artifacts on a real GPU: outputs against ONNX Runtime, and their speed.

Two steps, because the GPU machine need not have deploy (or TVM's compiler) installed:

    # here, with deploy's environment: export, compile, ORT reference outputs, one .tar.xz
    .venv/bin/python scripts/gpu_check.py prepare gpu-bundle --runtime auto [--target cuda-sm90]

    # on the GPU machine (Python 3, numpy, a driver; PyTorch and ONNX Runtime for the baselines)
    python3 scripts/gpu_check.py run gpu-bundle.tar.xz --out $OUT

`prepare` exports the models in MODELS (the tiny CNN, a BERT-mini-sized encoder, MobileNetV2,
ResNet-50, a BERT-base-sized encoder, ViT-B/16; zoo/torch_models.py), compiles each for the CUDA
preset in fp32 and fp16 at batch 1 and 8, plus the tiny CNN for an x86-64-v3 CPU as a control,
runs ONNX Runtime (CPU) here for the reference outputs, and packs the bundle (this script
included) into BUNDLE.tar.xz, refused above 64 MiB. With --weights compressible (the default) each
big initializer is refilled, before compiling, by one seeded random block repeated
(compressible_weights), so the artifacts that embed it pack small; the references are computed
with exactly those weights. --runtime auto carries TVM's runtime (no compiler) as rt/.

`run` unpacks the archive, imports TVM's runtime (from rt/ when there; TVM_USE_RUNTIME_LIB=1),
checks each library's sha256 and that its GPU code is for this GPU, runs it on cuda:0 and compares
with the reference: fp32 within atol 1e-4 + rtol 1e-3 (element-wise, as `deploy verify`), fp16
within 1e-3 + 2e-2 x max|ref| and cosine >= 0.999. Per model and batch it then times, in
alternating turns (median per call), each artifact, PyTorch eager fp16, torch.compile fp16
(max-autotune-no-cudagraphs, reduce-overhead: each in a worker process killed when its compile
budget is spent) and ONNX Runtime's CUDA provider; ONNX Runtime on the CPU too. It prints a table
and writes gpu_check.txt and gpu_check.json to --out ($OUT when set). Exit code 1 if any artifact
failed to load or mismatched, 2 if no GPU was visible (CUDA artifacts then only load: their host
code and cubin loader, not the kernels).
"""

from __future__ import annotations

import argparse
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
# torch.manual_seed(seed)), with the example input shape (batch 1); "onnx": a file in the repository.
MODELS = {
    "tiny_cnn": {"onnx": "examples/tiny_cnn.onnx", "shape": [1, 3, 32, 32],
                 "about": "bundled example: 2 conv + BN, pool, Gemm, softmax (1x3x32x32; a static batch of 1)"},
    "bert_mini": {"torch": "MiniLMEncoder", "kwargs": {"layers": 4, "d": 256, "heads": 4, "ff": 1024}, "seed": 0,
                  "shape": [1, 128, 256], "about": "BERT-mini-sized encoder: 4 blocks, d=256, 4 heads, FFN 1024, seq 128"},
    "mobilenet_v2": {"torch": "MobileNetV2", "kwargs": {}, "seed": 0, "shape": [1, 3, 224, 224],
                     "about": "MobileNetV2 (torchvision layout), 1x3x224x224"},
    "resnet50": {"torch": "ResNet", "kwargs": {"blocks": [3, 4, 6, 3], "bottleneck": True}, "seed": 0,
                 "shape": [1, 3, 224, 224], "about": "ResNet-50 (torchvision v1.5 layout, Bottleneck blocks), 1x3x224x224"},
    "bert_base": {"torch": "MiniLMEncoder", "kwargs": {"layers": 12, "d": 768, "heads": 12, "ff": 3072}, "seed": 0,
                  "shape": [1, 128, 768], "about": "BERT-base-sized encoder: 12 blocks, d=768, 12 heads, FFN 3072, seq 128"},
    "vit_b16": {"torch": "ViT", "kwargs": {}, "seed": 0, "shape": [1, 3, 224, 224],
                "about": "ViT-B/16: 16x16 patch conv, 12 pre-LN blocks (d=768, 12 heads, FFN 3072) over 197 tokens"},
}
DEFAULT_FP16 = list(MODELS)
DEFAULT_BATCHES = [1, 8]
CPU_CONTROL = ("tiny_cnn", "x86-64-v3")  # a CPU artifact: the runtime itself works there
TOL = {"fp32": {"atol": 1e-4, "rtol": 1e-3}, "fp16": {"atol": 1e-3, "rel_to_max": 2e-2, "min_cos": 0.999}}
STRIP_MIN_ELEMS = 1024  # float initializers at least this big leave the bundle as zero-size placeholders
TILE_PERIOD = 4099      # compressible weights: each big initializer repeats one seeded block of this many values
MAX_CARRY = 64 << 20    # what can be carried to the GPU machine
TORCH_MODES = ("eager", "max-autotune-no-cudagraphs", "reduce-overhead")


# --------------------------------------------------------------------------------------------
# prepare (here, with deploy)
# --------------------------------------------------------------------------------------------

def _torch_model(spec: dict, torch_models):
    import torch

    torch.manual_seed(spec["seed"])
    m = getattr(torch_models, spec["torch"])(**spec["kwargs"]).eval()
    if spec["torch"] in ("MobileNetV2", "ResNet"):
        torch_models._randomize_bn(m, spec["seed"])
        if hasattr(torch_models, "calibrate_bn"):  # BN statistics of a random batch: outputs depend on the input
            torch_models.calibrate_bn(m, [8] + list(spec.get("shape", [1, 3, 224, 224]))[1:], spec["seed"])
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


def compressible_weights(model, seed: int = 0, min_elems: int = STRIP_MIN_ELEMS, period: int = TILE_PERIOD) -> list[str]:
    """Refill each big float initializer in place with one seeded random block of ``period`` values,
    repeated: same shape, dtype, mean and standard deviation as before, but the bytes repeat, so the
    tensor (and every artifact that embeds it, cast or transposed: ``period`` is prime) compresses to
    almost nothing. Returns the names refilled (recorded in the model's metadata)."""
    from onnx import TensorProto, numpy_helper

    rng = np.random.default_rng(seed)
    block = rng.standard_normal(period)
    done = []
    for init in model.graph.initializer:
        n = int(np.prod(init.dims)) if init.dims else 1
        if init.data_type not in (TensorProto.FLOAT, TensorProto.FLOAT16) or n < min_elems:
            continue
        w = numpy_helper.to_array(init)
        mean, std = float(w.mean(dtype=np.float64)), float(w.std(dtype=np.float64))
        filled = (np.resize(block, n) * (std if std > 0 else 0.02) + mean).astype(w.dtype).reshape(w.shape)
        init.CopyFrom(numpy_helper.from_array(filled, init.name))
        done.append(init.name)
    entry = model.metadata_props.add()
    entry.key, entry.value = "gpu_check.tiled", json.dumps({"period": period, "seed": seed, "names": done})
    return done


def pack(outdir: Path, preset: int = 6) -> Path:
    """outdir -> outdir.tar.xz (members under outdir's name), written atomically; returns the path."""
    import tarfile  # its xz mode is Python's lzma: nothing to install on either side

    dest = outdir.with_name(outdir.name + ".tar.xz")
    tmp = dest.with_name(dest.name + ".tmp")
    with tarfile.open(tmp, "w:xz", preset=preset) as tar:
        tar.add(outdir, arcname=outdir.name)
    os.replace(tmp, dest)
    return dest


RT_DROP = ["lib/libtvm_compiler.so", "lib/libtvm_runtime_extra.so", "3rdparty", "src", "include", "web", "lib64",
           "relax", "topi", "s_tir", "contrib", "exec"]


def make_runtime(dest: Path, python: str = "3.12") -> None:
    """rt/ for a GPU machine without TVM: this TVM's package less its compiler (runtime-only mode),
    libcudart from the CUDA toolkit (libtvm_runtime_cuda.so finds it via $ORIGIN), and apache-tvm-ffi
    for that machine's Python in rt/site (a wheel from `pip download`, unpacked)."""
    import zipfile
    from importlib.metadata import version

    import tvm

    src = Path(tvm.__file__).parent
    shutil.copytree(src, dest / "tvm", ignore=shutil.ignore_patterns("__pycache__"))
    for rel in RT_DROP:
        p = dest / "tvm" / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    from pipeline.backends.cuda.toolkit import find_nvcc

    roots = [os.environ.get("CUDA_HOME"), Path(find_nvcc()).resolve().parent.parent, "/usr/local/cuda",
             *sorted(Path("/usr/local").glob("cuda-*"), reverse=True)]
    cudart = next((c for r in roots if r for c in [sorted(Path(r).glob("lib*/libcudart.so.[0-9]*"))] if c), [])
    if not cudart:
        raise SystemExit("no libcudart.so.N beside nvcc: set CUDA_HOME (--runtime DIR gives a ready runtime)")
    shutil.copy2(cudart[-1], dest / "tvm" / "lib" / cudart[-1].name)
    whl = dest / "whl"
    ver = version("apache-tvm-ffi")
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
                        python, "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform",
                        "manylinux2014_x86_64", f"apache-tvm-ffi=={ver}", "-d", str(whl)], capture_output=True, text=True)
    wheels = list(whl.glob("*.whl"))
    if r.returncode or not wheels:
        raise SystemExit(f"pip download apache-tvm-ffi=={ver} for Python {python} failed:\n{r.stderr[-1500:]}\n"
                         "hint: --runtime DIR with tvm/ and site/ (apache-tvm-ffi installed with pip --target) made by hand")
    with zipfile.ZipFile(wheels[0]) as z:
        z.extractall(dest / "site")
    shutil.rmtree(whl)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"runtime: TVM {tvm.__version__} (no compiler), {cudart[-1].name}, apache-tvm-ffi {ver} for Python {python}: "
          f"{size / 2**20:.1f} MiB", flush=True)


def prepare(a) -> int:
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
    if a.runtime == "auto":
        make_runtime(out / "rt", a.python)
    elif a.runtime:
        shutil.copytree(a.runtime, out / "rt", symlinks=False)

    entries, models = [], {}
    t_all = time.perf_counter()
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
            src = torch_models.export(m, torch.randn(*spec["shape"]), work / f"{name}.onnx",
                                      dynamic={"input": {0: "batch"}, "output": {0: "batch"}})
            info["torch"] = {k: spec[k] for k in ("torch", "kwargs", "seed", "shape")}
            info["torch"]["state_sha256"] = _state_digest(m)
        model = onnx.load(src)
        tiled: list[str] = []
        if a.weights == "compressible" and src.stat().st_size > a.tile_min_bytes:
            tiled = compressible_weights(model, seed=spec.get("seed", 0))
            src = work / f"{name}.tiled.onnx"
            onnx.save(model, src)
            if "torch" in info:
                info["torch"]["same_weights"] = False  # torch keeps its own init: a timing baseline only
        in_dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
        batches = [b for b in a.batches if b == spec["shape"][0] or in_dim0.dim_param]
        in_name = model.graph.input[0].name
        info.update(onnx=f"models/{name}.onnx", input=in_name, batches=batches, data={}, tiled=len(tiled),
                    onnx_sha256=hashlib.sha256(src.read_bytes()).hexdigest(), onnx_bytes=src.stat().st_size)
        for batch in batches:
            shape = [batch] + spec["shape"][1:]
            x = np.random.default_rng(batch).standard_normal(shape).astype(np.float32)
            ref = reference_outputs(src, {in_name: x})
            rel = f"data/{name}-b{batch}.npz"
            np.savez(out / rel, **{f"in:{in_name}": x}, **{f"ref:{k}": v for k, v in ref.items()})
            info["data"][str(batch)] = rel
            info["outputs"] = list(ref)
            if batch > 1:  # references that barely depend on the input would make a weak accuracy check
                r0 = next(iter(ref.values())).astype(np.float64)
                info["input_dependence"] = float(r0.std(0).mean() / (r0.std() + 1e-30))
                if info["input_dependence"] < 1e-2:
                    print(f"warning: {name}'s outputs barely depend on its input (spread across the batch "
                          f"{info['input_dependence']:.1e} of their spread): a weak accuracy check", flush=True)
        if tiled:
            shutil.copy2(src, out / "models" / f"{name}.onnx")  # compresses like the artifacts
            info["stripped"] = 0
        else:
            bundled = onnx.load(src)
            info["stripped"] = len(strip_weights(bundled) if src.stat().st_size > 1 << 20 else [])
            onnx.save(bundled, out / "models" / f"{name}.onnx")
        models[name] = info
        precs = ["fp32", "fp16"] if name in a.fp16 else ["fp32"]
        builds = [(a.target, p, b) for b in batches for p in precs]
        if a.dynamic_batch and in_dim0.dim_param and len(batches) > 1:
            builds += [(a.target, p, "dyn") for p in precs]  # one artifact for batch min..max (--dim)
        if a.cpu_control and name == CPU_CONTROL[0]:
            builds.append((CPU_CONTROL[1], "fp32", spec["shape"][0]))
        for target, prec, batch in builds:
            dyn = {in_dim0.dim_param: f"{min(batches)}..{max(batches)}"} if batch == "dyn" else {}
            label = (f"{name}-b{min(batches)}..{max(batches)}" if dyn else f"{name}-b{batch}") + f"-{target}" + (
                "-fp16" if prec == "fp16" else "")
            t1 = time.perf_counter()
            shapes = {} if dyn or (batch == spec["shape"][0] and not in_dim0.dim_param) else {
                in_name: [batch] + spec["shape"][1:]}
            art = pipeline.compile(src, target, output=out / "artifacts" / label, precision=prec, force=True,
                                   input_shapes=shapes, dims=dyn)
            entries.append({"label": label, "model": name, "batch": batch if not dyn else None, "dynamic": bool(dyn),
                            "batches": batches if dyn else [batch], "target": target, "precision": prec,
                            "artifact": f"artifacts/{label}", "compile_s": round(time.perf_counter() - t1, 1),
                            "bytes": art.library.stat().st_size})
            print(f"  {label}: {art.library.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t1:.1f} s", flush=True)
        print(f"{name}: done in {time.perf_counter() - t0:.1f} s", flush=True)
    import tvm

    meta = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "deploy": pipeline.__version__, "tvm": tvm.__version__, "target": a.target, "weights": a.weights,
            "tolerances": TOL, "models": models, "entries": entries}
    (out / "bundle.json").write_text(json.dumps(meta, indent=1))
    print(f"compiled {len(entries)} artifacts in {time.perf_counter() - t_all:.0f} s", flush=True)
    return finish(out, a.xz_preset, a.max_bytes)


def finish(out: Path, preset: int = 6, limit: int = MAX_CARRY) -> int:
    """Pack the bundle folder into out.tar.xz and print its size; above ``limit`` bytes the archive is
    removed and the exit code is 1 (it could not be carried to the GPU machine)."""
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    t1 = time.perf_counter()
    packed = pack(out, preset)
    size = packed.stat().st_size
    print(f"bundle {out}: {total / 2**20:.1f} MiB; packed {packed}: {size / 2**20:.2f} MiB ({size} bytes, "
          f"xz -{preset}, {time.perf_counter() - t1:.0f} s)", flush=True)
    if size > limit:
        packed.unlink()
        print(f"error: the packed bundle is {size / 2**20:.2f} MiB, over the {limit / 2**20:g} MiB that can be carried "
              f"to the GPU machine; {packed} removed.\nhint: leave out big models (--models), batch 8 (--batches 1) "
              f"or fp16 (--fp16 MODEL...), and keep --weights compressible", file=sys.stderr)
        return 1
    return 0


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
    from importlib.metadata import PackageNotFoundError, version

    for mod, dists in (("torch", ["torch"]), ("onnxruntime", ["onnxruntime-gpu", "onnxruntime"]), ("numpy", ["numpy"])):
        env[mod] = None
        for dist in dists:  # (not imported: torch lives in the worker processes)
            try:
                env[mod] = f"{version(dist)}" + (" (onnxruntime-gpu)" if dist == "onnxruntime-gpu" else "")
                break
            except PackageNotFoundError:
                continue
    return env


def open_bundle(path: Path, extract_to: Path | None) -> tuple[Path, float]:
    """A bundle directory, or a .tar.xz of one (extracted first); returns (directory, seconds spent)."""
    import tarfile

    if path.is_dir():
        return path, 0.0
    t0 = time.perf_counter()
    dest = extract_to or Path(os.environ.get("TMPDIR", "/tmp")) / "gpu-check-bundle"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(path, "r:xz") as tar:
        tops = {m.name.split("/", 1)[0] for m in tar.getmembers()}
        kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, **kw)
    if len(tops) != 1:
        raise SystemExit(f"{path}: expected one top directory, found {sorted(tops)}")
    return dest / tops.pop(), time.perf_counter() - t0


def torch_worker(a) -> int:
    """One PyTorch baseline (eager fp16, or torch.compile in one mode) in its own process, driven by
    `run` over stdin/stdout (one JSON line each way), so that a compile over its budget can be killed."""
    os.environ.setdefault("TVM_FFI_DISABLE_TORCH_C_DLPACK", "1")
    import torch

    sys.path.insert(0, str(a.bundle))
    import torch_models

    proto = os.fdopen(os.dup(1), "w")  # replies only: whatever else writes to stdout goes to the log
    os.dup2(2, 1)
    meta = json.loads((a.bundle / "bundle.json").read_text())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    state: dict = {}
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)

    def reply(obj):
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "load":
                state.clear()
                if a.mode != "eager":
                    torch._dynamo.reset()
                if a.device == "cuda":
                    torch.cuda.empty_cache()
                t0 = time.perf_counter()
                minfo = meta["models"][req["model"]]
                if "torch" in minfo:
                    spec = minfo["torch"]
                    m = _torch_model(spec, torch_models)
                    same = spec.get("same_weights", True) and _state_digest(m) == spec["state_sha256"]
                else:
                    m, same = TinyCNN.build(a.bundle / minfo["onnx"]), True
                m = m.to(a.device, torch.float16)
                data = np.load(a.bundle / minfo["data"][str(req["batch"])])
                x = torch.from_numpy(data[f"in:{minfo['input']}"]).to(a.device, torch.float16)
                f = m if a.mode == "eager" else torch.compile(m, mode=a.mode)
                with torch.no_grad():
                    for _ in range(3):
                        y = f(x)
                    sync()
                res = {"ok": True, "load_s": round(time.perf_counter() - t0, 1), "same_weights": same}
                if same:
                    res["err"] = compare(y.float().cpu().numpy(), data[f"ref:{minfo['outputs'][0]}"], "fp16")
                state.update(f=f, x=x)
                reply(res)
            elif req["op"] == "turn":
                f, x, n = state["f"], state["x"], req["n"]
                with torch.no_grad():
                    sync()
                    t0 = time.perf_counter()
                    for _ in range(n):
                        f(x)
                    sync()
                reply({"ok": True, "s": (time.perf_counter() - t0) / n})
            else:
                reply({"ok": True})
                return 0
        except Exception as exc:  # noqa: BLE001 - reported to run
            traceback.print_exc()
            reply({"ok": False, "error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"})
    return 0


class Worker:
    """`run`'s end of a torch_worker process; its compile time is bounded by ``budget`` seconds in all."""

    def __init__(self, mode: str, bundle: Path, budget: float, log: Path, device: str = "cuda"):
        self.mode, self.budget, self.spent, self.dead = mode, budget, 0.0, None
        self.log = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "torch-worker", str(bundle),
                                      "--mode", mode, "--device", device], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, bufsize=1, start_new_session=True)

    def send(self, req: dict) -> bool:
        if self.dead:
            return False
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            return True
        except OSError as e:
            self.close(f"worker gone ({e})")
            return False

    def recv(self, timeout: float) -> dict:
        import select

        if self.dead:
            return {"ok": False, "error": self.dead}
        ready, _, _ = select.select([self.proc.stdout], [], [], max(timeout, 0.0))
        if not ready:
            limit = "the run's deadline" if self.mode == "eager" else f"its {self.budget:.0f} s compile budget or the deadline"
            self.close(f"skipped: {self.mode} ran past {limit} (worker killed)")
            return {"ok": False, "error": self.dead}
        line = self.proc.stdout.readline()
        if not line:
            self.close(f"worker exited (rc {self.proc.wait()}, see {Path(self.log.name).name})")
            return {"ok": False, "error": self.dead}
        return json.loads(line)

    def ask(self, req: dict, timeout: float) -> dict:
        return self.recv(timeout) if self.send(req) else {"ok": False, "error": self.dead}

    def close(self, why: str = "closed") -> None:
        self.dead = self.dead or why
        if self.proc.poll() is None:  # its own process group: inductor's compile workers go with it
            try:
                os.killpg(self.proc.pid, 9)
            except OSError:
                self.proc.kill()
            self.proc.wait()
        self.log.close()


def load_all(workers: dict, model: str, batch: int, deadline_left: float) -> dict:
    """Load (and compile) the model in every worker at once; each answer awaited until its mode's
    compile budget or the deadline runs out (the worker is then killed). Returns mode -> answer."""
    t0 = time.perf_counter()
    sent = {m: w.send({"op": "load", "model": model, "batch": batch}) for m, w in workers.items()}
    res = {}
    for m, w in workers.items():
        if not sent[m]:
            res[m] = {"ok": False, "error": w.dead}
            continue
        limit = deadline_left if m == "eager" else min(w.budget - w.spent, deadline_left)
        res[m] = w.recv(t0 + limit - time.perf_counter())
        if m != "eager":
            w.spent += time.perf_counter() - t0
    return res


def _artifact_ok(e: dict, bundle: Path) -> tuple[Path, dict]:
    art = bundle / e["artifact"]
    man = json.loads((art / "manifest.json").read_text())
    lib = art / man["library"]["file"]
    if hashlib.sha256(lib.read_bytes()).hexdigest() != man["library"]["sha256"]:
        raise RuntimeError(f"{lib} does not match its manifest's sha256")
    return lib, man


def _ort_sessions(ort, onnx_bytes: bytes) -> dict:
    """ONNX Runtime sessions for one model: "cpu", and "cuda" (TF32 off) or "cuda_error"."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    out = {"cpu": ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])}
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        out["cuda_error"] = "no CUDAExecutionProvider in this onnxruntime"
        return out
    sess = None
    for popts in ({"use_tf32": "0"}, {}):
        try:
            sess = ort.InferenceSession(onnx_bytes, opts, providers=[("CUDAExecutionProvider", popts)])
            break
        except Exception:  # noqa: BLE001 - older ORT: no use_tf32 option
            continue
    if sess is None or sess.get_providers()[0] != "CUDAExecutionProvider":
        out["cuda_error"] = "the CUDA provider did not load (cuDNN/cuBLAS missing?)"
    else:
        out["cuda"] = sess
    return out


def _ort_cuda(ort, sess, minfo: dict, x: np.ndarray):
    """Run ``sess`` (CUDA provider) with input and outputs on the GPU: (call, output)."""
    io = sess.io_binding()
    io.bind_ortvalue_input(minfo["input"], ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
    for o in sess.get_outputs():
        io.bind_output(o.name, "cuda")
    sess.run_with_iobinding(io)
    y = io.copy_outputs_to_cpu()[0]
    return (lambda: sess.run_with_iobinding(io)), y


def _turns(contenders: dict, turns: int, turn_s: float) -> dict:
    """Median per-call ms of each contender over ``turns`` alternating turns (each turn: n calls,
    n chosen so a turn lasts about ``turn_s``). contenders: name -> f(n) returning seconds per call."""
    n = {}
    for k, f in contenders.items():
        try:
            one = f(1)
            n[k] = max(1, min(200, int(turn_s / max(one, 1e-6))))
        except Exception as exc:  # noqa: BLE001
            n[k] = f"{type(exc).__name__}: {str(exc)[:200]}"
    samples: dict = {k: [] for k in contenders if isinstance(n[k], int)}
    for _ in range(turns):
        for k in list(samples):
            try:
                samples[k].append(contenders[k](n[k]))
            except Exception as exc:  # noqa: BLE001
                n[k] = f"{type(exc).__name__}: {str(exc)[:200]}"
                del samples[k]
    out = {k: {"ms": _median_ms(v), "calls_per_turn": n[k], "turns": len(v)} for k, v in samples.items()}
    out.update({k: {"error": v} for k, v in n.items() if isinstance(v, str)})
    return out


def _timed(fn, sync):
    def go(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        return (time.perf_counter() - t0) / n
    return go


def run(a) -> int:
    t_start = time.perf_counter()
    if a.runtime_only:
        os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")
    # tvm_ffi would otherwise JIT-compile a torch extension (minutes, with nvcc) at import
    os.environ.setdefault("TVM_FFI_DISABLE_TORCH_C_DLPACK", "1")
    bundle, extract_s = open_bundle(a.bundle, a.extract_to)
    rt_note = None
    if (bundle / "rt").is_dir():  # TVM's runtime (and tvm_ffi) carried in the bundle, for one Python
        tag = f"cpython-{sys.version_info.major}{sys.version_info.minor}-"
        if any((bundle / "rt" / "site" / "tvm_ffi").glob(f"core.{tag}*")):
            sys.path[:0] = [str(bundle / "rt" / "site"), str(bundle / "rt")]
            rt_note = "TVM runtime from the bundle's rt/"
        else:
            rt_note = f"the bundle's rt/ is not for Python {platform.python_version()}: the installed TVM is used"
    meta = json.loads((bundle / "bundle.json").read_text())
    out = Path(a.out or os.environ.get("OUT") or ".")
    out.mkdir(parents=True, exist_ok=True)
    tvm, note = import_tvm_runtime()
    env = environment(tvm, note)
    import tvm_ffi
    from tvm.runtime.vm import VirtualMachine

    gpu = tvm.cuda(0)
    has_gpu = tvm_ffi.get_global_func("device_api.cuda", allow_missing=True) is not None and bool(gpu.exist)
    sm = f"sm_{gpu.compute_version.replace('.', '')}" if has_gpu else None
    if has_gpu:
        env["tvm_device"] = f"{gpu.device_name}, {sm}, {gpu.multi_processor_count} SMs"
    env["bundle"] = f"{meta['created']}, deploy {meta['deploy']}, TVM {meta['tvm']}, {meta.get('weights', 'real')} weights"
    if extract_s:
        env["extract"] = f"{a.bundle.name} unpacked in {extract_s:.1f} s"
    if rt_note:
        env["runtime"] = rt_note
    for k, v in env.items():
        print(f"# {k}: {v}", flush=True)

    ort = None
    if not a.no_ort:
        try:
            import onnxruntime as ort

            if hasattr(ort, "preload_dlls"):
                try:
                    ort.preload_dlls()  # cuDNN/cuBLAS from the nvidia-* wheels, where present
                except Exception:  # noqa: BLE001
                    pass
        except ImportError as e:
            print(f"# ONNX Runtime baselines off: {e}")
    workers: dict[str, Worker] = {}
    if has_gpu and not a.no_torch:
        budgets = {"eager": float("inf"), "max-autotune-no-cudagraphs": a.compile_budget, "reduce-overhead": a.compile_budget}
        for mode in a.torch_modes:
            workers[mode] = Worker(mode, bundle, budgets[mode], out / f"torch-{mode}.log")

    rows, groups, failed = [], [], 0
    for model in meta["models"]:
        for batch in meta["models"][model].get("batches", [1]):
            es = [e for e in meta["entries"] if e["model"] == model and batch in e.get("batches", [e.get("batch", 1)])
                  and not (a.only and not any(s in e["label"] for s in a.only))]
            if es:
                groups.append((model, batch, es))
    # the big models first: a deadline reached leaves out the small ones' timing
    groups.sort(key=lambda g: (-meta["models"][g[0]].get("onnx_bytes", 0), g[1]))
    baselines: dict[str, dict] = {}
    ort_cache: dict = {}
    for model, batch, es in groups:
        minfo = meta["models"][model]
        data = np.load(bundle / minfo["data"][str(batch)] if isinstance(minfo["data"], dict) else bundle / minfo["data"])
        x = data[f"in:{minfo['input']}"]
        contenders, t_group = {}, time.perf_counter()
        for e in es:
            row = {k: e.get(k) for k in ("label", "model", "precision", "target")} | {"batch": batch}
            if e.get("dynamic"):  # a dynamic-batch artifact: a row for each batch it runs at
                row["label"] = f"{e['label']}@{batch}"
            rows.append(row)
            try:
                lib, man = _artifact_ok(e, bundle)
                cuda = man["target"]["family"] == "cuda"
                if cuda:
                    code = {c["arch"] for c in man["target"].get("gpu_code", []) if c["kind"] == "cubin"}
                    if not has_gpu:
                        if tvm_ffi.get_global_func("ffi.Module.load_from_bytes.cuda", allow_missing=True) is None:
                            row["status"] = "sha256 ok; not loaded (no CUDA runtime here: libcuda.so.1 missing)"
                        else:
                            tvm.runtime.load_module(str(lib))  # the host part and the cubin loader, at least
                            row["status"] = "loaded; not run (no GPU here)"
                        print(f"{row['label']}: {row['status']}", flush=True)
                        continue
                    if sm not in code:
                        raise RuntimeError(f"artifact has GPU code for {sorted(code)}, this GPU is {sm}")
                dev = gpu if cuda else tvm.cpu(0)
                vm = VirtualMachine(tvm.runtime.load_module(str(lib)), dev)
                spec = man["model"]["inputs"][0]
                if (len(x.shape) != len(spec["shape"]) or np.dtype(spec["dtype"]) != x.dtype
                        or any(isinstance(d, int) and d != n for d, n in zip(spec["shape"], x.shape))):
                    raise RuntimeError(f"input {x.dtype}{list(x.shape)} != artifact's {spec['dtype']}{spec['shape']}")
                t0 = time.perf_counter()
                outs = _flatten(vm["main"](tvm.runtime.tensor(x, dev)))
                row["first_call_ms"] = (time.perf_counter() - t0) * 1e3
                errs = {name: compare(o, data[f"ref:{name}"], e["precision"]) for o, name in zip(outs, minfo["outputs"])}
                row["ok"] = all(v["ok"] for v in errs.values()) and len(outs) == len(minfo["outputs"])
                row["max_abs"] = max(v["max_abs"] for v in errs.values())
                row["max_rel"] = max(v["max_rel"] for v in errs.values())
                row["cos"] = min(v["cos"] for v in errs.values())
                f, xd = vm["main"], tvm.runtime.tensor(x, dev)
                row["tvm_host_ms"] = time_calls(lambda: _flatten(f(tvm.runtime.tensor(x, dev))), dev.sync,
                                                5, 500, a.budget, warmup=2)["median_ms"]
                if cuda:
                    contenders[row["label"]] = _timed(lambda f=f, xd=xd: f(xd), dev.sync)
                else:  # the CPU control: not in the GPU turns
                    row["tvm_ms"] = row["tvm_host_ms"]
                if not row["ok"]:
                    failed += 1
            except Exception as exc:  # noqa: BLE001 - report and go on with the others
                failed += 1
                row["ok"] = False
                msg = str(exc).strip()
                row["error"] = f"{type(exc).__name__}: {msg.splitlines()[-1][:400] if msg else ''}"
                traceback.print_exc()
        if not has_gpu:
            continue
        key = f"{model}-b{batch}"
        base = baselines[key] = {"model": model, "batch": batch}
        left = a.deadline - (time.perf_counter() - t_start)
        if left < 15:
            base["skipped"] = f"the {a.deadline:.0f} s deadline was reached before timing"
            contenders.clear()
        else:
            if ort is not None:
                try:
                    if ort_cache.get("model") != model:
                        ort_cache.clear()  # one model's sessions at a time (BERT-base: 340 MB each)
                        ort_cache.update(_ort_sessions(ort, refill_onnx(bundle / minfo["onnx"])), model=model)
                    if "cuda" in ort_cache:
                        go, y = _ort_cuda(ort, ort_cache["cuda"], minfo, x)
                        contenders["ort_cuda"] = _timed(go, lambda: None)
                        if not minfo.get("stripped"):
                            base["ort_cuda_err"] = compare(y, data[f"ref:{minfo['outputs'][0]}"], "fp32")
                    else:
                        base["ort_cuda_error"] = ort_cache["cuda_error"]
                    sess, feed = ort_cache["cpu"], {minfo["input"]: x}
                    base["ort_cpu_ms"] = time_calls(lambda: sess.run(None, feed), lambda: None, 3, 200, a.budget,
                                                    warmup=1)["median_ms"]
                except Exception as exc:  # noqa: BLE001
                    base["ort_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            loaded = load_all(workers, model, batch, a.deadline - (time.perf_counter() - t_start) - 10)
            for mode, w in workers.items():
                res = loaded[mode]
                if res.get("ok"):
                    base[f"{mode}_load_s"] = res["load_s"]
                    if res.get("err"):
                        base[f"{mode}_err"] = res["err"]
                    contenders[mode] = (lambda n, w=w: _worker_turn(w, n))
                else:
                    base[f"{mode}_error"] = res.get("error")
            timed = _turns(contenders, a.turns, a.turn_ms / 1e3)
            group_rows = {r["label"]: r for r in rows if r["model"] == model and r["batch"] == batch}
            for k, v in timed.items():
                if k in group_rows:
                    r = group_rows[k]
                    r["tvm_ms"] = v.get("ms")
                    if "error" in v:
                        r["timing_error"] = v["error"]
                else:
                    base[f"{k}_ms"] = v.get("ms")
                    if "error" in v:
                        base[f"{k}_error"] = v["error"]
        base["seconds"] = round(time.perf_counter() - t_group, 1)
        for r in rows:
            if r["model"] == model and r["batch"] == batch:
                print(_line(r, base), flush=True)
    for w in workers.values():
        w.close()
    env["gpu_seconds"] = f"{time.perf_counter() - t_start:.0f} s for the whole run (unpacking included)"
    text = report(env, meta, rows, baselines, a)
    print()
    print(text)
    (out / "gpu_check.txt").write_text(text + "\n")
    about = {k: meta[k] for k in ("created", "deploy", "tvm", "target", "tolerances", "models") if k in meta}
    (out / "gpu_check.json").write_text(json.dumps({"env": env, "bundle": about, "rows": rows,
                                                     "baselines": baselines}, indent=1, default=str))
    print(f"\n{len(rows)} artifacts, {failed} failed, {time.perf_counter() - t_start:.0f} s; wrote {out / 'gpu_check.txt'}")
    if failed:
        return 1
    if any("tvm_ms" not in r for r in rows):
        print("no GPU visible here: the CUDA artifacts were loaded, not run (exit code 2)")
        return 2
    return 0


def _worker_turn(w: Worker, n: int) -> float:
    res = w.ask({"op": "turn", "n": n}, 120)
    if not res.get("ok"):
        raise RuntimeError(res.get("error"))
    return res["s"]


def _fmt(v, spec=".3f", none="-"):
    return none if v is None else format(v, spec)


BASE_COLS = [("eager", "torch eager fp16"), ("max-autotune-no-cudagraphs", "torch.compile max-autotune-no-cudagraphs fp16"),
             ("reduce-overhead", "torch.compile reduce-overhead fp16"), ("ort_cuda", "ONNX Runtime CUDA provider fp32")]


def _line(r: dict, base: dict) -> str:
    if "error" in r:
        return f"{r['label']}: FAILED {r['error']}"
    if "max_abs" not in r:
        return f"{r['label']}: {r.get('status', '?')}"
    vs = ", ".join(f"{k} {_fmt(base.get(f'{k}_ms'))}" for k, _ in BASE_COLS)
    return (f"{r['label']}: {'ok' if r['ok'] else 'MISMATCH'} max_abs {r['max_abs']:.2e} cos {r['cos']:.6f}; "
            f"tvm {_fmt(r.get('tvm_ms'))} ms (host call {_fmt(r.get('tvm_host_ms'))}); {vs} ms  [{base.get('seconds')} s]")


def report(env: dict, meta: dict, rows: list[dict], baselines: dict, a) -> str:
    lines = ["# deploy CUDA artifacts on a GPU: scripts/gpu_check.py", ""]
    lines += [f"{k:<11} {v}" for k, v in env.items()]
    lines += ["", "Models:"] + [f"  {k:<13} {v['about']}" for k, v in meta["models"].items()]
    if meta.get("weights") == "compressible":
        lines += ["  (weights: each big initializer repeats one seeded random block (compressible bundle); the",
                  "   reference outputs are ONNX Runtime's with exactly those weights; torch keeps its own init)"]
    lines += ["", "Accuracy: the artifact on the device vs ONNX Runtime (CPU, on the build machine), same input.",
              "  fp32: |d| <= 1e-4 + 1e-3|ref| element-wise; fp16: max|d| <= 1e-3 + 2e-2 max|ref| and cosine >= 0.999.",
              f"Speed, median ms per call over {a.turns} alternating turns (each contender ~{a.turn_ms:.0f} ms a turn, "
              "input on the GPU,", "  synchronized at the end of each turn); host = numpy in -> run -> numpy out.",
              "  Ratios: tvm / baseline (below 1: the artifact is faster). Baselines: " +
              "; ".join(f"{k} = {v}" for k, v in BASE_COLS) + " (TF32 off).", ""]
    short = {"eager": "eager", "max-autotune-no-cudagraphs": "max-aut", "reduce-overhead": "red-ovh", "ort_cuda": "ort-cuda"}
    hdr = (f"{'artifact':<40} {'result':<9} {'max abs':>9} {'cosine':>9} {'tvm':>8} {'host':>8} "
           + " ".join(f"{'/' + short[k]:>9}" for k, _ in BASE_COLS))
    lines += [hdr, "-" * len(hdr)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['label']:<40} FAILED    {r['error']}")
            continue
        if "max_abs" not in r:
            lines.append(f"{r['label']:<40} {r.get('status', '?')}")
            continue
        base = baselines.get(f"{r['model']}-b{r['batch']}", {})
        gpu_row = r.get("target", "").startswith(("cuda", "jetson"))
        ratios = []
        for k, _ in BASE_COLS:
            b = base.get(f"{k}_ms")
            ratios.append(f"{r['tvm_ms'] / b:.2f}x" if gpu_row and b and r.get("tvm_ms") else "-")
        lines.append(f"{r['label']:<40} {'ok' if r['ok'] else 'MISMATCH':<9} {r['max_abs']:>9.2e} {r['cos']:>9.6f} "
                     f"{_fmt(r.get('tvm_ms')):>8} {_fmt(r.get('tvm_host_ms')):>8} " + " ".join(f"{v:>9}" for v in ratios))
    if baselines:
        lines += ["", "Baselines, median ms per call (compile/load seconds in brackets):"]
        hdr = f"{'model':<14} {'batch':>5} " + " ".join(f"{short[k]:>16}" for k, _ in BASE_COLS) + f" {'ort-cpu':>9}"
        lines += [hdr, "-" * len(hdr)]
        notes = []
        for key, b in baselines.items():
            cells = []
            for k, _ in BASE_COLS:
                ms, load = b.get(f"{k}_ms"), b.get(f"{k}_load_s")
                cells.append(f"{_fmt(ms)}" + (f" [{load:.0f}s]" if load is not None else "") if ms else
                             ("skipped" if "skipped" in str(b.get(f"{k}_error", "")) else "-"))
            lines.append(f"{b['model']:<14} {b['batch']:>5} " + " ".join(f"{c:>16}" for c in cells)
                         + f" {_fmt(b.get('ort_cpu_ms')):>9}")
            for k in sorted(b):
                if k.endswith("_error") or k == "skipped":
                    notes.append(f"  {key}: {k}: {b[k]}")
                elif k.endswith("_err"):
                    e = b[k]
                    notes.append(f"  {key}: {k[:-4]} vs the ORT reference: max abs {e['max_abs']:.2e}, cosine "
                                 f"{e['cos']:.6f} ({'ok' if e['ok'] else 'outside tolerance'})")
        if notes:
            lines += ["", "Baselines' notes:"] + notes
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="export, compile and compute references (needs deploy)")
    p.add_argument("outdir", type=Path)
    p.add_argument("--target", default="cuda-sm90")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--fp16", nargs="*", default=DEFAULT_FP16, help="models also built with --precision fp16")
    p.add_argument("--batches", nargs="+", type=int, default=DEFAULT_BATCHES,
                   help="batch sizes (models with a static batch get theirs only)")
    p.add_argument("--weights", choices=["compressible", "real"], default="compressible",
                   help="compressible: big initializers refilled with a repeated seeded block (the bundle packs small);"
                        " real: the exported weights (the ONNX in the bundle stripped)")
    p.add_argument("--runtime", default=None, help="carry TVM's runtime as rt/: 'auto' (made from this TVM, the CUDA "
                   "toolkit's libcudart and apache-tvm-ffi for --python) or a folder with tvm/ and site/")
    p.add_argument("--python", default="3.12", help="the GPU machine's Python, for --runtime auto [3.12]")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="also one artifact per model and precision with a dynamic batch dim (--dim batch=MIN..MAX)")
    p.add_argument("--xz-preset", type=int, default=6)
    p.add_argument("--max-bytes", type=int, default=MAX_CARRY, help="refuse a packed bundle above this [64 MiB]")
    p.add_argument("--tile-min-bytes", type=int, default=1 << 20,
                   help="compressible weights for ONNX files above this size [1 MiB]")
    p.add_argument("--no-cpu-control", dest="cpu_control", action="store_false")
    p.add_argument("--work", type=Path, default=Path("/tmp/gpu-check-work"))
    p.add_argument("--force", action="store_true")
    r = sub.add_parser("run", help="run the bundle (a folder or its .tar.xz) on this machine's GPU (TVM runtime only)")
    r.add_argument("bundle", type=Path)
    r.add_argument("--out", type=Path, default=None, help="where gpu_check.txt/json go [$OUT or .]")
    r.add_argument("--extract-to", type=Path, default=None, help="where a .tar.xz is unpacked [$TMPDIR/gpu-check-bundle]")
    r.add_argument("--only", nargs="*", default=None, help="labels containing any of these")
    r.add_argument("--turns", type=int, default=9, help="alternating timing turns")
    r.add_argument("--turn-ms", type=float, default=25.0, help="about how long each contender runs a turn")
    r.add_argument("--budget", type=float, default=0.5, help="seconds per wall-clock timing loop (host call, ORT CPU)")
    r.add_argument("--deadline", type=float, default=450.0, help="no new timing after this many seconds")
    r.add_argument("--compile-budget", type=float, default=100.0,
                   help="seconds each torch.compile mode may spend compiling, all models together")
    r.add_argument("--torch-modes", nargs="*", default=list(TORCH_MODES), choices=list(TORCH_MODES))
    r.add_argument("--no-torch", action="store_true")
    r.add_argument("--no-ort", action="store_true")
    r.add_argument("--full-tvm", dest="runtime_only", action="store_false",
                   help="do not set TVM_USE_RUNTIME_LIB=1 (with a full TVM install)")
    w = sub.add_parser("torch-worker", help=argparse.SUPPRESS)
    w.add_argument("bundle", type=Path)
    w.add_argument("--mode", choices=list(TORCH_MODES), required=True)
    w.add_argument("--device", default="cuda")
    a = ap.parse_args()
    if a.cmd == "prepare":
        return prepare(a)
    if a.cmd == "torch-worker":
        return torch_worker(a)
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
