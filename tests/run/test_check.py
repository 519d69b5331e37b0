"""The built-in check: every compile that can run its artifact here compares it with ONNX Runtime
before moving it into place."""

import numpy as np
import pytest

import pipeline
from pipeline import DeployError
from pipeline.run.check import TOLERANCES, compare_output
from pipeline.run.runtime import Artifact


def test_a_wrong_answer_fails_the_compile_and_writes_nothing(models, tmp_path, monkeypatch):
    real = Artifact.run

    def off_by_a_little(self, inputs=None):
        return {k: v + np.float32(0.01) for k, v in real(self, inputs).items()}

    monkeypatch.setattr(Artifact, "run", off_by_a_little)
    with pytest.raises(DeployError, match=r"differ from ONNX Runtime's[\s\S]*probs: max abs error 0\.01") as e:
        pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path / "a")
    assert "--no-check" in e.value.hint and "--opt-level 2" in e.value.hint
    assert list(tmp_path.iterdir()) == []  # the temp dir is gone, nothing at the output path
    art = pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path / "b", check=False)
    assert art.manifest["check"] == {"status": "skipped", "reason": "--no-check"}


def test_the_check_skips_only_where_onnx_runtime_cannot_run_the_model(models, tmp_path, monkeypatch):
    """deploy's own failure while checking (the artifact crashing here) fails the compile; only
    ONNX Runtime refusing the model skips the check, and says so."""
    def crashes(self, inputs=None):
        raise RuntimeError("simulated crash in TVM's runtime")

    monkeypatch.setattr(Artifact, "run", crashes)
    with pytest.raises(DeployError, match="the artifact failed to run: RuntimeError: simulated crash"):
        pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path / "a")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    from pipeline.run import reference

    def ort_refuses(model, *a, **k):
        raise DeployError("ONNX Runtime cannot load the model: simulated")

    monkeypatch.setattr(reference, "ort_session", ort_refuses)
    art = pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path / "b")
    assert art.manifest["check"]["status"] == "skipped"
    assert art.manifest["check"]["reason"].startswith("ONNX Runtime cannot run this model")


def test_the_check_is_recorded_and_takes_the_users_inputs(models, tmp_path):
    art = pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path / "a")
    c = art.manifest["check"]
    assert c["status"] == "passed" and c["inputs"] == "random, seed 0" and c["outputs"]["probs"]["max_abs"] < 1e-5
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "in.npz", image=x)
    art = pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path / "b", check_inputs=tmp_path / "in.npz")
    assert art.manifest["check"]["inputs"].startswith("--check-inputs")
    np.savez(tmp_path / "bad.npz", image=x[:, :2])
    with pytest.raises(DeployError, match="input 'image' has shape"):
        pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path / "c", check_inputs=tmp_path / "bad.npz")


def test_cross_and_gpu_artifacts_say_why_they_were_not_checked(models, tmp_path):
    art = pipeline.compile(models / "cnn.onnx", "rpi4", output=tmp_path / "arm")
    assert art.manifest["check"]["status"] == "skipped" and "--check runs it" in art.manifest["check"]["reason"]
    art = pipeline.compile(models / "cnn.onnx", "rpi4", output=tmp_path / "arm2", check=True)  # under qemu
    assert art.manifest["check"]["status"] == "passed"
    with pytest.raises(DeployError, match="--check: a cuda artifact for cuda-sm86 cannot run on this machine"):
        pipeline.compile(models / "cnn.onnx", "cuda-sm86", output=tmp_path / "gpu", check=True)


def test_int8_is_checked_against_the_qdq_model(models, tmp_path):
    art = pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path / "a", precision="int8",
                           random_calibration=True, speed_check=False)
    c = art.manifest["check"]
    assert c["status"] == "passed" and "cosine" in c["tolerance"] and c["outputs"]["probs"]["cosine"] > 0.98


def test_compare_output_rules():
    fp32 = TOLERANCES["fp32"]
    r = np.array([1.0, -2.0, 100.0], np.float32)
    assert compare_output(r + 0.05, r, fp32)["ok"]            # within 1e-3 of max|ref| = 0.1
    assert not compare_output(r + 0.2, r, fp32)["ok"]
    assert not compare_output(r[:2], r, fp32)["ok"]           # shape
    nan = np.array([np.nan, 1.0], np.float32)
    assert compare_output(nan, nan, fp32)["ok"]               # NaN where ORT has NaN
    assert not compare_output(np.array([0.0, 1.0], np.float32), nan, fp32)["ok"]  # ReLU(NaN) = 0 is wrong
    assert not compare_output(np.array([1, 2, 3]), np.array([1, 2, 4]), fp32)["ok"]  # ints: exact in fp32
    assert not compare_output(r.astype(np.float64), r, fp32, same_dtype=True)["ok"]  # the type is part of the answer
    i8 = TOLERANCES["int8"]
    assert not compare_output(-r, r, i8)["ok"]                # cosine -1


def test_int8_off_ort_by_rounding_passes_when_as_close_to_float():
    """Two int8 executions of one QDQ model round differently, and a sensitive network amplifies
    it: an output off ONNX Runtime's int8 one passes if it is as close to the float model's, and
    fails, saying both distances, if it is further."""
    import onnx
    from onnx import TensorProto, helper

    from pipeline.run.check import TOLERANCES, _as_close_to_float, close_enough
    from pipeline.run.reference import ort_session

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])])
    float_model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    float_model.ir_version = 8
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 64)).astype(np.float32)
    ort_int8 = x + 0.3 * rng.standard_normal(x.shape).astype(np.float32)
    for scale, ok in ((0.3, True), (1.0, False)):
        ours = x + scale * rng.standard_normal(x.shape).astype(np.float32)
        res = compare_output(ours, ort_int8, TOLERANCES["int8"])
        assert not res["ok"]  # off ONNX Runtime's int8 output beyond the tolerance
        res = _as_close_to_float(res, ours, ort_int8, ort_session(float_model), "y", {"x": x})
        assert res["ok"] is ok, res
        if ok:
            v = res["vs_float32"]
            assert close_enough(v["cosine"], v["onnxruntime_int8_cosine"], v["max_abs"], v["onnxruntime_int8_max_abs"])
        else:
            assert "against float32: cosine" in res["why"]
    assert close_enough(0.9785, 0.9822, 0.17, 0.15) and close_enough(0.9995, 0.9990, 0.1, 0.1)
    assert not close_enough(0.96, 0.9822, 0.1, 0.1) and not close_enough(0.9990, 0.9990, 0.2, 0.1)


def test_int8_output_off_onnx_runtime_passes_where_it_is_what_onnx_defines():
    """ONNX Runtime's u8 x s8 kernels on CPUs without VNNI overflow 16-bit pair sums with
    full-range int8 weights: an int8 output off ORT's is judged again against ONNX's reference
    implementation (an opset-17 QDQ model is converted to run there) and passes where it matches."""
    from onnx import TensorProto, helper, numpy_helper

    from pipeline.run.check import _as_onnx_defines, onnx_reference_outputs

    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (8, 4)).astype(np.int8)
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws"], ["wd"]),
             helper.make_node("MatMul", ["xd", "wd"], ["y"])]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.float32(0.02), "ws"),
             numpy_helper.from_array(np.float32(0.05), "xs"), numpy_helper.from_array(np.uint8(128), "xz")]
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((1, 8)).astype(np.float32)
    exact = onnx_reference_outputs(model, {"x": x})["y"]
    xq = np.clip(np.round(x / 0.05) + 128, 0, 255)
    np.testing.assert_allclose(exact, ((xq - 128) * 0.05) @ (w.astype(np.float32) * 0.02), rtol=1e-5, atol=1e-6)
    tol = TOLERANCES["int8"]
    ort_off = exact + np.float32(5.0)  # what an overflowing ORT kernel might return
    failed = compare_output(exact, ort_off, tol)
    assert not failed["ok"]
    res = _as_onnx_defines(failed, exact, exact, tol)
    assert res["ok"] and "ONNX's reference implementation" in res["note"] and res["vs_onnxruntime"]["max_abs"] == pytest.approx(5.0)
    assert not _as_onnx_defines(failed, exact + 1.0, exact, tol)["ok"]  # off both: still a failure
    assert _as_onnx_defines(failed, exact, None, tol) is failed  # no reference: the first verdict stands


def test_an_empty_input_runs_and_matches_onnx_runtime(tmp_path):
    """A zero-size input (ReduceMax over an empty axis) is passed to the kernels as a compact
    tensor: the staged CPU call path once handed TVM a view with zero strides, which it refused."""
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        [helper.make_node("ReduceMax", ["x", "axes"], ["y"], keepdims=1)], "empty",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 0, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1, 4])],
        [numpy_helper.from_array(np.array([1], np.int64), "axes")])
    path = tmp_path / "empty.onnx"
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    art = pipeline.compile(path, "x86-64", output=tmp_path / "art")
    assert art.manifest["check"]["status"] == "passed"
    y = Artifact(tmp_path / "art").run({"x": np.zeros((2, 0, 4), np.float32)})["y"]
    assert y.shape == (2, 1, 4) and np.all(y == -np.inf)
