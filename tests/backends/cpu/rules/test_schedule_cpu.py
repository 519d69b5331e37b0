"""Default CPU schedules: every kernel of an untuned build is scheduled (parallel, vectorized)
and still computes what ONNX Runtime computes, on shapes that do not divide into the tiles."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pipeline
from conftest import assert_matches_ort
from conftest import onnx_model as _model

RNG = np.random.default_rng(0)


def _w(*shape):
    return RNG.standard_normal(shape).astype(np.float32) * 0.3


# (name, C_in, C_out, H, W, kernel, stride, pad, group, dilation)
CONVS = [
    ("3x3", 16, 32, 14, 14, 3, 1, 1, 1, 1),
    ("odd-channels", 3, 10, 13, 11, 3, 2, 1, 1, 1),
    ("1x1-wide", 64, 96, 7, 7, 1, 1, 0, 1, 1),
    ("depthwise", 24, 24, 15, 15, 3, 1, 1, 24, 1),
    ("depthwise-s2", 40, 40, 9, 9, 3, 2, 1, 40, 1),
    ("grouped", 16, 32, 8, 8, 3, 1, 1, 4, 1),
    ("grouped-w8-s2", 64, 64, 9, 9, 3, 2, 1, 8, 1),  # RegNet's group width 8: half a vector
    ("grouped-w48", 96, 96, 7, 7, 3, 1, 1, 2, 1),  # three vectors per group
    ("dilated", 8, 17, 12, 12, 3, 1, 2, 1, 2),
    ("7x7-s2", 3, 64, 32, 32, 7, 2, 3, 1, 1),
]


@pytest.mark.parametrize("name,ci,co,h,w,k,s,p,g,d", CONVS, ids=[c[0] for c in CONVS])
def test_conv_bias_relu_matches_ort(tmp_path, name, ci, co, h, w, k, s, p, g, d):
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[k, k], strides=[s, s],
                              pads=[p] * 4, group=g, dilations=[d, d]),
             helper.make_node("Relu", ["c"], ["y"])]
    m = _model(nodes, [("x", [1, ci, h, w])], ["y"], [("W", _w(co, ci // g, k, k)), ("B", _w(co))])
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    assert art.manifest["tuning"]["tuned_kernels"] == 0
    assert_matches_ort(art, tmp_path / "m.onnx", atol=1e-4, rtol=1e-4)
    from pipeline import layers

    conv = [kk["schedule"] for kk in layers.read(art.path)["kernels"] if any(op == "Conv" for op, _ in kk["nodes"])]
    assert "default: ConvMatmul" in conv, conv  # grouped convs too: vectors inside a group, not gathered across


def test_residual_block_with_relu6_matches_ort(tmp_path):
    """conv -> bias -> residual add -> ReLU6 (Clip): the whole epilogue fused into the conv kernel."""
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "x"], ["a"]),
             helper.make_node("Clip", ["a", "lo", "hi"], ["y"])]
    m = _model(nodes, [("x", [1, 32, 10, 10])], ["y"], [("W", _w(32, 32, 3, 3)), ("B", _w(32)),
                                                         ("lo", np.array(0, np.float32)),
                                                         ("hi", np.array(6, np.float32))])
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a", dump_ir=tmp_path / "ir")
    assert_matches_ort(art, tmp_path / "m.onnx", inputs={"x": RNG.standard_normal((1, 32, 10, 10)).astype(np.float32) * 8})
    lowered = next((tmp_path / "ir").glob("*lower.py")).read_text()
    # one fused kernel holds conv, add, maximum and minimum; no transposes around the ReLU6
    assert any("conv2d" in ln and "maximum" in ln and "minimum" in ln for ln in lowered.splitlines() if "def fused" in ln)
    assert lowered.count("def transpose") + lowered.count("def fused_transpose") <= 2  # model input and output only


@pytest.mark.parametrize("a_shape,b_shape", [((128, 384), (384, 1152)), ((1, 7, 33), (33, 10)),
                                             ((2, 3, 5, 16), (2, 3, 16, 20)), ((1, 1000), (1000, 17))])
def test_matmul_add_matches_ort(tmp_path, a_shape, b_shape):
    nodes = [helper.make_node("MatMul", ["a", "B"], ["m"]), helper.make_node("Add", ["m", "bias"], ["y"])]
    m = _model(nodes, [("a", list(a_shape))], ["y"], [("B", _w(*b_shape)), ("bias", _w(b_shape[-1]))])
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    assert_matches_ort(art, tmp_path / "m.onnx", atol=1e-4, rtol=1e-4)


def test_pooling_softmax_layernorm_transpose_match_ort(tmp_path):
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("AveragePool", ["p"], ["q"], kernel_shape=[2, 2], strides=[1, 1]),
             helper.make_node("Transpose", ["q"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Softmax", ["t"], ["s"], axis=-1),
             helper.make_node("LayerNormalization", ["s", "g", "b"], ["y"], axis=-1)]
    m = _model(nodes, [("x", [1, 20, 17, 17])], ["y"], [("g", _w(20)), ("b", _w(20))])
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    assert_matches_ort(art, tmp_path / "m.onnx", atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bounds", [(0.0, 6.0), (None, 1.5), (-1.0, None), (float("nan"), 2.0)],
                         ids=["relu6", "max-only", "min-only", "nan-min"])
def test_clip_imports_as_relax_ops_and_matches_ort(tmp_path, bounds):
    inits, names = [], []
    for i, b in enumerate(bounds):
        if b is None:
            names.append("")
        else:
            inits.append((f"b{i}", np.array(b, np.float32)))
            names.append(f"b{i}")
    m = _model([helper.make_node("Clip", ["x", *names], ["y"])], [("x", [2, 33])], ["y"], inits)
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    x = RNG.standard_normal((2, 33)).astype(np.float32) * 5
    assert_matches_ort(art, tmp_path / "m.onnx", inputs={"x": x}, atol=0, rtol=0)


def test_default_schedules_cover_every_kernel():
    """Each kernel of a small CNN and of an encoder gets a default schedule with parallel and
    vector loops; without them TVM would build single-threaded scalar loops."""
    import tvm
    from tvm import tirx

    from pipeline.prepare import prepare_module
    from pipeline.backends.cpu.rules import apply_default_schedules
    from pipeline.targets import get_preset

    preset = get_preset("x86-64")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "D"], ["y"])]
    m = _model(nodes, [("x", [1, 8, 16, 16])], ["y"], [("W", _w(32, 8, 3, 3)), ("D", _w(32, 10))])
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        onnx.save(m, Path(d) / "m.onnx")
        mod = prepare_module(Path(d) / "m.onnx", preset, {}, 3).mod
    mod = apply_default_schedules(mod, preset.tvm_target())
    funcs = {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
    assert funcs and all(f.attrs and f.attrs.get("tirx.is_scheduled", False) for f in funcs.values())
    conv = next(f for n, f in funcs.items() if "conv2d" in n)
    text = tvm.IRModule({"main": conv}).script()
    assert "T.parallel(" in text and "T.vectorized(" in text and "T.unroll(" in text


def test_tvm_uses_every_cpu_by_default():
    """TVM's pool would start cpu_count/2 threads (1 on a 2-vCPU machine): deploy sets the default."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    code = "import pipeline, tvm; print(tvm.get_global_func('runtime.NumThreads')())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert int(out.strip().splitlines()[-1]) == len(os.sched_getaffinity(0))


def test_a_rule_that_raises_falls_back_to_the_next(monkeypatch, tmp_path):
    """A default schedule rule that crashes on a kernel must not break the compile."""
    import pipeline
    from conftest import assert_matches_ort
    from pipeline import examples
    from pipeline.backends.cpu.rules import conv_matmul

    def boom(self, func, target, _):
        raise IndexError("list index out of range")

    monkeypatch.setattr(conv_matmul.ConvMatmul, "apply", boom)
    onnx.save(examples.tiny_cnn(), str(tmp_path / "m.onnx"))
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    assert_matches_ort(art, tmp_path / "m.onnx")


def test_exp_erf_tanh_sigmoid_softmax_are_vectorizable_and_match_ort(tmp_path):
    """The CPU backend legalizes them with TVM's polynomial approximations (backends/cpu/fastmath.py):
    the kernels hold no call of libm's scalar expf/erff/tanhf, the outputs match ONNX Runtime over a
    wide range, and NaN stays NaN."""
    nodes = [helper.make_node("Erf", ["x"], ["e"]), helper.make_node("Tanh", ["x"], ["t"]),
             helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Exp", ["x"], ["x_exp"]),
             helper.make_node("Softmax", ["x"], ["sm"], axis=-1)]
    m = _model(nodes, [("x", [4, 300])], ["e", "t", "s", "x_exp", "sm"])
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a", dump_ir=tmp_path / "ir")
    lowered = sorted((tmp_path / "ir").glob("*-lower.py"))[-1].read_text()
    for libm in ("T.erf(", "T.tanh(", "T.exp(", "T.sigmoid("):
        assert libm not in lowered, libm
    x = np.linspace(-30, 30, 1200, dtype=np.float32).reshape(4, 300)
    x[0, 7] = np.nan
    ours = art({"x": x})
    from conftest import ort_run

    ref = ort_run(tmp_path / "m.onnx", {"x": x})
    for k in ref:
        np.testing.assert_allclose(ours[k], ref[k], rtol=2e-5, atol=2e-6, err_msg=k)  # NaN where ORT has NaN


@pytest.mark.parametrize("k,s,p,d,g", [(5, 1, 2, 1, 1), (3, 2, 1, 1, 1), (3, 1, 2, 2, 1), (4, 2, 1, 1, 4), (10, 5, 0, 1, 1)],
                         ids=["k5", "stride2", "dilated", "grouped", "wav2vec-stem"])
def test_conv1d_computes_as_conv2d_and_matches_ort(tmp_path, k, s, p, d, g):
    from pipeline import layers

    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k], strides=[s], pads=[p, p], dilations=[d],
                              group=g),
             helper.make_node("Relu", ["c"], ["y"])]
    m = _model(nodes, [("x", [1, 16, 77])], ["y"], [("w", _w(24, 16 // g, k)), ("b", _w(24))])
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    assert_matches_ort(art, tmp_path / "m.onnx", atol=1e-4, rtol=1e-4)
    conv = [kk for kk in layers.read(art.path)["kernels"] if any(op == "Conv" for op, _ in kk["nodes"])
            and kk["schedule"] == "default: ConvMatmul"]
    assert conv and "NHWC" in conv[0]["layouts"]
    assert "Conv1dAsConv2d" in art.manifest["passes"]["conv1d-as-conv2d"]


def test_conv_transpose_after_an_nhwc_conv_compiles_at_o3(tmp_path):
    """The layout pass keeps ConvTranspose NCHW (TVM lowers it in NCHW only)."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("ConvTranspose", ["r", "wt"], ["u"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["u", "w2"], ["y"], kernel_shape=[1, 1])]
    m = _model(nodes, [("x", [1, 8, 12, 12])], ["y"], [("w", _w(16, 8, 3, 3)), ("wt", _w(16, 8, 2, 2)), ("w2", _w(4, 8, 1, 1))])
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a", opt_level=3)
    assert not art.manifest.get("fallbacks"), art.manifest.get("fallbacks")
    assert_matches_ort(art, tmp_path / "m.onnx", atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("k,s", [(2, 2), (3, 2)], ids=["kernel=stride", "overlapping"])
def test_unet_up_block_matches_ort(tmp_path, k, s):
    """Conv -> ConvTranspose (+ bias) -> concat with the skip -> 3x3 conv (Winograd). With kernel =
    stride the transposed conv is a 1x1 conv and a depth-to-space (backends/cpu/deconv.py); an
    overlapping one stays a transposed conv."""
    from pipeline import layers

    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("ConvTranspose", ["r", "wt", "bt"], ["u"], kernel_shape=[k, k], strides=[s, s],
                              pads=[0, 0, k - s, k - s]),
             helper.make_node("Concat", ["u", "x"], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "w2"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    m = _model(nodes, [("x", [1, 16, 24, 24])], ["y"], [("w", _w(32, 16, 3, 3)), ("wt", _w(32, 16, k, k)),
                                                       ("bt", _w(16)), ("w2", _w(32, 32, 3, 3))])
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    assert not art.manifest.get("fallbacks"), art.manifest.get("fallbacks")
    assert_matches_ort(art, tmp_path / "m.onnx", atol=1e-4, rtol=1e-4)
    kernels = " ".join(kk["kernel"] for kk in layers.read(art.path)["kernels"])
    assert ("conv2d_transpose" in kernels) == (k != s), kernels


def test_ragged_matmul_is_padded_to_whole_vectors_and_matches_ort(tmp_path):
    """ViT's attention: 197 tokens (prime) left ConvMatmul's vector block ragged and scalar (9 GFLOP/s);
    the rule pads the block to whole vectors (pad_einsum) and cuts the result back."""
    from pipeline import targets
    from pipeline.prepare import prepare_module
    from pipeline.schedule import apply_database

    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]), helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node("Mul", ["s", "c"], ["y"])]
    m = _model(nodes, [("q", [3, 197, 64]), ("k", [3, 197, 64])], ["y"], [("c", np.array(0.125, np.float32))])
    onnx.save(m, tmp_path / "m.onnx")
    preset = targets.get_preset("x86-64")
    mod, _, _ = apply_database(prepare_module(tmp_path / "m.onnx", preset, {}, 3).mod, preset, None)
    matmul = [f.script() for gv, f in mod.functions_items() if "matmul" in gv.name_hint]
    assert matmul and "_pad" in matmul[0] and "T.vectorized" in matmul[0]
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    assert_matches_ort(art, tmp_path / "m.onnx", atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("op,shape", [("InstanceNormalization", [1, 32, 999]), ("LayerNormalization", [1, 197, 96]),
                                      ("Softmax", [1, 4, 197, 197])])
def test_row_reductions_run_row_by_row_and_match_ort(tmp_path, op, shape):
    """Norms and softmax along long static rows take the row-wise rule (rules/rows.py): a group norm
    over 3199 steps ran 7x slower than ORT under dlight's reduction rule."""
    from pipeline import layers

    c = shape[1] if op == "InstanceNormalization" else shape[-1]
    inits = [("s", _w(c) + 1), ("b", _w(c))] if op != "Softmax" else []
    node = helper.make_node(op, ["x"] + [n for n, _ in inits], ["y"], **({"axis": -1} if op != "InstanceNormalization" else {}))
    m = _model([node], [("x", shape)], ["y"], inits)
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    assert_matches_ort(art, tmp_path / "m.onnx", atol=1e-4, rtol=1e-4)
    sched = [kk["schedule"] for kk in layers.read(art.path)["kernels"]]
    assert "default: Rows" in sched, sched


def test_norm_after_an_nhwc_conv_reduces_channel_blocks_and_matches_ort(tmp_path):
    """An instance norm after a 1-D conv (wav2vec2's feature extractor) is reduced along the steps
    of an NHWC tensor: the Columns rule (channel blocks, steps outside, channels as vectors), not
    the row-wise rule that read a cache line per step (7.7 ms for ORT's 0.8 ms). Its NCHW output is
    a transpose, tiled (rules/injective.py): 3199 steps do not divide into vectors."""
    from pipeline import layers

    c, n = 64, 3199 * 5 + 5
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[10], strides=[5]),
             helper.make_node("InstanceNormalization", ["c", "s", "b"], ["y"])]
    m = _model(nodes, [("x", [1, 1, n])], ["y"], [("W", _w(c, 1, 10)), ("s", _w(c) + 1), ("b", _w(c))])
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    assert_matches_ort(art, tmp_path / "m.onnx", atol=1e-4, rtol=1e-4)
    kernels = layers.read(art.path)["kernels"]
    norm = [k["schedule"] for k in kernels if any(op == "InstanceNormalization" for op, _ in k["nodes"])]
    assert "default: Columns" in norm, norm
    assert "default: Rows" not in norm, norm


@pytest.mark.parametrize("shape,perm,tiled", [([1, 3199, 64], [0, 2, 1], True), ([2, 24, 17, 33], [0, 3, 1, 2], True),
                                              ([2, 24, 7, 33], [0, 3, 1, 2], False), ([5, 40, 3], [2, 1, 0], False)])
def test_transposes_are_tiled_and_match_ort(tmp_path, shape, perm, tiled):
    """A transpose whose input is contiguous along another axis than its output's runs in square
    tiles a vector a side (rules/injective.py), ragged edges included; an output row shorter than
    a vector keeps the plain vectorized loop."""
    from tvm import s_tir

    from pipeline import targets
    from pipeline.backends.cpu.rules.injective import Injective
    from pipeline.prepare import prepare_module

    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=perm), helper.make_node("Relu", ["t"], ["y"])]
    m = _model(nodes, [("x", shape)], ["y"])
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    assert_matches_ort(art, tmp_path / "m.onnx", atol=0, rtol=0)
    preset = targets.get_preset("x86-64")
    [func] = [f for gv, f in prepare_module(tmp_path / "m.onnx", preset, {}, 3).mod.functions_items()
              if "transpose" in gv.name_hint]
    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    for b in blocks[:-1]:
        sch.compute_inline(b)
    assert Injective._tile_transpose(sch, blocks[-1], 16) == tiled


def test_ragged_output_channels_pad_the_weights_once_at_build_time(tmp_path):
    """A conv to 1,000 channels (squeezenet's head) pads its output channels to two vectors
    (1,024); the padded weights are a layout rewrite, split out of the kernel and folded at build
    time (the kernel is renamed *_prepacked), not copied on every call; the layer report still
    names the kernel's ONNX nodes and schedule."""
    from pipeline import layers

    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    m = _model(nodes, [("x", [1, 64, 13, 13])], ["y"], [("W", _w(1000, 64, 1, 1)), ("B", _w(1000))])
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    assert_matches_ort(art, tmp_path / "m.onnx", atol=1e-4, rtol=1e-4)
    [conv] = [k for k in layers.read(art.path)["kernels"] if "conv2d" in k["kernel"]]
    assert ["Conv", "Conv_0"] in conv["nodes"], conv
    assert conv["kernel"].endswith("_prepacked"), conv
    assert conv["schedule"] == "default: ConvMatmul", conv


@pytest.mark.parametrize("exponent", [2.0, 3.0, 4.0, 2.5])
def test_pow_by_a_small_integer_is_multiplication_and_matches_ort(tmp_path, exponent):
    """GPT-2's tanh-GELU has x ** 3: a libm pow per element took 2.2 ms (ORT 0.02). A constant
    exponent 2..4 is legalized as multiplications (backends/cpu/fastmath.py), others keep pow."""
    from pipeline import targets
    from pipeline.prepare import prepare_module

    nodes = [helper.make_node("Pow", ["x", "e"], ["y"])]
    m = _model(nodes, [("x", [4, 33])], ["y"], [("e", np.array(exponent, np.float32))])
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    x = RNG.standard_normal((4, 33)).astype(np.float32) * 3
    x[0, :3] = [np.nan, np.inf, -np.inf]
    got = art.run({"x": x})["y"]
    import onnxruntime as ort

    want = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, equal_nan=True)
    lowered = prepare_module(tmp_path / "m.onnx", targets.get_preset("x86-64"), {}, 3).mod.script()
    assert ("T.pow" in lowered) == (exponent == 2.5)


@pytest.mark.parametrize("shape,k,n", [([4, 16, 512], 512, 256), ([1, 7, 7, 1024], None, 512)])
def test_dominant_weights_are_packed_into_panels_at_build_time(tmp_path, shape, k, n):
    """Where the weights outweigh the activations (a transformer's matmul, a late 1x1 conv), each
    task reads one tile-wide panel: the weights are laid out [N / tile, ..., tile] at build time
    (a layout rewrite folded into the constants: the kernel is *_prepacked), not read as a
    column of rows N apart; the numbers stay ORT's."""
    from pipeline import layers

    if k:
        nodes, inits = [helper.make_node("MatMul", ["x", "W"], ["y"])], [("W", _w(k, n))]
    else:
        nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
                 helper.make_node("Conv", ["t", "W"], ["y"], kernel_shape=[1, 1])]
        inits = [("W", _w(n, shape[-1], 1, 1))]
    m = _model(nodes, [("x", shape)], ["y"], inits)
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    assert_matches_ort(art, tmp_path / "m.onnx", atol=1e-4, rtol=1e-4)
    kernels = [kk["kernel"] for kk in layers.read(art.path)["kernels"]]
    assert any(("matmul" in kk or "conv2d" in kk) and kk.endswith("_prepacked") for kk in kernels), kernels


def test_kernels_too_small_to_split_stay_on_one_thread():
    """Below SERIAL_BELOW loop iterations a kernel runs serially (a parallel region would wait for a
    worker, which beside a busy neighbour process may not be running); larger ones stay parallel."""
    import tvm
    from tvm import te

    from pipeline.backends.cpu.rules import apply_default_schedules
    from pipeline.backends.cpu.rules.rule_base import SERIAL_BELOW, work
    from pipeline.targets import get_preset

    def scale(n):
        a = te.placeholder((n, 64), "float32", "a")
        return te.create_prim_func([a, te.compute((n, 64), lambda i, j: a[i, j] * 2.0, "b")])

    def dense(m, k, n):
        x, w = te.placeholder((m, k), "float32", "x"), te.placeholder((k, n), "float32", "w")
        r = te.reduce_axis((0, k), "r")
        return te.create_prim_func([x, w, te.compute((m, n), lambda i, j: te.sum(x[i, r] * w[r, j], axis=r), "y")])

    funcs = {"scale_small": scale(4), "scale_big": scale(4096), "dense_small": dense(1, 16, 16),
             "dense_big": dense(1, 512, 512)}
    assert work(funcs["scale_small"]) < SERIAL_BELOW <= work(funcs["scale_big"])
    assert work(funcs["dense_small"]) < SERIAL_BELOW <= work(funcs["dense_big"])
    mod = tvm.IRModule({k: f.with_attr("global_symbol", k) for k, f in funcs.items()})
    mod = apply_default_schedules(mod, get_preset("x86-64").tvm_target())
    par = {gv.name_hint: "T.parallel" in f.script() for gv, f in mod.functions_items()}
    assert par == {"scale_small": False, "scale_big": True, "dense_small": False, "dense_big": True}, par


@pytest.mark.parametrize("preset,lanes,max_acc", [("x86-64-v3", 8, 12), ("x86-64-v4", 16, 16), ("rpi4", 4, 16)])
def test_register_tiles_fit_the_targets_vector_registers(preset, lanes, max_acc):
    """TVM 0.27's llvm_get_vector_width answers 512 for every x86 CPU: on AVX2 (Haswell, Zen) tiles
    were sized for 16-float vectors, twice the registers there, and every step of a conv's
    reduction spilled accumulators to the stack. The tile is sized from the CPU's features:
    8 floats a vector and at most 12 accumulators in AVX2's 16 registers."""
    import re

    import tvm
    from tvm import te

    from pipeline.backends.cpu.rules import apply_default_schedules
    from pipeline.backends.cpu.vector import vector_lanes
    from pipeline.targets import get_preset

    target = get_preset(preset).tvm_target()
    assert vector_lanes(target, "float32") == lanes
    def tile(m):
        x, w = te.placeholder((m, 96), "float32", "x"), te.placeholder((96, 576), "float32", "w")
        r = te.reduce_axis((0, 96), "r")
        f = te.create_prim_func([x, w, te.compute((m, 576), lambda i, j: te.sum(x[i, r] * w[r, j], axis=r), "y")])
        mod = apply_default_schedules(tvm.IRModule({"dense": f.with_attr("global_symbol", "dense")}), target)
        text = mod["dense"].script()
        rows = [int(n) for n in re.findall(r"in T\.unroll\((\d+)\)", text)]
        vec = [int(n) for n in re.findall(r"in T\.vectorized\((\d+)\)", text)]
        assert rows and vec, text
        return max(rows), max(vec)

    rows, vec = tile(196)
    assert vec % lanes == 0 and rows * (vec // lanes) <= max_acc, (rows, vec)
    # 7 rows with no divisor that fits: even blocks (4 + 3 on AVX2), not a full block and a 1-row one
    rows7, _ = tile(7)
    assert rows7 == {8: 4, 16: 7, 4: 7}[lanes], rows7


@pytest.mark.parametrize("channels,panels_outer", [(256, True), (64, False)])
def test_long_conv1d_keeps_the_operand_that_misses_the_cache_outer(tmp_path, channels, panels_outer):
    """A Conv1D over a long signal (wav2vec2's feature extractor): with 768 KB of weights, walking
    the row tiles outermost read every weight once per tile from beyond the L2 (270 MB for this
    one, 1.8x ONNX Runtime's time for wav2vec2's 512-channel layer), so the output-channel panels
    go outermost, their weights packed at build time (*_prepacked). With 48 KB of weights, which
    stay in the L2, the rows stay outermost and the activations are read once."""
    from pipeline import layers

    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3], strides=[2]),
             helper.make_node("Relu", ["c"], ["y"])]
    m = _model(nodes, [("x", [1, channels, 2047])], ["y"], [("W", _w(channels, channels, 3))])
    onnx.save(m, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    assert_matches_ort(art, tmp_path / "m.onnx", atol=1e-4, rtol=1e-4)
    [conv] = [k for k in layers.read(art.path)["kernels"] if "conv2d" in k["kernel"]]
    assert conv["schedule"] == "default: ConvMatmul", conv
    assert conv["kernel"].endswith("_prepacked") == panels_outer, conv
