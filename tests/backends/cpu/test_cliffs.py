"""Patterns of third-party models that once cost a whole model its speed: each test asserts the
schedule or layout the compile chose (layers.json, manifest), and the outputs against ONNX Runtime."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pipeline
from conftest import assert_matches_ort
from conftest import onnx_model as _model

RNG = np.random.default_rng(0)




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


def _shuffle_block(groups=4, c=16, hw=10):
    """conv -> channel shuffle (Reshape [N,C,H,W] -> [N,g,C/g,H,W], Transpose, Reshape) -> conv,
    and the residual joined by a variadic ``Sum`` as in opset-7 era exports (ResNet-50, ShuffleNet
    from caffe2): TVM imports it as a 5-D stack + sum, which ConvertLayout cannot convert."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[1, 1], group=groups, name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Reshape", ["r1", "s5"], ["g5"], name="shuffle_reshape"),
             helper.make_node("Transpose", ["g5"], ["t5"], perm=[0, 2, 1, 3, 4], name="shuffle_transpose"),
             helper.make_node("Reshape", ["t5", "s4"], ["sh"], name="shuffle_back"),
             helper.make_node("Conv", ["sh", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Sum", ["c2", "x"], ["s"], name="residual_sum"),
             helper.make_node("Relu", ["s"], ["y"], name="relu2")]
    inits = [("w1", _w(c, c // groups, 1, 1)), ("b1", _w(c)), ("w2", _w(c, c, 3, 3, scale=0.1)), ("b2", _w(c)),
             ("s5", np.array([1, groups, c // groups, hw, hw], np.int64)), ("s4", np.array([1, c, hw, hw], np.int64))]
    return _model(nodes, [("x", [1, c, hw, hw])], ["y"], inits, opset=13)


def test_layout_falls_back_per_operator(tmp_path):
    """The op TVM cannot give the NHWC layout keeps its own (listed in the manifest); both convs
    stay NHWC, and the model matches ONNX Runtime."""
    onnx.save(_shuffle_block(), tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    assert_matches_ort(art, tmp_path / "m.onnx", atol=1e-4, rtol=1e-4)
    assert not any(f["stage"] == "layout" for f in art.manifest.get("fallbacks", [])), art.manifest["fallbacks"]
    kept = art.manifest["layout"]["kept"]
    assert kept and {k["node"] for k in kept} == {"residual_sum"}, kept
    convs = [k for k in _kernels(art, "Conv") if any(n in ("conv1", "conv2") for _, n in k["nodes"])]
    assert {n for k in convs for _, n in k["nodes"]} >= {"conv1", "conv2"}
    assert all("NHWC" in k["layouts"] for k in convs if k["layouts"]), convs
    assert sum("NHWC" in k["layouts"] for k in convs) >= 1, convs


@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 0), (1, 1)], ids=["NN", "NT", "TN", "TT"])
def test_batch1_gemm_is_a_prepacked_gemv_whatever_its_transposes(tmp_path, ta, tb):
    """A classifier's Gemm (batch 1, constant B, bias): the Gemv rule with the weights prepacked
    into panels (a ``*_prepacked`` kernel), for every transA/transB."""
    k, n = 256, 200
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transA=ta, transB=tb, alpha=1.0, beta=1.0)]
    m = _model(nodes, [("x", [k, 1] if ta else [1, k])], ["y"],
               [("w", _w(*((n, k) if tb else (k, n)), scale=0.05)), ("b", _w(n))], opset=13)
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    assert_matches_ort(art, tmp_path / "m.onnx", atol=1e-4, rtol=1e-4)
    gemm = _kernels(art, "Gemm")
    assert [g["schedule"] for g in gemm if g["kernel"].endswith("_prepacked")] == ["default: Gemv"], gemm


def test_a_call_on_a_cpu_reuses_aligned_input_buffers(tmp_path):
    """run() copies each input into a 64-byte-aligned buffer kept for it, which the kernels read in
    place (no device tensor made per call); results of earlier calls stay the caller's own."""
    from conftest import ort_run
    from pipeline import examples

    path = tmp_path / "mlp.onnx"
    onnx.save(examples.tiny_mlp(), path)
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a")
    inputs = art.random_inputs()
    other = {k: (v * 2 + 1).astype(v.dtype) for k, v in inputs.items()}
    first = art.run(inputs)
    kept = {k: v.copy() for k, v in first.items()}
    second = art.run(other)
    for got, feed in ((first, inputs), (second, other)):
        ref = ort_run(path, feed)
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, atol=1e-5)
    for k in first:
        np.testing.assert_array_equal(first[k], kept[k])  # not overwritten by the second call
    assert len(art._staging) == len(art.inputs)  # one buffer per input, reused by the second call
    for buf, tensor in art._staging.values():
        assert buf.ctypes.data % 64 == 0 and np.shares_memory(buf, np.from_dlpack(tensor))
