"""Winograd F(4x4, 3x3): which convolutions are rewritten, and that every rewritten one (ragged
tiles, ragged channels, batch 2, valid padding, a residual chain whose unpack and next pack fuse)
still computes what ONNX Runtime computes, untuned and after MetaSchedule tuned its kernels."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pipeline
from conftest import assert_matches_ort
from pipeline.backends.cpu import winograd
from pipeline.tune import TuneArgs, tune_model

RNG = np.random.default_rng(3)


def _w(*shape):
    return RNG.standard_normal(shape).astype(np.float32) * 0.2


def _conv_model(path, ci, co, h, w, pads=(1, 1, 1, 1), stride=1, dilation=1, group=1, batch=1, blocks=1):
    """``blocks`` x (conv -> bias -> ReLU), the last with a residual add when shapes allow."""
    nodes, inits, x = [], [], "x"
    c_in = ci
    for i in range(blocks):
        nodes.append(helper.make_node("Conv", [x, f"W{i}", f"B{i}"], [f"c{i}"], kernel_shape=[3, 3],
                                      pads=list(pads), strides=[stride] * 2, dilations=[dilation] * 2, group=group))
        inits += [numpy_helper.from_array(_w(co, c_in // group, 3, 3), f"W{i}"), numpy_helper.from_array(_w(co), f"B{i}")]
        y = f"c{i}"
        if i == blocks - 1 and blocks > 1:
            nodes.append(helper.make_node("Add", [y, "r0"], ["sum"]))
            y = "sum"
        nodes.append(helper.make_node("Relu", [y], [f"r{i}"]))
        x, c_in = f"r{i}", co
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, ci, h, w])],
                          [helper.make_empty_tensor_value_info(x)], inits)
    m = onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    m.graph.output[0].CopyFrom([v for v in m.graph.value_info if v.name == x][0])
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return path


def _rewritten(tmp_path, model) -> int:
    pipeline.compile(model, "x86-64", output=tmp_path / "ir-a", dump_ir=tmp_path / "ir", force=True)
    return next((tmp_path / "ir").glob("*-winograd.py")).read_text().count("R.matmul(")


CASES = [  # name, ci, co, h, w, pads, batch
    ("56x56", 16, 32, 56, 56, (1, 1, 1, 1), 1),
    ("ragged-tiles", 16, 32, 30, 26, (1, 1, 1, 1), 1),       # 30x26 outputs: last tile row/col partial
    ("ragged-channels", 5, 10, 33, 29, (1, 1, 1, 1), 1),     # channels below one vector
    ("valid-padding", 16, 16, 34, 34, (0, 0, 0, 0), 1),
    ("asymmetric-padding", 16, 16, 32, 32, (0, 1, 2, 1), 1),
    ("batch-2", 16, 32, 32, 32, (1, 1, 1, 1), 2),
]


@pytest.mark.parametrize("name,ci,co,h,w,pads,batch", CASES, ids=[c[0] for c in CASES])
def test_rewritten_conv_matches_ort(tmp_path, name, ci, co, h, w, pads, batch):
    model = _conv_model(tmp_path / "m.onnx", ci, co, h, w, pads=pads, batch=batch)
    assert _rewritten(tmp_path, model) == 1
    art = pipeline.compile(model, "x86-64", output=tmp_path / "a")
    assert_matches_ort(art, model, atol=1e-4, rtol=1e-4)


def test_residual_chain_fuses_unpack_with_next_pack_and_matches_ort(tmp_path):
    model = _conv_model(tmp_path / "m.onnx", 32, 32, 40, 40, blocks=3)
    assert _rewritten(tmp_path, model) == 3
    lowered = next((tmp_path / "ir").glob("*-lower.py")).read_text()
    assert "fused_deploy_winograd_unpack" in lowered and "deploy_winograd_pack" in lowered
    art = pipeline.compile(model, "x86-64", output=tmp_path / "a")
    assert art.manifest["tuning"]["tuned_kernels"] == 0
    assert_matches_ort(art, model, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kw", [dict(stride=2), dict(dilation=2, pads=(2, 2, 2, 2)), dict(group=4)],
                         ids=["stride-2", "dilated", "grouped"])
def test_other_convs_stay_direct(tmp_path, kw):
    assert _rewritten(tmp_path, _conv_model(tmp_path / "m.onnx", 16, 16, 64, 64, **kw)) == 0


def test_few_tiles_or_large_weights_stay_direct(tmp_path, monkeypatch):
    # 14x14 outputs: 16 tiles, fewer than MIN_TILES
    assert _rewritten(tmp_path, _conv_model(tmp_path / "a.onnx", 16, 16, 14, 14)) == 0
    monkeypatch.setattr(winograd, "MAX_WEIGHT_BYTES", 36 * 16 * 16 * 4 - 1)
    assert _rewritten(tmp_path, _conv_model(tmp_path / "b.onnx", 16, 16, 32, 32)) == 0


def test_winograd_matrices_compute_a_convolution():
    """Y = A^T [(G g G^T) * (B^T d B)] A is the 4x4 valid correlation of a 6x6 tile."""
    A, B, G = winograd.matrices()
    d, g = RNG.standard_normal((6, 6)), RNG.standard_normal((3, 3))
    y = A.T @ ((G @ g @ G.T) * (B.T @ d @ B)) @ A
    ref = np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(y, ref, atol=1e-12)


@pytest.mark.slow  # ~2.5 min of tuning; -m slow
def test_tuned_winograd_kernels_apply_and_match_ort(tmp_path):
    """MetaSchedule tunes the pack/unpack kernels through their custom rule and the matmul like
    any other; the records apply at compile and the result still matches ONNX Runtime."""
    model = _conv_model(tmp_path / "m.onnx", 16, 16, 32, 32, blocks=2)
    s = tune_model(TuneArgs(model=model, target="x86-64", trials=24, trials_per_task=6, db=tmp_path / "db"),
                   show=False)
    assert s.tasks_tuned == s.tasks and s.trials >= 8
    art = pipeline.compile(model, "x86-64", output=tmp_path / "a", db=tmp_path / "db")
    assert art.manifest["tuning"]["tuned_kernels"] == art.manifest["tuning"]["kernels"]
    assert_matches_ort(art, model, atol=1e-4, rtol=1e-4)
