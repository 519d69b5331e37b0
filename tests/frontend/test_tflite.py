""".tflite models through TVM's TFLite frontend (frontend/tflite.py), checked against LiteRT as
ONNX models are against ONNX Runtime: a float CNN, the same CNN with full-integer int8
quantization (per-channel weights) and a small audio model (conv1d -> LSTM over frames), made by
scripts/make_tflite_models.py; x86-64 here and rpi4 under qemu-user; `deploy inspect` and the
refusal of ops the frontend lacks, all listed at once; what does not apply to a .tflite refused."""

from pathlib import Path

import numpy as np
import pytest

from conftest import needs_module

needs_module("tflite")
needs_module("ai_edge_litert")

import pipeline  # noqa: E402
from pipeline.run.check import TOLERANCES, compare_output  # noqa: E402
from pipeline.errors import DeployError  # noqa: E402
from pipeline.frontend.tflite import litert_outputs  # noqa: E402
from pipeline.run.runtime import random_inputs  # noqa: E402

DATA = Path(__file__).parents[1] / "data" / "tflite"
MODELS = {"cnn_float": "fp32", "cnn_int8": "int8", "audio_lstm": "fp32"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each test model compiled once for x86-64 (the compile's own check against LiteRT included)."""
    root = tmp_path_factory.mktemp("tflite")
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = pipeline.compile(DATA / f"{name}.tflite", "x86-64", output=root / name)
        return cache[name]

    return get


def assert_matches_litert(art, model: Path, precision: str, seed: int = 1):
    x = random_inputs(art.inputs, seed=seed)
    ours, ref = art(x), litert_outputs(model, x)
    assert set(ours) == set(ref) and ref
    for k in ref:
        r = compare_output(ours[k], ref[k], TOLERANCES[precision], same_dtype=True)
        assert r["ok"], (k, r)
    return ours, ref


@pytest.mark.parametrize("name", ["cnn_float", "cnn_int8",
                                  # its LSTM unrolled into ~150 small ops: a minute of compile on 2 cores
                                  pytest.param("audio_lstm", marks=pytest.mark.slow)])
def test_tflite_compiles_for_x86_and_matches_litert(built, name):
    art = built(name)
    m = art.manifest
    assert m["model"]["format"] == "tflite" and m["model"]["file"] == f"{name}.tflite"
    assert m["check"]["status"] == "passed", m["check"]
    assert (m["precision"].get("check") == "int8") == (MODELS[name] == "int8")
    ours, ref = assert_matches_litert(art, DATA / f"{name}.tflite", MODELS[name])
    if MODELS[name] == "fp32":  # the float models to float32's own tolerance, not int8's
        for k in ref:
            np.testing.assert_allclose(ours[k], ref[k], atol=1e-4, rtol=1e-3)


def test_int8_tflite_is_within_the_int8_tolerance_and_really_quantized(built):
    """The int8 model computes within check.py's int8 tolerance of LiteRT's int8 kernels, and it is
    really int8: its outputs are not those of the float model (the quantization error shows)."""
    q, f = built("cnn_int8"), built("cnn_float")
    x = random_inputs(q.inputs, seed=3)
    oq, of = q(x), f(x)
    ref = litert_outputs(DATA / "cnn_int8.tflite", x)
    (k,) = ref
    assert compare_output(oq[k], ref[k], TOLERANCES["int8"])["ok"]
    assert np.abs(oq[k] - of[k]).max() > 1e-6  # quantized: not the float network's numbers
    # softmax quantized to int8 on the way out: multiples of its output scale (1/256)
    np.testing.assert_allclose(oq[k] * 256, np.round(oq[k] * 256), atol=1e-3)


def test_verify_cli_uses_litert(built, cli):
    art = built("cnn_float")
    rc, out, err = cli("verify", art.path, "--model", DATA / "cnn_float.tflite")
    assert rc == 0, out + err
    assert "StatefulPartitionedCall_1:0" in out


def test_rpi4_builds_and_verifies_under_qemu(tmp_path):
    import shutil

    if not shutil.which("qemu-aarch64-static") and not shutil.which("qemu-aarch64"):
        pytest.skip("not set up: qemu-user (scripts/setup.sh installs qemu-user-static)")
    model = DATA / "cnn_int8.tflite"
    art = pipeline.compile(model, "rpi4", output=tmp_path / "rpi4", check=True)  # the check runs it under qemu
    assert art.manifest["check"]["status"] == "passed", art.manifest["check"]
    assert art.manifest["target"]["arch"] == "aarch64"
    x = random_inputs(art.inputs, seed=2)
    r = art.run_runner(x)
    ref = litert_outputs(model, x)
    for k in ref:
        assert compare_output(r.outputs[k], ref[k], TOLERANCES["int8"])["ok"]


def test_inspect_lists_the_ops(cli):
    import json

    rc, out, _ = cli("inspect", DATA / "cnn_int8.tflite", "--json")
    assert rc == 0
    info = json.loads(out)
    assert info["format"].startswith("tflite")
    assert info["op_counts"]["CONV_2D"] == 2 and info["op_counts"]["QUANTIZE"] == 1
    assert info["inputs"][0] == {"name": "serving_default_image:0", "dtype": "float32", "shape": [1, 32, 32, 3]}
    assert info["unsupported"] == {}


@pytest.fixture
def without_pool_and_depthwise(monkeypatch):
    """TVM's TFLite converter table without MAX_POOL_2D and DEPTHWISE_CONV_2D (both in the CNN)."""
    from tvm.relax.frontend.tflite import tflite_frontend

    init = tflite_frontend.OperatorConverter.__init__

    def lacking(self, *a, **k):
        init(self, *a, **k)
        for op in ("MAX_POOL_2D", "DEPTHWISE_CONV_2D"):
            self.convert_map.pop(op, None)

    monkeypatch.setattr(tflite_frontend.OperatorConverter, "__init__", lacking)


def test_unsupported_ops_are_listed_at_once_before_compile(without_pool_and_depthwise, cli, tmp_path):
    rc, out, _ = cli("inspect", DATA / "cnn_float.tflite")
    assert rc == 1
    assert "MAX_POOL_2D" in out and "DEPTHWISE_CONV_2D" in out
    with pytest.raises(DeployError) as e:
        pipeline.compile(DATA / "cnn_float.tflite", "x86-64", output=tmp_path / "a")
    assert "MAX_POOL_2D" in e.value.message and "DEPTHWISE_CONV_2D" in e.value.message
    assert "2 op type(s)" in e.value.message
    assert not (tmp_path / "a").exists()


def test_a_real_op_the_frontend_cannot_take_is_refused_by_name(cli, tmp_path):
    """Keras 3's LSTM converted as a WHILE loop: its body SLICEs at the loop counter, which TVM's
    converter reads as a constant (it failed with a raw TypeError); inspect lists it, compile
    refuses it before the import, naming the operators and the subgraph."""
    model = DATA / "lstm_while.tflite"
    rc, out, _ = cli("inspect", model)
    assert rc == 1 and "SLICE with its begin and size computed at run time" in " ".join(out.split())
    with pytest.raises(DeployError) as e:
        pipeline.compile(model, "x86-64", output=tmp_path / "a")
    msg = " ".join(e.value.message.split())
    assert "SLICE with its begin and size computed at run time" in msg and "in subgraph" in msg
    assert "unroll=True" in e.value.hint
    assert not (tmp_path / "a").exists()


def test_what_applies_to_onnx_only_is_refused(tmp_path):
    with pytest.raises(DeployError) as e:
        pipeline.compile(DATA / "cnn_float.tflite", "x86-64", output=tmp_path / "q", precision="int8",
                         random_calibration=True)
    assert "TFLite" in e.value.message and "full-integer" in e.value.hint
    with pytest.raises(DeployError) as e:
        pipeline.compile(DATA / "cnn_float.tflite", "x86-64", output=tmp_path / "d", dims={"N": "1..4"})
    assert "--dim" in e.value.message
    assert not (tmp_path / "q").exists() and not (tmp_path / "d").exists()


def test_a_corrupt_tflite_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes((DATA / "cnn_float.tflite").read_bytes()[:40])
    with pytest.raises(DeployError) as e:
        pipeline.compile(bad, "x86-64", output=tmp_path / "a")
    assert "bad.tflite" in e.value.message


def test_bench_times_litert_as_the_peer(built, cli):
    import json

    art = built("cnn_float")
    rc, out, err = cli("bench", art.path, "--model", DATA / "cnn_float.tflite", "--seconds", "0.5", "--json")
    assert rc == 0, out + err
    r = json.loads(out)
    assert "litert" in r and "onnxruntime" not in r
    assert r["litert"]["samples"] > 0 and r["ratio"] == pytest.approx(r["deploy"]["median_ms"] / r["litert"]["median_ms"])
    assert "LiteRT" in r["ratio_definition"]


@pytest.mark.slow  # two worker processes that import TVM: ~40 s on 2 busy cores
def test_profile_of_a_tflite_artifact_times_its_kernels(built, cli, tmp_path):
    import json

    art = built("cnn_float")
    rc, out, err = cli("profile", art.path, "--model", DATA / "cnn_float.tflite", "--json", "--runs", "3")
    assert rc == 0, out + err
    r = json.loads(out)
    assert r["deploy"]["kernel_calls"] > 0 and r["deploy"]["kernels_ms"] > 0
    assert "onnxruntime" not in r


def test_deploy_build_compiles_and_verifies_a_tflite_entry(cli, tmp_path):
    import json
    import shutil

    shutil.copy(DATA / "cnn_float.tflite", tmp_path / "cnn.tflite")
    (tmp_path / "deploy.toml").write_text(
        '[build]\noutput = "out"\n\n[targets.x86-64]\n\n[models.cnn]\npath = "cnn.tflite"\n')
    rc, out, err = cli("build", tmp_path / "deploy.toml", "--json")
    assert rc == 0, out + err
    (entry,) = json.loads(out)["entries"]
    assert entry["status"] == "built" and entry["verification"]["status"] == "passed", entry  # against LiteRT
    assert entry["verification"]["outputs"]["StatefulPartitionedCall_1:0"]["max_abs"] < 1e-4
    m = json.loads(next((tmp_path / "out").rglob("manifest.json")).read_text())
    assert m["model"]["format"] == "tflite"


def test_input_shape_binds_a_tflite_batch(tmp_path):
    model = DATA / "cnn_float.tflite"
    art = pipeline.compile(model, "x86-64", output=tmp_path / "b2", input_shapes={"serving_default_image:0": [2, 32, 32, 3]})
    assert art.manifest["model"]["inputs"][0]["shape"] == [2, 32, 32, 3]
    assert art.manifest["model"]["outputs"][0]["shape"] == [2, 10]
    assert art.manifest["check"]["status"] == "passed"  # LiteRT resized to the same batch
    x = random_inputs(art.inputs, seed=4)
    (k,) = ref = litert_outputs(model, x)
    assert art(x)[k].shape == (2, 10)
    np.testing.assert_allclose(art(x)[k], ref[k], atol=1e-4, rtol=1e-3)
