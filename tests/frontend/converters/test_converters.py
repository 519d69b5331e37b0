"""deploy's converters for ops TVM 0.27 lacks, on forms the ONNX node tests do not cover, against
ONNX Runtime: DeformConv with groups, offset groups, strides, dilations, pads, a mask and a bias,
its taps moved partly outside the image; TensorScatter's decode step with write indices fed at
run time, circular; Col2Im with strides, pads and dilations together."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper, numpy_helper

import pipeline
from conftest import ort_run


def _save(tmp_path, node, inputs, outputs, inits=(), opset=24):
    g = helper.make_graph([node], "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    onnx.checker.check_model(model)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return path


def test_deform_conv_grouped_strided_with_mask_matches_ort(tmp_path):
    rng = np.random.default_rng(0)
    n, ic, oc, h, w, k, group, og = 2, 8, 6, 11, 13, 3, 2, 4
    pads, strides, dil = [1, 2, 1, 0], [2, 1], [1, 2]
    oh = (h + pads[0] + pads[2] - dil[0] * (k - 1) - 1) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - dil[1] * (k - 1) - 1) // strides[1] + 1
    weights = rng.standard_normal((oc, ic // group, k, k)).astype(np.float32)
    bias = rng.standard_normal(oc).astype(np.float32)
    node = helper.make_node("DeformConv", ["x", "w", "offset", "b", "mask"], ["y"], group=group, offset_group=og,
                            kernel_shape=[k, k], pads=pads, strides=strides, dilations=dil)
    path = _save(tmp_path, node,
                 [helper.make_tensor_value_info("x", T.FLOAT, [n, ic, h, w]),
                  helper.make_tensor_value_info("offset", T.FLOAT, [n, og * k * k * 2, oh, ow]),
                  helper.make_tensor_value_info("mask", T.FLOAT, [n, og * k * k, oh, ow])],
                 [helper.make_tensor_value_info("y", T.FLOAT, [n, oc, oh, ow])], [("w", weights), ("b", bias)])
    feed = {"x": rng.standard_normal((n, ic, h, w)).astype(np.float32),
            "offset": (3 * rng.standard_normal((n, og * k * k * 2, oh, ow))).astype(np.float32),  # some taps leave the image
            "mask": rng.uniform(0, 1, (n, og * k * k, oh, ow)).astype(np.float32)}
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a")
    np.testing.assert_allclose(art.run(feed)["y"], ort_run(path, feed)["y"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter_with_run_time_write_indices_matches_ort(tmp_path, mode):
    rng = np.random.default_rng(1)
    past = rng.standard_normal((3, 2, 8, 4)).astype(np.float32)
    update = rng.standard_normal((3, 2, 3, 4)).astype(np.float32)
    node = helper.make_node("TensorScatter", ["past", "update", "idx"], ["present"], axis=2, mode=mode)
    path = _save(tmp_path, node, [helper.make_tensor_value_info("past", T.FLOAT, [3, 2, 8, 4]),
                                  helper.make_tensor_value_info("update", T.FLOAT, [3, 2, 3, 4]),
                                  helper.make_tensor_value_info("idx", T.INT64, [3])],
                 [helper.make_tensor_value_info("present", T.FLOAT, [3, 2, 8, 4])])
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a")
    for idx in ([0, 2, 5], [6, 7, 1] if mode == "circular" else [5, 1, 0]):  # circular: writes wrap around
        feed = {"past": past, "update": update, "idx": np.array(idx, np.int64)}
        np.testing.assert_array_equal(art.run(feed)["present"], ort_run(path, feed)["present"])


def test_col2im_strided_padded_dilated_matches_ort(tmp_path):
    rng = np.random.default_rng(2)
    image, block, strides, pads, dil = [9, 10], [2, 3], [2, 1], [1, 0, 2, 1], [2, 1]
    nb = [(image[d] + pads[d] + pads[d + 2] - dil[d] * (block[d] - 1) - 1) // strides[d] + 1 for d in range(2)]
    x = rng.standard_normal((2, 3 * 6, nb[0] * nb[1])).astype(np.float32)
    node = helper.make_node("Col2Im", ["x", "image", "block"], ["y"], strides=strides, pads=pads, dilations=dil)
    path = _save(tmp_path, node, [helper.make_tensor_value_info("x", T.FLOAT, list(x.shape))],
                 [helper.make_tensor_value_info("y", T.FLOAT, [2, 3, *image])],
                 [("image", np.array(image, np.int64)), ("block", np.array(block, np.int64))])
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a")
    np.testing.assert_allclose(art.run({"x": x})["y"], ort_run(path, {"x": x})["y"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("storage_order", [0, 1])
def test_max_pool_indices_into_max_unpool_match_ort(tmp_path, storage_order):
    """SegNet's encoder-decoder step: MaxPool's Indices (ties among equal maxima included: the input
    is rounded to a few values; ceil mode, dilation, pads) fed to MaxUnpool."""
    rng = np.random.default_rng(3)
    x = np.round(rng.standard_normal((2, 3, 12, 12))).astype(np.float32)
    nodes = [helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 0, 1],
                              dilations=[1, 2], ceil_mode=1, storage_order=storage_order)]
    if storage_order == 0:  # MaxUnpool reads row-major indices
        nodes.append(helper.make_node("MaxUnpool", ["y", "i"], ["z"], kernel_shape=[2, 2], strides=[2, 2]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [2, 3, 12, 12])],
                          [helper.make_tensor_value_info("y", T.FLOAT, [2, 3, 6, 6]),
                           helper.make_tensor_value_info("i", T.INT64, [2, 3, 6, 6])]
                          + ([helper.make_tensor_value_info("z", T.FLOAT, [2, 3, 12, 12])] if storage_order == 0 else []))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)], ir_version=8)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    out, want = pipeline.compile(path, "x86-64", output=tmp_path / "a").run({"x": x}), ort_run(path, {"x": x})
    for name in want:
        np.testing.assert_array_equal(out[name], want[name], err_msg=name)


def test_max_unpool_output_shape_inferred_compiles_other_refused(tmp_path):
    """MaxUnpool's output_shape as a constant (TVM's converter failed on it): the inferred shape
    compiles and matches ORT; another shape, where ONNX's reference and ORT disagree, is refused."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 8, 6)).astype(np.float32)
    for shape, ok in (([1, 2, 8, 6], True), ([1, 2, 9, 7], False)):
        nodes = [helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], strides=[2, 2]),
                 helper.make_node("MaxUnpool", ["y", "i", "shape"], ["z"], kernel_shape=[2, 2], strides=[2, 2])]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [1, 2, 8, 6])],
                              [helper.make_tensor_value_info("z", T.FLOAT, shape)],
                              [numpy_helper.from_array(np.array(shape, np.int64), "shape")])
        path = tmp_path / f"m{ok}.onnx"
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)], ir_version=8), path)
        if ok:
            art = pipeline.compile(path, "x86-64", output=tmp_path / "a")
            np.testing.assert_array_equal(art.run({"x": x})["z"], ort_run(path, {"x": x})["z"])
        else:
            with pytest.raises(pipeline.DeployError, match="MaxUnpool with output_shape .* ONNX's reference and ONNX Runtime"):
                pipeline.compile(path, "x86-64", output=tmp_path / "b")


def test_split_with_a_zero_size_part_matches_ort(tmp_path):
    x = np.arange(20, dtype=np.float32).reshape(4, 5)
    node = helper.make_node("Split", ["x", "s"], ["a", "b", "c"], axis=1)
    path = _save(tmp_path, node, [helper.make_tensor_value_info("x", T.FLOAT, [4, 5])],
                 [helper.make_tensor_value_info(n, T.FLOAT, [4, k]) for n, k in zip("abc", (2, 0, 3))],
                 [("s", np.array([2, 0, 3], np.int64))], opset=18)
    out, want = pipeline.compile(path, "x86-64", output=tmp_path / "a").run({"x": x}), ort_run(path, {"x": x})
    for n in "abc":
        np.testing.assert_array_equal(out[n], want[n])
        assert out[n].shape == want[n].shape


@pytest.mark.parametrize("mode,lo", [("TFIDF", 1), ("IDF", 2), ("TF", 3)])
def test_tfidf_vectorizer_modes_and_trigrams_match_ort(tmp_path, mode, lo):
    """Weights, 1- to 3-grams, skips, a minimum n-gram length, int32 tokens in batches."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, (3, 14)).astype(np.int32)
    pool = [0, 1, 3, 0, 1, 1, 2, 3, 3, 0, 1, 2, 3, 3, 0]  # 3 unigrams, 3 bigrams, 2 trigrams
    node = helper.make_node("TfIdfVectorizer", ["x"], ["y"], mode=mode, min_gram_length=lo, max_gram_length=3,
                            max_skip_count=2, ngram_counts=[0, 3, 9], ngram_indexes=[7, 0, 2, 5, 1, 3, 6, 4],
                            pool_int64s=pool, weights=[0.5, 1.5, 2.0, 0.25, 3.0, 1.0, 0.75, 2.5])
    path = _save(tmp_path, node, [helper.make_tensor_value_info("x", T.INT32, [3, 14])],
                 [helper.make_tensor_value_info("y", T.FLOAT, [3, 8])], opset=12)
    out, want = pipeline.compile(path, "x86-64", output=tmp_path / "a").run({"x": x}), ort_run(path, {"x": x})
    assert want["y"].any()
    np.testing.assert_allclose(out["y"], want["y"], rtol=1e-6)


def test_batch_norm_in_training_mode_uses_batch_statistics_like_ort(tmp_path):
    """BatchNormalization with training_mode=1 normalizes by the batch's own mean and variance
    (and updates the running ones), as ORT computes it; BiT exports its weight standardization so."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32) * 3 + 1
    stats = [("s", rng.uniform(0.5, 2, 3)), ("b", rng.standard_normal(3)), ("m", rng.standard_normal(3)),
             ("v", rng.uniform(0.5, 2, 3))]
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"], training_mode=1,
                            momentum=0.8, epsilon=1e-3)
    path = _save(tmp_path, node, [helper.make_tensor_value_info("x", T.FLOAT, [2, 3, 5, 4])],
                 [helper.make_tensor_value_info("y", T.FLOAT, [2, 3, 5, 4]),
                  helper.make_tensor_value_info("rm", T.FLOAT, [3]), helper.make_tensor_value_info("rv", T.FLOAT, [3])],
                 [(k, v.astype(np.float32)) for k, v in stats], opset=15)
    out, want = pipeline.compile(path, "x86-64", output=tmp_path / "a").run({"x": x}), ort_run(path, {"x": x})
    for name in ("y", "rm", "rv"):
        np.testing.assert_allclose(out[name], want[name], atol=1e-5, rtol=1e-5, err_msg=name)
