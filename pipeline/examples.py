"""Small ONNX models built with onnx.helper: the bundled example and test models."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr), name)


def tiny_cnn(batch: int | str = 1, classes: int = 10, seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    """Conv-BN-ReLU x2, max pool, global average pool, Gemm, Softmax on 1x3x32x32 images."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    inits = [
        _init("w1", rng.normal(0, 0.2, (16, 3, 3, 3)).astype(f32)), _init("b1", rng.normal(0, 0.1, 16).astype(f32)),
        _init("g1", rng.uniform(0.5, 1.5, 16).astype(f32)), _init("be1", rng.normal(0, 0.1, 16).astype(f32)),
        _init("m1", rng.normal(0, 0.1, 16).astype(f32)), _init("v1", rng.uniform(0.5, 1.5, 16).astype(f32)),
        _init("w2", rng.normal(0, 0.1, (32, 16, 3, 3)).astype(f32)),
        _init("g2", rng.uniform(0.5, 1.5, 32).astype(f32)), _init("be2", rng.normal(0, 0.1, 32).astype(f32)),
        _init("m2", rng.normal(0, 0.1, 32).astype(f32)), _init("v2", rng.uniform(0.5, 1.5, 32).astype(f32)),
        _init("wf", rng.normal(0, 0.2, (classes, 32)).astype(f32)), _init("bf", rng.normal(0, 0.1, classes).astype(f32)),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g1", "be1", "m1", "v1"], ["n1"], name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c2", "g2", "be2", "m2", "v2"], ["n2"], name="bn2"),
        helper.make_node("Relu", ["n2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="deploy-examples")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model



def tiny_mlp(features: int = 64, hidden: int = 32, classes: int = 8, seed: int = 1, opset: int = 17) -> onnx.ModelProto:
    """MatMul-Add-Relu, Gemm, Tanh on 1xFEATURES vectors: a second, convolution-free example."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    inits = [
        _init("w1", rng.normal(0, 0.2, (features, hidden)).astype(f32)), _init("b1", rng.normal(0, 0.1, hidden).astype(f32)),
        _init("w2", rng.normal(0, 0.2, (classes, hidden)).astype(f32)), _init("b2", rng.normal(0, 0.1, classes).astype(f32)),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
        helper.make_node("Relu", ["hb"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], name="fc2", transB=1),
        helper.make_node("Tanh", ["logits"], ["y"], name="tanh"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="deploy-examples")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model

if __name__ == "__main__":
    import sys

    onnx.save(tiny_cnn(), sys.argv[1] if len(sys.argv) > 1 else "examples/tiny_cnn.onnx")
