"""Narrow types (float8, float4, 4-/2-bit ints): casts match ONNX's reference bit for bit, the
artifact takes and returns ml_dtypes arrays, unused inputs are taken and ignored, and what deploy
cannot compute on a narrow tensor is refused naming the node."""

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper
from onnx.reference import ReferenceEvaluator

import pipeline
from pipeline import DeployError

FLOATS = [T.FLOAT8E4M3FN, T.FLOAT8E4M3FNUZ, T.FLOAT8E5M2, T.FLOAT8E5M2FNUZ, T.FLOAT4E2M1]
INTS = [T.INT4, T.UINT4, T.INT2, T.UINT2]


def _model(nodes, inputs, outputs, opset=23):
    g = helper.make_graph(nodes, "g", inputs, outputs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def _probe_values() -> np.ndarray:
    """Every finite float16 (each float8/float4 midpoint and tie among them), the specials, and
    random float32s at every scale."""
    h = np.arange(65536, dtype=np.uint16).view(np.float16)
    h = h[np.isfinite(h)].astype(np.float32)
    rng = np.random.default_rng(0)
    r = (rng.standard_normal(4096) * 2.0 ** rng.integers(-20, 18, 4096)).astype(np.float32)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 464.0, 480.0, 61440.0, 240.0, 248.0],
                       np.float32)
    return np.concatenate([h, r, special])


def test_every_cast_to_and_from_narrow_types_matches_onnx_reference(tmp_path):
    x = _probe_values()
    nodes, outs = [], []
    for t in FLOATS + INTS:
        for sat in ((1, 0) if t in FLOATS[:4] else (1,)):
            name = f"{helper.tensor_dtype_to_string(t)[12:].lower()}_sat{sat}"
            nodes.append(helper.make_node("Cast", ["x"], [name], to=t, saturate=sat))
            outs.append(helper.make_tensor_value_info(name, t, [len(x)]))
            nodes.append(helper.make_node("Cast", [name], [name + "_back"], to=T.FLOAT))  # and decoded again
            outs.append(helper.make_tensor_value_info(name + "_back", T.FLOAT, [len(x)]))
    model = _model(nodes, [helper.make_tensor_value_info("x", T.FLOAT, [len(x)])], outs)
    onnx.save(model, tmp_path / "casts.onnx")
    art = pipeline.compile(tmp_path / "casts.onnx", "x86-64", output=tmp_path / "a")
    ours = art.run({"x": x})
    ref = dict(zip([o.name for o in outs], ReferenceEvaluator(model).run(None, {"x": x})))
    for o in outs:
        want, got = np.asarray(ref[o.name]), ours[o.name]
        assert got.dtype == want.dtype, o.name
        w, g = want.astype(np.float64), got.astype(np.float64)
        same = (w == g) | (np.isnan(w) & np.isnan(g))
        if w.dtype.kind == "f" and want.dtype.kind != "V":  # decoded floats: -0 and 0 apart too
            same &= (np.signbit(w) == np.signbit(g)) | np.isnan(w)
        kind = o.name.split("_")[0]
        if kind in ("int4", "uint4", "int2", "uint2"):  # out of range is undefined (ml_dtypes 0.6 wraps,
            info = ml_dtypes.iinfo(getattr(ml_dtypes, kind))  # 0.7 gives 0): compared in range only
            same |= ~((x > int(info.min) - 1) & (x < int(info.max) + 1))
        assert same.all(), f"{o.name}: {int((~same).sum())} differ, e.g. x={x[~same][:4]} ours={g[~same][:4]} ref={w[~same][:4]}"
    spec = {s["name"]: s for s in art.outputs}
    assert spec["float8e4m3fn_sat1"]["dtype"] == "float8_e4m3fn" and spec["float8e4m3fn_sat1"]["storage"] == "uint8"


def test_narrow_inputs_outputs_and_an_unused_input(tmp_path):
    """A float8 input decoded, an int4 output, and an input nothing uses (CastLike's 'like' once
    the cast is rewritten): the artifact takes ml_dtypes arrays, returns them, ignores 'like'."""
    nodes = [helper.make_node("Cast", ["f8"], ["f"], to=T.FLOAT),
             helper.make_node("Mul", ["f", "f"], ["sq"]),
             helper.make_node("CastLike", ["sq", "like"], ["i4"])]
    model = _model(nodes, [helper.make_tensor_value_info("f8", T.FLOAT8E4M3FN, [64]),
                           helper.make_tensor_value_info("like", T.INT4, [3])],
                   [helper.make_tensor_value_info("i4", T.INT4, [64]), helper.make_tensor_value_info("sq", T.FLOAT, [64])])
    onnx.save(model, tmp_path / "m.onnx")
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    assert art.inputs[0]["dtype"] == "float8_e4m3fn" and [s["name"] for s in art.unused_inputs] == ["like"]
    f8 = np.clip(np.random.default_rng(1).standard_normal(64) * 2, -2.5, 2.5).astype(ml_dtypes.float8_e4m3fn)  # squares in int4
    like = np.zeros(3, ml_dtypes.int4)
    ours = art.run({"f8": f8, "like": like})
    ref = ReferenceEvaluator(model).run(None, {"f8": f8, "like": like})
    assert ours["i4"].dtype == ml_dtypes.int4
    np.testing.assert_array_equal(ours["i4"].astype(np.int8), ref[0].astype(np.int8))
    np.testing.assert_array_equal(ours["sq"], ref[1])
    with pytest.raises(DeployError, match="input 'f8' has dtype float32, the artifact expects float8_e4m3fn"):
        art.run({"f8": f8.astype(np.float32)})


def test_int4_quantize_dequantize(tmp_path):
    x = np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32) * 3
    inits = [helper.make_tensor("s", T.FLOAT, [], [0.5]), helper.make_tensor("z", T.INT4, [], [1])]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [4, 8])],
                          [helper.make_tensor_value_info("q", T.INT4, [4, 8]),
                           helper.make_tensor_value_info("y", T.FLOAT, [4, 8])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.save(model, tmp_path / "q.onnx")
    ours = pipeline.compile(tmp_path / "q.onnx", "x86-64", output=tmp_path / "a").run({"x": x})
    q, y = ReferenceEvaluator(model).run(None, {"x": x})
    np.testing.assert_array_equal(ours["q"].astype(np.int8), q.astype(np.int8))
    np.testing.assert_array_equal(ours["y"], y)
    assert ours["q"].astype(np.int8).min() == -8  # saturated at int4's range, not int8's


def test_other_ops_on_narrow_tensors_are_refused_naming_the_node(tmp_path):
    nodes = [helper.make_node("Cast", ["x"], ["f8"], to=T.FLOAT8E4M3FN),
             helper.make_node("Neg", ["f8"], ["y"], name="negate")]
    model = _model(nodes, [helper.make_tensor_value_info("x", T.FLOAT, [4])],
                   [helper.make_tensor_value_info("y", T.FLOAT8E4M3FN, [4])], opset=19)
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(DeployError, match=r"node 'negate' \(Neg\) computes on a float8_e4m3fn tensor") as e:
        pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a")
    assert "cast them to float" in e.value.hint
    assert not (tmp_path / "a").exists()
