"""1-D convolutions as conv2d (backends/cpu/conv1d.py), in int8."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8_models import int8_at_O2_and_O3


def _conv1d_net() -> onnx.ModelProto:
    """An audio front end: Conv1d 1->16 (k 9, stride 2), Conv1d 16->24 (k 3, dilation 2), a
    depthwise Conv1d, Conv1d 24->8 (k 1)."""
    rng = np.random.default_rng(4)

    def w(name, *s):
        return numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), name)

    inits = [w("W1", 16, 1, 9), w("B1", 16), w("W2", 24, 16, 3), w("B2", 24), w("W3", 24, 1, 3), w("W4", 8, 24, 1)]
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[4, 4], strides=[2]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], pads=[2, 2], dilations=[2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "W3"], ["c3"], pads=[1, 1], group=24),
             helper.make_node("Conv", ["c3", "W4"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 400])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 200])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("scheme", ["deploy", "ort-uint8"])
def test_int8_conv1d_computes_in_int8(tmp_path, scheme):
    """1-D convolutions are quantized and compute in int8: at -O 3 as 2-D convs on the dot-product
    kernels (the depthwise one in exact float32), at -O 2 as int8 conv1d on the int32 path. Both
    match ONNX Runtime's int8 (the built-in check) and each other exactly."""
    from pipeline.backends.cpu.int8_dot import supported
    from pipeline.run.runtime import random_inputs
    from pipeline.targets import get_preset

    onnx.save(_conv1d_net(), tmp_path / "m.onnx")
    arts = int8_at_O2_and_O3(tmp_path, (1, 1, 400), scheme)
    int8 = next((tmp_path / "ir3").glob("*-int8.py")).read_text()
    assert int8.count('R.nn.conv1d(') == 4 and int8.count('out_dtype="int32"') >= 4
    for a in arts.values():
        assert a.manifest["precision"]["compute"] == "int8" and a.manifest["check"]["status"] == "passed"
    if supported(get_preset("x86-64").tvm_target()):  # the zero-point form too
        ir = next((tmp_path / "ir3").glob("*int8-vnni.py")).read_text()
        assert ir.count("R.call_tir(cls.conv2d_nhwc_vnni") == 3
    for seed in range(3):
        x = random_inputs(arts[2].inputs, seed=seed)
        a, b = arts[3].run(x)["y"], arts[2].run(x)["y"]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
