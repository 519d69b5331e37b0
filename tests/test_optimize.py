"""The fp16 stage of optimize.py: builds for CPU, CUDA and ARM, and ops TVM imports as TIR kept in float32."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper



# ---------------------------------------------------------------- fp16


@pytest.mark.parametrize("target", ["cuda-sm86", "rpi4", "x86-64"])
def test_fp16_builds(tmp_path, cli, models, target):
    rc, out, err = cli("compile", models / "cnn.onnx", "--target", target, "-o", tmp_path / "a",
                       "--precision", "fp16", "--no-runner", "--dump-ir", tmp_path / "ir")
    assert rc == 0, err
    ir = next((tmp_path / "ir").glob("*fp16.py")).read_text()
    assert 'R.nn.conv2d(' in ir and 'dtype="float16"' in ir
    assert 'R.nn.softmax(' in ir and ir.count('R.Tensor((1, 10), dtype="float32") = R.nn.softmax') == 1
    assert ("no native float16" in out + err) == (target == "x86-64")
    if target == "x86-64":
        from pipeline.run.runtime import Artifact
        from conftest import assert_matches_ort

        assert_matches_ort(Artifact(tmp_path / "a"), models / "cnn.onnx", atol=2e-3, rtol=2e-2)


def _relu6_reflect_pad_cnn() -> onnx.ModelProto:
    """Conv, Clip(0, 6) (ReLU6, min/max as inputs), reflect Pad, Conv: ops TVM's ONNX frontend emits as TIR."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("w1", rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)), ("b1", rng.normal(0, 0.1, 8).astype(np.float32)),
        ("lo", np.array(0.0, np.float32)), ("hi", np.array(6.0, np.float32)),
        ("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
        ("w2", rng.normal(0, 0.2, (4, 8, 3, 3)).astype(np.float32))]]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),
             helper.make_node("Pad", ["r1", "pads"], ["p1"], mode="reflect"),
             helper.make_node("Conv", ["p1", "w2"], ["c2"]),
             helper.make_node("Clip", ["c2", "lo", "hi"], ["y"])]
    graph = helper.make_graph(nodes, "relu6", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("target", ["cuda-sm90", "x86-64"])
def test_fp16_with_ops_imported_as_tir(tmp_path, cli, target):
    """Reflect Pad becomes call_tir in TVM's ONNX frontend (so did ReLU6 before the importer
    turned constant-bound Clip into relax maximum/minimum); ToMixedPrecision used to crash on a
    call_tir after a float16 conv ("Expected TensorType, but got R.Callable"), so --precision fp16
    failed on MobileNetV2. The TIR op now runs in float32 between casts, ReLU6 in float16."""
    onnx.save(_relu6_reflect_pad_cnn(), tmp_path / "m.onnx")
    rc, out, err = cli("compile", tmp_path / "m.onnx", "--target", target, "-o", tmp_path / "a",
                       "--precision", "fp16", "--dump-ir", tmp_path / "ir")
    assert rc == 0, err
    ir = next((tmp_path / "ir").glob("*fp16.py")).read_text()
    assert "R.call_tir(cls.mirror_pad" in ir and "hidden" not in ir
    assert 'dtype="float16") = R.minimum(' in ir  # ReLU6: relax ops, in the conv's precision
    assert 'dtype="float16") = R.astype(' in ir
    if target == "x86-64":
        from pipeline.run.runtime import Artifact
        from conftest import assert_matches_ort

        assert_matches_ort(Artifact(tmp_path / "a"), tmp_path / "m.onnx", atol=2e-2, rtol=2e-2)
