"""Patterns of third-party models that once cost a whole model its speed: each test asserts the
schedule or layout the compile chose (layers.json, manifest), and the outputs against ONNX Runtime."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pipeline
from conftest import assert_matches_ort

RNG = np.random.default_rng(0)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_empty_tensor_value_info(n) for n in outputs],
                          [numpy_helper.from_array(a, n) for n, a in inits])
    m = onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]))
    inferred = {vi.name: vi for vi in m.graph.value_info}
    for out in m.graph.output:
        out.CopyFrom(inferred[out.name])
    onnx.checker.check_model(m)
    return m


def _w(*shape, scale=0.3):
    return RNG.standard_normal(shape).astype(np.float32) * scale


def _kernels(art, op):
    from pipeline import layers

    return [k for k in layers.read(art.path)["kernels"] if any(o == op for o, _ in k["nodes"])]


# (ci, co, length, kernel, stride, pad): an STFT as a convolution (scaled down from 1 -> 402,
# kernel 400, stride 160 over 16000 samples), and a byte-embedding conv whose stride is its kernel
WIDE_CONV1D = [(1, 402, 4000, 400, 160, 0), (2, 40, 900, 64, 16, 8), (64, 96, 256, 4, 4, 0)]


@pytest.mark.parametrize("ci,co,length,k,s,p", WIDE_CONV1D, ids=["stft", "wide-padded", "patches"])
def test_wide_or_patch_conv1d_is_a_matmul(tmp_path, ci, co, length, k, s, p):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k], strides=[s], pads=[p, p])]
    m = _model(nodes, [("x", [1, ci, length])], ["y"], [("w", _w(co, ci, k, scale=0.05)), ("b", _w(co))])
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    assert_matches_ort(art, tmp_path / "m.onnx", atol=1e-4, rtol=1e-4)
    conv = _kernels(art, "Conv")
    main = [c for c in conv if "matmul" in c["kernel"]]
    assert main and main[0]["schedule"] == "default: ConvMatmul", conv  # gathered windows x weights
    assert not any("conv2d" in c["kernel"] for c in conv), conv
