"""The int8 accuracy gate (quantize/accuracy.py): a layer that loses too much falls back to float."""

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper



def _fragile_model():
    """x -> mm1 (8 copies of x plus one channel 500x larger) -> mm2 reads only the small channels.

    Per-tensor activation quantization of mm2's input rounds the informative channels to zero.
    """
    g = np.random.default_rng(0)
    w1 = np.concatenate([np.eye(8), 500 * np.eye(8)[:, :1]], 1).astype(np.float32)  # [8, 9]
    w2 = np.concatenate([g.normal(size=(8, 6)), np.zeros((1, 6))], 0).astype(np.float32)  # [9, 6]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("MatMul", ["h", "w2"], ["logits"], name="mm2")]
    graph = helper.make_graph(nodes, "fragile", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 6])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_accuracy_gate_falls_back_the_fragile_layer(tmp_path, cli):
    onnx.save(_fragile_model(), tmp_path / "f.onnx")
    np.savez(tmp_path / "cal.npz", x=np.random.default_rng(0).normal(size=(40, 1, 8)).astype(np.float32))
    base = ["compile", tmp_path / "f.onnx", "--target", "x86-64", "--quantize", "int8", "--calibration",
            tmp_path / "cal.npz", "--no-speed-check"]
    rc, out, err = cli(*base, "-o", tmp_path / "nogate")
    assert rc == 0, err
    drop = json.loads((tmp_path / "nogate/manifest.json").read_text())["quantization"]["accuracy"]["drop"]
    assert drop > 0.2  # without the gate, int8 breaks the model, and the compile says so loudly
    assert "warning: int8 is far from float32" in out + err and "--max-accuracy-drop 0.01" in out + err
    rc, out, err = cli(*base, "-o", tmp_path / "gate", "--max-accuracy-drop", "0.05")
    assert rc == 0, err
    assert "far from float32" not in out + err
    q = json.loads((tmp_path / "gate/manifest.json").read_text())["quantization"]
    assert q["fallback"] == ["mm2"] and q["quantized_layers"] == ["mm1"]
    assert q["sensitivity"]["mm2"] > q["sensitivity"]["mm1"] and q["accuracy"]["drop"] <= 0.05
