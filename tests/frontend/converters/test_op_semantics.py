"""Ops TVM converts to other numbers than ONNX's, which deploy computes by ONNX's definition:
float16 accumulation, max/min identities, NonMaxSuppression's run-time thresholds, and the forms it
refuses instead (RoiAlign max)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper
from onnx.reference import ReferenceEvaluator

import pipeline
from conftest import ort_run
from pipeline import DeployError


def _save(tmp_path, nodes, inputs, outputs, inits=(), opset=19, name="m.onnx"):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    onnx.save(model, tmp_path / name)
    return model, tmp_path / name


def test_float16_matmul_accumulates_in_float32(tmp_path):
    """A K=4096 float16 matmul: summed in float16 (TVM's default) it is off by dozens of ulps."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 4096)).astype(np.float16)
    w = rng.standard_normal((4096, 8)).astype(np.float16)
    model, path = _save(tmp_path, [helper.make_node("MatMul", ["a", "w"], ["y"])],
                        [helper.make_tensor_value_info("a", T.FLOAT16, [4, 4096])],
                        [helper.make_tensor_value_info("y", T.FLOAT16, [4, 8])],
                        [onnx.numpy_helper.from_array(w, "w")])
    y = pipeline.compile(path, "x86-64", output=tmp_path / "a").run({"a": a})["y"]
    exact = a.astype(np.float64) @ w.astype(np.float64)
    assert y.dtype == np.float16
    # rounded once: within half an ulp of float16 (plus float32's summation error)
    assert np.all(np.abs(y.astype(np.float64) - exact) <= np.abs(exact) * 2.0 ** -11 + 1e-3)



def test_float16_graph_computes_in_float32_and_rounds_once(tmp_path):
    """On a CPU target a float16 graph computes in float32: a scaled matmul then a softmax, rounded
    once at the output, lands within half an ulp of the exact value (each op rounded to float16,
    as TVM computes it, is off by an ulp or more: the conformance suite's float16 attention). An
    explicit Cast from float32 to float16 still rounds, as written; the model's types stay float16."""
    rng = np.random.default_rng(1)
    q = rng.standard_normal((4, 64)).astype(np.float16)
    k = rng.standard_normal((64, 16)).astype(np.float16)
    x = rng.standard_normal((4, 16)).astype(np.float32)
    s = np.array(0.125, np.float16)
    model, path = _save(tmp_path, [helper.make_node("Mul", ["q", "s"], ["qs"]),
                                   helper.make_node("MatMul", ["qs", "k"], ["qk"]),
                                   helper.make_node("Softmax", ["qk"], ["p"], axis=-1),
                                   helper.make_node("Cast", ["x"], ["xh"], to=T.FLOAT16),
                                   helper.make_node("Cast", ["xh"], ["xr"], to=T.FLOAT)],
                        [helper.make_tensor_value_info("q", T.FLOAT16, [4, 64]),
                         helper.make_tensor_value_info("x", T.FLOAT, [4, 16])],
                        [helper.make_tensor_value_info("p", T.FLOAT16, [4, 16]),
                         helper.make_tensor_value_info("xr", T.FLOAT, [4, 16])],
                        [onnx.numpy_helper.from_array(k, "k"), onnx.numpy_helper.from_array(s, "s")])
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a")
    assert [i["dtype"] for i in art.inputs] == ["float16", "float32"]
    out = art.run({"q": q, "x": x})
    qk = (q.astype(np.float64) * 0.125) @ k.astype(np.float64)
    e = np.exp(qk - qk.max(-1, keepdims=True))
    exact = e / e.sum(-1, keepdims=True)
    assert out["p"].dtype == np.float16
    np.testing.assert_array_equal(out["p"], exact.astype(np.float16))  # the exact value, rounded once
    np.testing.assert_array_equal(out["xr"], x.astype(np.float16).astype(np.float32))  # the explicit Cast rounds


@pytest.mark.parametrize("ratio_const", [False, True])
def test_training_dropout_compiles_where_it_drops_nothing(tmp_path, ratio_const):
    """Dropout in training mode with its ratio fed at run time is the identity at ratio 0 (as ONNX
    Runtime computes it) and stops the run, naming the node, at any other ratio; the manifest gives
    the ratio its one accepted value, which random inputs feed. With a non-zero constant ratio it
    would drop at random: refused before import."""
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    inits = [onnx.numpy_helper.from_array(np.array(True), "t")]
    inputs = [helper.make_tensor_value_info("x", T.FLOAT, [3, 4])]
    if ratio_const:
        inits.append(onnx.numpy_helper.from_array(np.array(0.5, np.float32), "r"))
    else:
        inputs.append(helper.make_tensor_value_info("r", T.FLOAT, []))
    model, path = _save(tmp_path, [helper.make_node("Dropout", ["x", "r", "t"], ["y", "mask"], name="drop")], inputs,
                        [helper.make_tensor_value_info("y", T.FLOAT, [3, 4]),
                         helper.make_tensor_value_info("mask", T.BOOL, [3, 4])], inits)
    if ratio_const:
        with pytest.raises(DeployError, match="Dropout in training mode.*drop"):
            pipeline.compile(path, "x86-64", output=tmp_path / "a")
        return
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a")  # the built-in check ran at ratio 0
    assert [i.get("only") for i in art.inputs] == [None, 0.0]
    assert art.random_inputs()["r"] == 0
    feed = {"x": x, "r": np.array(0.0, np.float32)}
    out, want = art.run(feed), ort_run(model, feed)
    np.testing.assert_array_equal(out["y"], want["y"])
    np.testing.assert_array_equal(out["mask"], want["mask"])
    with pytest.raises(DeployError, match=r"Dropout 'drop' runs in training mode here \(r = 0.5\).*feed r = 0"):
        art.run({"x": x, "r": np.array(0.5, np.float32)})

def test_reduce_max_of_all_minus_inf_is_minus_inf(tmp_path):
    x = np.array([[-np.inf, -np.inf, -np.inf], [1.0, -np.inf, 2.0]], np.float32)
    model, path = _save(tmp_path, [helper.make_node("ReduceMax", ["x", "axes"], ["mx"], keepdims=0),
                                   helper.make_node("Neg", ["x"], ["n"]),
                                   helper.make_node("ReduceMin", ["n", "axes"], ["mn"], keepdims=0)],
                        [helper.make_tensor_value_info("x", T.FLOAT, [2, 3])],
                        [helper.make_tensor_value_info("mx", T.FLOAT, [2]), helper.make_tensor_value_info("mn", T.FLOAT, [2])],
                        [onnx.numpy_helper.from_array(np.array([1], np.int64), "axes")], opset=18)
    out = pipeline.compile(path, "x86-64", output=tmp_path / "a").run({"x": x})
    np.testing.assert_array_equal(out["mx"], [-np.inf, 2.0])  # TVM alone: -3.4e38 for the first row
    np.testing.assert_array_equal(out["mn"], [np.inf, -2.0])


@pytest.mark.parametrize("shape", [[2, 128, 96], [3, 5]])
def test_dynamic_quantize_linear_matches_ort(tmp_path, shape):
    """DynamicQuantizeLinear: scale, zero point and values exactly ONNX Runtime's, on the two-stage
    min/max (a size that is a multiple of 64) and on TVM's one-stage reduction (15 elements), for
    inputs of both signs, all positive (the range is widened to 0) and all negative."""
    model, path = _save(tmp_path, [helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])],
                        [helper.make_tensor_value_info("x", T.FLOAT, shape)],
                        [helper.make_tensor_value_info("y", T.UINT8, shape), helper.make_tensor_value_info("s", T.FLOAT, []),
                         helper.make_tensor_value_info("z", T.UINT8, [])])
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a")
    rng = np.random.default_rng(0)
    for x in (rng.standard_normal(shape) * 3, np.abs(rng.standard_normal(shape)) + 0.5,
              -np.abs(rng.standard_normal(shape)) - 0.5):
        x = x.astype(np.float32)
        x.flat[len(x.flat) // 2] = 7.5 if x.mean() > 0 else -7.5  # the extreme mid-tensor, not in the first column
        ours, ref = art.run({"x": x}), ort_run(path, {"x": x})
        for k in ("y", "s", "z"):
            np.testing.assert_array_equal(ours[k], ref[k], err_msg=k)


def test_nms_takes_thresholds_fed_at_run_time(tmp_path):
    boxes = np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, -0.1, 1, 0.9], [0, 10, 1, 11], [0, 10.1, 1, 11.1],
                       [0, 100, 1, 101]]], np.float32)
    scores = np.array([[[0.9, 0.75, 0.6, 0.95, 0.5, 0.3]]], np.float32)
    model, path = _save(
        tmp_path, [helper.make_node("NonMaxSuppression", ["b", "s", "k", "iou", "thr"], ["sel"])],
        [helper.make_tensor_value_info("b", T.FLOAT, [1, 6, 4]), helper.make_tensor_value_info("s", T.FLOAT, [1, 1, 6]),
         helper.make_tensor_value_info("iou", T.FLOAT, [1]), helper.make_tensor_value_info("thr", T.FLOAT, [1])],
        [helper.make_tensor_value_info("sel", T.INT64, ["n", 3])],
        [onnx.numpy_helper.from_array(np.array([3], np.int64), "k")], opset=11)
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a")
    for iou, thr, shift in ((0.5, 0.4, 0), (0.5, 0.0, 0), (0.0, 0.0, 0), (0.5, -0.6, -1.0)):  # last: logits < 0
        feed = {"b": boxes, "s": scores + np.float32(shift), "iou": np.array([iou], np.float32),
                "thr": np.array([thr], np.float32)}
        want = ReferenceEvaluator(model).run(None, feed)[0]
        np.testing.assert_array_equal(art.run(feed)["sel"], want)  # TVM alone: 0.5 and 0.0 whatever was fed, no box under 0


def test_nms_keeps_a_box_whose_iou_equals_the_threshold(tmp_path):
    boxes = np.array([[[0, 0, 1, 1], [0.5, 0.5, 1.5, 1.5]]], np.float32)  # IoU 1/7
    model, path = _save(
        tmp_path, [helper.make_node("NonMaxSuppression", ["b", "s", "k", "iou"], ["sel"])],
        [helper.make_tensor_value_info("b", T.FLOAT, [1, 2, 4]), helper.make_tensor_value_info("s", T.FLOAT, [1, 1, 2])],
        [helper.make_tensor_value_info("sel", T.INT64, ["n", 3])],
        [onnx.numpy_helper.from_array(np.array([3], np.int64), "k"),
         onnx.numpy_helper.from_array(np.array([1 / 7], np.float32), "iou")], opset=11)
    feed = {"b": boxes, "s": np.array([[[0.9, 0.8]]], np.float32)}
    got = pipeline.compile(path, "x86-64", output=tmp_path / "a").run(feed)["sel"]
    np.testing.assert_array_equal(got, ReferenceEvaluator(model).run(None, feed)[0])
    assert len(got) == 2


def test_roi_align_max_is_refused_up_front(tmp_path):
    model, path = _save(
        tmp_path, [helper.make_node("RoiAlign", ["x", "rois", "idx"], ["y"], mode="max", name="pool")],
        [helper.make_tensor_value_info("x", T.FLOAT, [1, 1, 8, 8]), helper.make_tensor_value_info("rois", T.FLOAT, [2, 4]),
         helper.make_tensor_value_info("idx", T.INT64, [2])],
        [helper.make_tensor_value_info("y", T.FLOAT, [2, 1, 2, 2])], opset=16)
    with pytest.raises(DeployError, match=r"RoiAlign with mode=max .*pool"):
        pipeline.compile(path, "x86-64", output=tmp_path / "a")


def test_an_op_onnx_defines_as_a_function_is_expanded(tmp_path):
    """SwiGLU (opset 28) has no TVM converter; ONNX's function body (Swish, Mul) is imported instead."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 16)).astype(np.float32), rng.standard_normal((2, 16)).astype(np.float32)
    model, path = _save(tmp_path, [helper.make_node("SwiGLU", ["a", "b"], ["y"], alpha=1.5)],
                        [helper.make_tensor_value_info("a", T.FLOAT, [2, 16]), helper.make_tensor_value_info("b", T.FLOAT, [2, 16])],
                        [helper.make_tensor_value_info("y", T.FLOAT, [2, 16])], opset=28)
    out = pipeline.compile(path, "x86-64", output=tmp_path / "a").run({"a": a, "b": b})["y"]
    np.testing.assert_allclose(out, a * (1 / (1 + np.exp(-1.5 * a))) * b, rtol=1e-5, atol=1e-6)


def _scan_model(tmp_path, reverse: int):
    """A running sum over axis 1 (a Scan over time), its final state and every step's output."""
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_t"], ["s_out"]), helper.make_node("Mul", ["s_out", "k"], ["y_t"])],
        "body", [helper.make_tensor_value_info("s_in", T.FLOAT, [3]), helper.make_tensor_value_info("x_t", T.FLOAT, [3])],
        [helper.make_tensor_value_info("s_out", T.FLOAT, [3]), helper.make_tensor_value_info("y_t", T.FLOAT, [3])])
    scan = helper.make_node("Scan", ["s0", "x"], ["s", "ys"], body=body, num_scan_inputs=1, scan_input_axes=[1],
                            scan_input_directions=[reverse], scan_output_axes=[-1])
    return _save(tmp_path, [scan],
                 [helper.make_tensor_value_info("s0", T.FLOAT, [3]), helper.make_tensor_value_info("x", T.FLOAT, [3, 5])],
                 [helper.make_tensor_value_info("s", T.FLOAT, [3]), helper.make_tensor_value_info("ys", T.FLOAT, [3, 5])],
                 [onnx.numpy_helper.from_array(np.float32(2.0), "k")], opset=16, name=f"scan{reverse}.onnx")


@pytest.mark.parametrize("reverse", [0, 1])
def test_scan_of_known_length_is_unrolled(tmp_path, reverse):
    model, path = _scan_model(tmp_path, reverse)
    feed = {"s0": np.arange(3, dtype=np.float32), "x": np.random.default_rng(4).standard_normal((3, 5)).astype(np.float32)}
    out = pipeline.compile(path, "x86-64", output=tmp_path / "a").run(feed)
    want = ort_run(path, feed)  # (onnx's reference evaluator has no Scan over axis 1 or reversed)
    for name in ("s", "ys"):
        np.testing.assert_allclose(out[name], want[name], rtol=1e-5, atol=1e-6)


def test_for_loop_unrolled_and_while_loop_refused_with_the_reason(tmp_path):
    def loop_model(cond_out_node, name):
        body = helper.make_graph(
            [helper.make_node("Cast", ["i"], ["fi"], to=T.FLOAT), helper.make_node("Add", ["acc_in", "fi"], ["acc_out"]),
             helper.make_node("Identity", ["acc_out"], ["step"]), cond_out_node],
            "body", [helper.make_tensor_value_info("i", T.INT64, []), helper.make_tensor_value_info("c", T.BOOL, []),
                     helper.make_tensor_value_info("acc_in", T.FLOAT, [2])],
            [helper.make_tensor_value_info("c_out", T.BOOL, []), helper.make_tensor_value_info("acc_out", T.FLOAT, [2]),
             helper.make_tensor_value_info("step", T.FLOAT, [2])])
        loop = helper.make_node("Loop", ["n", "", "x"], ["acc", "steps"], body=body, name="accumulate")
        return _save(tmp_path, [loop], [helper.make_tensor_value_info("x", T.FLOAT, [2])],
                     [helper.make_tensor_value_info("acc", T.FLOAT, [2]), helper.make_tensor_value_info("steps", T.FLOAT, [4, 2])],
                     [onnx.numpy_helper.from_array(np.array(4, np.int64), "n")], opset=16, name=name)

    model, path = loop_model(helper.make_node("Identity", ["c"], ["c_out"]), "for.onnx")
    feed = {"x": np.array([1.0, -1.0], np.float32)}
    out = pipeline.compile(path, "x86-64", output=tmp_path / "a").run(feed)
    want = ort_run(path, feed)
    np.testing.assert_allclose(out["acc"], want["acc"])
    np.testing.assert_allclose(out["steps"], want["steps"])
    np.testing.assert_allclose(out["acc"], [7.0, 5.0])  # x + 0 + 1 + 2 + 3
    _, path = loop_model(helper.make_node("Less", ["fi", "fi"], ["c_out"]), "while.onnx")  # the body decides: a while-loop
    with pytest.raises(DeployError, match=r"Loop that deploy could not unroll .*for-loop.*accumulate"):
        pipeline.compile(path, "x86-64", output=tmp_path / "b")
