"""Models and helpers the int8 tests share (quantize/, backends/cpu/): small int8 networks, an ONNX
Runtime calibration reader, an int8 compile at -O 2 and -O 3."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipeline.compile import CompileArgs, compile_model
from pipeline.quantize.options import QuantOptions


def ort_reader(samples, inp):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{inp: s} for s in samples[:16]])

        def get_next(self):
            return next(self.it, None)

    return Reader()


def int8_cnn() -> onnx.ModelProto:
    """Convs with 16/32/24 output channels (VNNI tiles, 24 padded to 32), an odd input channel count,
    stride 2, 1x1."""
    rng = np.random.default_rng(1)

    def w(*s):
        return numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32))

    inits = [w(16, 3, 3, 3), w(16), w(32, 16, 3, 3), w(32), w(24, 32, 1, 1), w(24)]
    for t, n in zip(inits, ["W1", "B1", "W2", "B2", "W3", "B3"]):
        t.name = n
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "W3", "B3"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 20, 20])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 10, 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def int8_mlp() -> onnx.ModelProto:
    """3-D activations through two MatMuls: K = 40 and 20 (not multiples of 16), N = 20 (ragged)."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), n)
             for s, n in (((40, 20), "W1"), ((20,), "B1"), ((20, 16), "W2"))]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["m1"]), helper.make_node("Add", ["m1", "B1"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["r1"]), helper.make_node("MatMul", ["r1", "W2"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 40])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 16])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def int8_at_O2_and_O3(tmp_path, shape, scheme: str) -> dict:
    """tmp_path/m.onnx compiled to int8 at -O 2 and -O 3 (IR dumped to ir2/, ir3/): calibrated by
    deploy (symmetric int8), or, for ``ort-uint8``, ONNX Runtime's QDQ model with asymmetric uint8
    activations (the convs read int16(x_q) - z)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    cal = np.random.default_rng(0).standard_normal((16, *shape)).astype(np.float32)
    np.savez(tmp_path / "cal.npz", x=cal)
    model, prec, quant = tmp_path / "m.onnx", "int8", QuantOptions(calibration=tmp_path / "cal.npz", speed_check=False)
    if scheme == "ort-uint8":
        model, prec, quant = tmp_path / "qdq.onnx", "fp32", QuantOptions()
        quantize_static(str(tmp_path / "m.onnx"), str(model), ort_reader(cal, "x"), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return {o: compile_model(CompileArgs(model=model, target="x86-64", output=tmp_path / f"O{o}", precision=prec,
                                         quant=quant, opt_level=o, dump_ir=tmp_path / f"ir{o}"), show=False)
            for o in (2, 3)}
