"""scripts/gpu_check.py without a GPU: a tiny bundle prepared, packed, unpacked and run (CUDA artifacts
load, nothing runs: exit code 2), the compressible weights, and the 64 MiB refusal."""

import importlib.util
import lzma
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from pipeline.backends.cuda import toolkit as cuda

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """tiny_cnn for cuda-sm90 (fp32) and the x86-64-v3 CPU control, weights made compressible."""
    d = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(SCRIPT), "prepare", str(d / "b"), "--models", "tiny_cnn", "--fp16",
                        "--tile-min-bytes", "0", "--work", str(d / "work")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return d, r.stdout


def test_prepare_packs_and_prints_size(bundle):
    d, stdout = bundle
    packed = d / "b.tar.xz"
    assert packed.is_file()
    assert f"packed {packed}:" in stdout and f"({packed.stat().st_size} bytes" in stdout
    assert packed.stat().st_size < 64 << 20


def test_compressible_weights_keep_shapes_and_match_reference(bundle):
    import onnxruntime as ort

    d, _ = bundle
    orig = {i.name: numpy_helper.to_array(i) for i in onnx.load(ROOT / "examples" / "tiny_cnn.onnx").graph.initializer}
    model = onnx.load(d / "b" / "models" / "tiny_cnn.onnx")
    tiled = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    meta = {p.key: p.value for p in model.metadata_props}
    names = __import__("json").loads(meta["gpu_check.tiled"])["names"]
    assert names == ["w2"]  # the only float initializer with >= 1024 values (32x16x3x3)
    assert {k: (v.shape, v.dtype) for k, v in tiled.items()} == {k: (v.shape, v.dtype) for k, v in orig.items()}
    assert not np.array_equal(tiled["w2"], orig["w2"])
    assert all(np.array_equal(tiled[k], orig[k]) for k in orig if k != "w2")
    assert abs(tiled["w2"].std() - orig["w2"].std()) < 0.1 * orig["w2"].std()
    # the references were computed with exactly these weights
    data = np.load(d / "b" / "data" / "tiny_cnn-b1.npz")
    x = {k[3:]: data[k] for k in data.files if k.startswith("in:")}
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, x)
    np.testing.assert_allclose(y, data["ref:" + sess.get_outputs()[0].name], rtol=1e-5, atol=1e-6)


def test_compressible_weights_compress():
    gc = _load_script()
    w = np.random.default_rng(0).standard_normal((256, 1024)).astype(np.float32)
    model = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 256])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1024])], [numpy_helper.from_array(w, "w")]))
    assert gc.compressible_weights(model) == ["w"]
    t = numpy_helper.to_array(model.graph.initializer[0])
    assert t.shape == w.shape and t.dtype == w.dtype
    assert len(np.unique(t[:, :4], axis=0)) == 256  # rows differ (the block's length is prime)
    assert len(lzma.compress(t.tobytes(), preset=1)) < t.nbytes / 20
    assert len(lzma.compress(t.T.copy().tobytes(), preset=1)) < t.nbytes / 20  # transposed (as a layout pass may)
    assert len(lzma.compress(t.astype(np.float16).tobytes(), preset=1)) < t.nbytes / 40  # cast to fp16


def test_run_without_gpu_loads_and_exits_2(bundle):
    import tvm

    if tvm.cuda(0).exist:
        pytest.skip("a GPU is visible: run would run the artifacts")
    d, _ = bundle
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # run needs TVM's runtime, not deploy
    stub = cuda.driver_stub()
    if stub is not None:  # no driver here: the stand-in libcuda.so.1 lets TVM's CUDA runtime load
        env["LD_PRELOAD"] = str(stub)
    r = subprocess.run([sys.executable, str(d / "b" / "gpu_check.py"), "run", str(d / "b.tar.xz"),
                        "--out", str(d / "out"), "--extract-to", str(d / "x")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    table = (d / "out" / "gpu_check.txt").read_text()
    assert "tiny_cnn-b1-cuda-sm90" in table and "tiny_cnn-b1-x86-64-v3" in table
    want = "loaded; not run (no GPU here)" if stub is not None or cuda.prepare_driver() == "driver" else "not loaded"
    assert "tiny_cnn-b1-cuda-sm90" in r.stdout and want in table
    cpu_row = next(ln for ln in table.splitlines() if ln.startswith("tiny_cnn-b1-x86-64-v3"))
    assert cpu_row.split()[1] == "ok"  # the CPU control ran and matched the reference
    assert (d / "x" / "b" / "artifacts").is_dir()  # unpacked from the .tar.xz


def test_run_refuses_a_library_that_does_not_match_its_sha256(bundle, tmp_path):
    import shutil

    d, _ = bundle
    b = tmp_path / "b"
    shutil.copytree(d / "b", b)
    lib = next((b / "artifacts" / "tiny_cnn-b1-x86-64-v3").glob("*.so"))
    lib.write_bytes(lib.read_bytes() + b"\0")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    stub = cuda.driver_stub()
    if stub is not None:
        env["LD_PRELOAD"] = str(stub)
    r = subprocess.run([sys.executable, str(b / "gpu_check.py"), "run", str(b), "--out", str(tmp_path / "out"),
                        "--only", "x86-64-v3"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1
    assert "does not match its manifest's sha256" in (tmp_path / "out" / "gpu_check.txt").read_text()


def test_prepare_refuses_a_bundle_over_the_limit(tmp_path, capsys):
    gc = _load_script()
    out = tmp_path / "b"
    out.mkdir()
    (out / "noise.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    assert gc.finish(out, preset=1, limit=1000) == 1
    err = capsys.readouterr().err
    assert "over the" in err and "hint:" in err
    assert not (tmp_path / "b.tar.xz").exists()
    assert gc.finish(out, preset=1, limit=64 << 20) == 0
    assert (tmp_path / "b.tar.xz").is_file()


def test_timing_turns_alternate_and_take_the_median():
    gc = _load_script()
    order, vals = [], {"a": iter([1e-3] + [1e-3, 5e-3, 2e-3]), "b": iter([2e-3] + [4e-3, 3e-3, 9e-3])}

    def make(k):
        def f(n):
            order.append((k, n))
            return next(vals[k])
        return f

    def broken(n):
        raise RuntimeError("worker gone")

    res = gc._turns({"a": make("a"), "b": make("b"), "c": broken}, turns=3, turn_s=0.01)
    # one calibration call each, then a, b, a, b, a, b: n calls a turn sized to about turn_s
    assert order == [("a", 1), ("b", 1)] + [("a", 10), ("b", 5)] * 3
    assert res["a"] == {"ms": 2.0, "calls_per_turn": 10, "turns": 3}
    assert res["b"]["ms"] == 4.0 and res["b"]["calls_per_turn"] == 5
    assert "worker gone" in res["c"]["error"]
