"""int8 depthwise and grouped convolutions (backends/cpu/int8_grouped.py), exact in float32."""

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8_models import int8_at_O2_and_O3


def _grouped_cnn() -> onnx.ModelProto:
    """A 3x3 conv, a 3x3 depthwise conv (stride 2), a 5x5 grouped conv (4 groups): the last two
    have no channel reduction for VNNI."""
    rng = np.random.default_rng(2)

    def w(name, *s):
        return numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), name)

    inits = [w("W1", 16, 3, 3, 3), w("B1", 16), w("W2", 16, 1, 3, 3), w("B2", 16), w("W3", 32, 4, 5, 5), w("B3", 32)]
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], group=16),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "W3", "B3"], ["y"], pads=[2, 2, 2, 2], group=4)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 20, 20])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 10, 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("scheme", ["deploy", "ort-uint8"])
def test_int8_grouped_convs_compute_exactly_in_float32(tmp_path, scheme):
    """On x86, int8 depthwise and grouped convs (no channel reduction for VNNI; a 32-bit multiply
    per tap on the int32 path) compute in float32, which is exact for int8 operands: the -O 3
    build (that stage) returns what the -O 2 build (int32 compute) does, with a zero point too."""
    from pipeline.run.runtime import random_inputs

    onnx.save(_grouped_cnn(), tmp_path / "m.onnx")
    arts = int8_at_O2_and_O3(tmp_path, (1, 3, 20, 20), scheme)
    ir = next((tmp_path / "ir3").glob("*int8-grouped-float.py")).read_text()
    # one kernel each, reading the integer activations and casting them itself
    assert len(re.findall(r"R\.call_tir\(cls\.conv2d_(u?int8|int16)_as_float\d", ir)) == 2, ir
    for seed in range(3):
        x = random_inputs(arts[2].inputs, seed=seed)
        a, b = arts[3].run(x)["y"], arts[2].run(x)["y"]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
