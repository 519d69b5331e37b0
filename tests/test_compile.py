"""End to end on models built with onnx.helper: compile for the host, run, compare with ONNX Runtime."""

import json

import numpy as np
import onnx
import pytest

import pipeline
from conftest import assert_matches_ort
from pipeline.manifest import MANIFEST


@pytest.fixture(scope="module")
def cnn_artifact(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("art") / "cnn"
    return pipeline.compile(models / "cnn.onnx", "x86-64", output=out)


def test_compile_matches_onnxruntime(cnn_artifact, models):
    assert sorted(p.name for p in cnn_artifact.path.iterdir()) == ["layers.json", "manifest.json", "model.so"]
    assert_matches_ort(pipeline.load(cnn_artifact.path), models / "cnn.onnx")


def test_manifest_says_what_the_artifact_is(cnn_artifact, models):
    m = json.loads((cnn_artifact.path / MANIFEST).read_text())
    from pipeline.files import sha256_file

    assert m["model"]["sha256"] == sha256_file(models / "cnn.onnx")
    assert m["model"]["inputs"] == [{"name": "image", "dtype": "float32", "shape": [1, 3, 32, 32]}]
    assert m["model"]["outputs"][0]["shape"] == [1, 10]
    assert m["target"]["preset"] == "x86-64" and m["target"]["tvm_target"]["kind"] == "llvm"
    assert "avx2" in m["target"]["cpu_features"]  # every x86 host this runs on has it
    assert m["library"]["sha256"] == sha256_file(cnn_artifact.path / "model.so")
    assert m["library"]["elf_machine"] == "x86_64"
    assert {"tvm", "tvm_ffi", "llvm", "onnx", "deploy"} <= set(m["versions"])
    assert "FoldBatchnormToConv2D" in " ".join(m["passes"]["simplify"])
    assert m["build"]["time_utc"] and m["options"]["opt_level"] == 3


@pytest.mark.parametrize("opt_level", [0, 1, 2])
def test_opt_levels_all_correct(models, tmp_path, opt_level):
    art = pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path / "a", opt_level=opt_level)
    assert_matches_ort(art, models / "cnn.onnx")


def test_dynamic_batch_bound_by_input_shape(models, tmp_path):
    art = pipeline.compile(models / "cnn_dyn.onnx", "x86-64", output=tmp_path / "a", input_shapes={"image": [4, 3, 32, 32]})
    assert art.inputs[0]["shape"] == [4, 3, 32, 32]
    assert_matches_ort(art, models / "cnn_dyn.onnx")


def test_dump_ir_shows_each_stage(models, tmp_path):
    pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path / "a", dump_ir=tmp_path / "ir")
    files = sorted(p.name for p in (tmp_path / "ir").iterdir())
    assert files == ["00-imported.py", "01-simplify.py", "02-conv1d-as-conv2d.py", "03-deconv-as-conv.py", "04-layout.py",
                     "05-winograd.py", "06-lower.py"]
    imported = (tmp_path / "ir" / "00-imported.py").read_text()
    simplified = (tmp_path / "ir" / "01-simplify.py").read_text()
    lowered = (tmp_path / "ir" / "06-lower.py").read_text()
    # batch norm was folded into the convolutions (by clean-up), constant reshapes by FoldConstant
    assert "batch_norm" not in imported and imported.count("R.nn.conv2d") == 2
    assert "R.reshape(metadata" in imported and "R.reshape(metadata" not in simplified
    assert "fused_" in lowered and "T.prim_func" in lowered                 # operator fusion happened


def test_run_cli_saves_outputs(cnn_artifact, cli, tmp_path):
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rc, out, err = cli("run", cnn_artifact.path, "--input", f"image={tmp_path / 'x.npy'}", "-o", tmp_path / "out")
    assert rc == 0, err
    saved = np.load(tmp_path / "out" / "probs.npy")
    np.testing.assert_allclose(saved, pipeline.load(cnn_artifact.path)({"image": x})["probs"])
    assert abs(saved.sum() - 1) < 1e-4


def test_verify_and_bench_cli(cnn_artifact, cli, models):
    rc, out, err = cli("verify", cnn_artifact.path, "--model", models / "cnn.onnx")
    assert rc == 0 and out.startswith("ok") and "max abs error" in out
    rc, out, err = cli("bench", cnn_artifact.path, "--model", models / "cnn.onnx", "--repeat", "3", "--seconds", "0.2", "--json")
    assert rc == 0, err
    r = json.loads(out)
    for engine in ("deploy", "onnxruntime"):
        lat = r[engine]
        # at least one inference a turn: how many more fit in --seconds depends on the machine's load
        assert 0 < lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"] <= lat["p99_ms"] and lat["samples"] >= 3
        assert r["memory"][engine]["peak_rss_mb"] > 10  # measured in the engine's own process
    # one ratio, the one the medians give, with its definition
    assert r["ratio"] == pytest.approx(r["deploy"]["median_ms"] / r["onnxruntime"]["median_ms"])
    assert "median" in r["ratio_definition"] and len(r["turn_ratios"]) == 3
    rc, out, err = cli("bench", cnn_artifact.path, "--model", models / "cnn.onnx", "--repeat", "2", "--seconds", "0.1")
    assert rc == 0, err
    p50 = {ln.split()[0]: float(ln.split()[2]) for ln in out.splitlines() if ln.split()[0] in ("deploy", "onnxruntime")}
    printed = float(out.split("ratio")[1].split("x")[0])
    assert printed == pytest.approx(p50["deploy"] / p50["onnxruntime"], rel=2e-3, abs=1.5e-3)


def test_verify_fails_on_a_different_model(cnn_artifact, cli, tmp_path):
    from pipeline import examples

    onnx.save(examples.tiny_cnn(seed=5), tmp_path / "other.onnx")
    rc, out, err = cli("verify", cnn_artifact.path, "--model", tmp_path / "other.onnx")
    assert rc == 1 and "FAIL" in out and "differ from ONNX Runtime" in err
    assert "not the file this artifact was compiled from" in err


def test_inspect(cli, models, tmp_path):
    rc, out, err = cli("inspect", models / "cnn_dyn.onnx", "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert info["opset"] == 17 and info["inputs"][0]["shape"] == ["N", 3, 32, 32]
    assert info["op_counts"]["Conv"] == 2 and info["param_count"] == 5578 and info["unsupported"] == {}
    assert info["gflop"] is None  # dynamic batch: no count
    rc, out, _ = cli("inspect", models / "cnn.onnx", "--json")
    # conv1 16x3x3x3 at 32x32, conv2 32x16x3x3 at 16x16, fc 10x32: 2 flops per multiply-add
    expected = 2 * (16 * 27 * 32 * 32 + 32 * 144 * 16 * 16 + 10 * 32) / 1e9
    assert json.loads(out)["gflop"] == pytest.approx(expected, rel=1e-3)


def test_rebuilt_artifact_at_the_same_path_runs_the_new_build(tmp_path):
    """dlopen caches by path: a library rebuilt in place must still load its new code."""
    from pipeline import examples

    for seed in (1, 2):
        onnx.save(examples.tiny_cnn(seed=seed), tmp_path / f"m{seed}.onnx")
    x = {"image": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    first = pipeline.compile(tmp_path / "m1.onnx", "x86-64", output=tmp_path / "a")
    assert_matches_ort(first, tmp_path / "m1.onnx", x)
    second = pipeline.compile(tmp_path / "m2.onnx", "x86-64", output=tmp_path / "a", force=True)
    assert_matches_ort(second, tmp_path / "m2.onnx", x)


def _save(path, nodes, inputs, out_shape, inits=()):
    from onnx import TensorProto, helper

    g = helper.make_graph(nodes, path.stem, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                          initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def test_if_is_imported_and_both_branches_match_onnxruntime(tmp_path):
    """TVM's importer converts If itself (not through its converter map): the pre-check must let it in."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    branch = {k: helper.make_graph([helper.make_node(op, ["x"], [k])], k, [],
                                   [helper.make_tensor_value_info(k, TensorProto.FLOAT, [2, 3])])
              for k, op in (("t", "Relu"), ("e", "Neg"))}
    path = _save(tmp_path / "if.onnx", [helper.make_node("If", ["c"], ["y"], then_branch=branch["t"],
                                                         else_branch=branch["e"])],
                 [x, helper.make_tensor_value_info("c", TensorProto.BOOL, [])], [2, 3])
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a")
    xv = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    for c in (True, False):
        assert_matches_ort(art, path, {"x": xv, "c": np.array(c)})


def test_if_nested_and_inside_a_loop_body_match_onnxruntime(tmp_path):
    """A Loop (unrolled) whose body holds an If whose then-branch holds another If, each branch
    using names from the scopes around it (and the else-branch an initializer named like a value
    of the then-branch): clean-up moves every branch into the graph, renamed, for all four
    combinations of the two conditions."""
    from onnx import TensorProto, helper, numpy_helper

    def v(name, shape, t=TensorProto.FLOAT):
        return helper.make_tensor_value_info(name, t, shape)

    inner = {k: helper.make_graph([helper.make_node(op, ["a", "X"], [k])], k, [], [v(k, [2, 3])])
             for k, op in (("it", "Add"), ("ie", "Mul"))}
    then = helper.make_graph([helper.make_node("Relu", ["s_in"], ["a"]),
                              helper.make_node("If", ["c2"], ["r"], then_branch=inner["it"], else_branch=inner["ie"])],
                             "t", [], [v("r", [2, 3])])
    other = helper.make_graph([helper.make_node("Sub", ["s_in", "a"], ["d"])], "e", [], [v("d", [2, 3])],
                              [numpy_helper.from_array(np.full((2, 3), 0.5, np.float32), "a")])
    body = helper.make_graph([helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                              helper.make_node("If", ["c"], ["s_out"], then_branch=then, else_branch=other),
                              helper.make_node("Neg", ["s_out"], ["scan"])], "body",
                             [v("i", [], TensorProto.INT64), v("cond_in", [], TensorProto.BOOL), v("s_in", [2, 3])],
                             [v("cond_out", [], TensorProto.BOOL), v("s_out", [2, 3]), v("scan", [2, 3])])
    trip = numpy_helper.from_array(np.array(3, np.int64), "trip")
    g = helper.make_graph([helper.make_node("Loop", ["trip", "", "X"], ["s", "ys"], body=body)], "g",
                          [v("c", [], TensorProto.BOOL), v("c2", [1], TensorProto.BOOL), v("X", [2, 3])],
                          [v("s", [2, 3]), v("ys", [3, 2, 3])], [trip])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    onnx.save(m, str(tmp_path / "loop_if.onnx"))
    art = pipeline.compile(tmp_path / "loop_if.onnx", "x86-64", output=tmp_path / "a")
    xv = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    for c in (True, False):
        for c2 in (True, False):
            assert_matches_ort(art, tmp_path / "loop_if.onnx", {"X": xv, "c": np.array(c), "c2": np.array([c2])})


def test_a_layout_stage_that_fails_falls_back_per_op_and_the_manifest_says_so(tmp_path):
    """A variadic Sum next to a Conv breaks TVM's layout inference ("Invalid SLayout"): the Sum
    keeps its layout (manifest: layout.kept), the conv is NHWC, and the model still matches ORT."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(1).standard_normal((4, 4, 3, 3)).astype(np.float32), "w")
    path = _save(tmp_path / "conv_sum.onnx",
                 [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Sum", ["c", "r", "x"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])], [1, 4, 8, 8], [w])
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a", opt_level=3)
    assert_matches_ort(art, path)
    assert "fallbacks" not in art.manifest and "layout" in art.manifest["passes"]
    assert [k["onnx_op"] for k in art.manifest["layout"]["kept"]] == ["Sum"]


def test_no_layout_pass_without_convolutions(tmp_path):
    """A variadic Max (stack + reduce) crashed TVM's layout inference at -O 3 although the model has
    no convolution to lay out: the layout pass now runs only where there is a conv2d."""
    from onnx import TensorProto, helper

    path = _save(tmp_path / "vmax.onnx", [helper.make_node("Relu", ["x"], ["r"]),
                                          helper.make_node("Max", ["x", "r", "x"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])], [1, 4, 8, 8])
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a", opt_level=3)
    assert_matches_ort(art, path)
    assert "fallbacks" not in art.manifest


def test_inspect_table_shows_named_dims(cli, tmp_path):
    """A first dim named like `batch` made the table library read "[batch, 3, 32, 32]" as a markup tag."""
    from pipeline import examples

    onnx.save(examples.tiny_cnn(batch="batch"), str(tmp_path / "m.onnx"))
    rc, out, err = cli("inspect", tmp_path / "m.onnx")
    assert rc == 0, err
    assert "[batch, 3, 32, 32]" in out


def test_weight_prepacking_falls_back_per_kernel(tmp_path):
    """TVM's SplitLayoutRewritePreproc fails on TopK (no compute block): TopK sits the split out,
    and the matmul beside it still gets its weights prepacked at build time (before, one such
    kernel cost the whole model its prepacking: RoBERTa's CumSum, 3x slower)."""
    from onnx import TensorProto, helper, numpy_helper

    from pipeline import layers

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([2], np.int64), "k"),
             numpy_helper.from_array((rng.standard_normal((512, 256)) * 0.05).astype(np.float32), "w")]
    g = helper.make_graph([helper.make_node("TopK", ["x", "k"], ["y", "i"], axis=1),
                           helper.make_node("MatMul", ["a", "w"], ["z"])], "topk",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5]),
                           helper.make_tensor_value_info("a", TensorProto.FLOAT, [4, 16, 512])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2]),
                           helper.make_tensor_value_info("i", TensorProto.INT64, [3, 2]),
                           helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, 16, 256])], initializer=inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "topk.onnx"))
    art = pipeline.compile(tmp_path / "topk.onnx", "x86-64", output=tmp_path / "a")
    assert_matches_ort(art, tmp_path / "topk.onnx")
    (fell,) = art.manifest["fallbacks"]
    assert fell["stage"] == "prepack weights" and len(fell["functions"]) == 1 and "topk" in fell["functions"][0]
    kernels = [k["kernel"] for k in layers.read(art.path)["kernels"]]
    assert any("matmul" in k and k.endswith("_prepacked") for k in kernels), kernels


def test_layer_normalization_mean_and_inv_std_dev_outputs(tmp_path):
    """TVM's converter returned scalar zeros for LayerNormalization's Mean and InvStdDev."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    w = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    g = helper.make_graph([helper.make_node("LayerNormalization", ["x", "w", "b"], ["y", "mean", "inv"], axis=-1)],
                          "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4]),
                           helper.make_tensor_value_info("mean", TensorProto.FLOAT, [2, 3, 1]),
                           helper.make_tensor_value_info("inv", TensorProto.FLOAT, [2, 3, 1])], initializer=[w, b])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "ln.onnx"))
    art = pipeline.compile(tmp_path / "ln.onnx", "x86-64", output=tmp_path / "a", check=False)
    out = art.run()
    assert out["mean"].shape == (2, 3, 1) and out["inv"].shape == (2, 3, 1)
    assert_matches_ort(art, tmp_path / "ln.onnx")


@pytest.mark.parametrize("op,attrs,x,y", [
    ("IsInf", {"detect_negative": 0}, [np.inf, -np.inf, 1.0, np.nan], None),
    ("IsInf", {"detect_positive": 0}, [np.inf, -np.inf, 1.0, np.nan], None),
    ("Mod", {"fmod": 0}, [-3.0, 3.0, -1.0, 1.0, 0.0, 5.5], [np.inf, np.inf, -np.inf, -np.inf, 2.0, -2.0]),
])
def test_converters_for_edge_values(tmp_path, op, attrs, x, y):
    """deploy's converters where TVM's gave wrong numbers: IsInf's detect flags, Mod by an infinity."""
    from onnx import TensorProto, helper

    n = len(x)
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])]
    feed = {"x": np.array(x, np.float32)}
    if y is not None:
        ins.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [n]))
        feed["y"] = np.array(y, np.float32)
    out_type = TensorProto.BOOL if op == "IsInf" else TensorProto.FLOAT
    g = helper.make_graph([helper.make_node(op, list(feed), ["z"], **attrs)], "g", ins,
                          [helper.make_tensor_value_info("z", out_type, [n])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    # ONNX Runtime takes float Mod with fmod=0 only from opset 28: numpy is the reference there
    art = pipeline.compile(tmp_path / "m.onnx", "x86-64", output=tmp_path / "a", check=op != "Mod")
    from conftest import ort_run

    want = np.mod(feed["x"], feed["y"]) if op == "Mod" else ort_run(tmp_path / "m.onnx", feed)["z"]
    np.testing.assert_array_equal(art(feed)["z"], want)


def test_default_schedules_fall_back_to_plain_loops_where_the_build_fails(tmp_path):
    """A vectorized Cosh has no LLVM lowering ("unknown intrinsic tirx.cosh"): the compile rebuilds the
    kernels without default schedules, as raw TVM runs them, checks again and says so."""
    from onnx import TensorProto, helper

    path = _save(tmp_path / "cosh.onnx", [helper.make_node("Cosh", ["x"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4, 5])], [3, 4, 5])
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a")
    assert_matches_ort(art, path)
    fb = art.manifest["fallbacks"]
    assert [f["stage"] for f in fb] == ["default schedules"] and "tirx.cosh" in fb[0]["reason"]
    assert art.manifest["check"]["status"] == "passed"
