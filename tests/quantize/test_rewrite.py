"""The int8 rewrite (quantize/rewrite.py) on convolutions whose padding clean-up made explicit."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper



def _auto_pad_convs() -> onnx.ModelProto:
    """Convs with auto_pad, as TensorFlow and HF EfficientNet exports write them: SAME_UPPER 3x3,
    SAME_UPPER 3x3 stride 2 on an even size (the odd total pad goes at the end), SAME_LOWER stride 2
    (at the start), a depthwise SAME_UPPER 5x5, VALID 1x1."""
    rng = np.random.default_rng(5)

    def w(name, *s):
        return numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), name)

    inits = [w("W1", 8, 3, 3, 3), w("W2", 16, 8, 3, 3), w("W3", 16, 16, 3, 3), w("W4", 16, 1, 5, 5), w("W5", 8, 16, 1, 1)]
    nodes = [helper.make_node("Conv", ["x", "W1"], ["c1"], auto_pad="SAME_UPPER"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2"], ["c2"], auto_pad="SAME_UPPER", strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "W3"], ["c3"], auto_pad="SAME_LOWER", strides=[2, 2]),
             helper.make_node("Conv", ["c3", "W4"], ["c4"], auto_pad="SAME_UPPER", group=16),
             helper.make_node("Conv", ["c4", "W5"], ["y"], auto_pad="VALID")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 20, 20])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 5, 5])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_auto_pad_convs_compute_in_int8(tmp_path, cli):
    """auto_pad becomes the explicit pads it stands for at clean-up: float32 matches ONNX Runtime
    and every conv takes the int8 road (TVM's importer put a separate pad between the dequantize
    and the conv, and 76 of EfficientNet-B0's 81 convs stayed float)."""
    from conftest import assert_matches_ort
    from pipeline.run.runtime import Artifact

    onnx.save(_auto_pad_convs(), tmp_path / "m.onnx")
    rc, out, err = cli("compile", tmp_path / "m.onnx", "--target", "x86-64", "-o", tmp_path / "f")
    assert rc == 0, err
    assert_matches_ort(Artifact(tmp_path / "f"), tmp_path / "m.onnx")
    rc, out, err = cli("compile", tmp_path / "m.onnx", "--target", "x86-64", "-o", tmp_path / "q", "--quantize", "int8",
                       "--random-calibration", "--no-speed-check")
    assert rc == 0, err
    assert "int8 compute: 5 conv, 0 matmul" in out + err and "left in float" not in out + err
