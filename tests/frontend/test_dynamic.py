"""Dynamic dims: one artifact for a range of shapes (--dim S=1..64@16), checked against ONNX Runtime."""

import json

import numpy as np
import pytest

import pipeline
from conftest import ort_run, needs_module
from pipeline.errors import DeployError
from pipeline.frontend.dims import parse_dim, parse_shapes, sample_points

torch = needs_module("torch")

from zoo.torch_models import EncoderBlock, PositionalEmbedding, export  # noqa: E402


def _x(b, s, d=64, seed=0):
    return {"input": np.random.default_rng(seed).standard_normal((b, s, d)).astype(np.float32)}


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    d = tmp_path_factory.mktemp("dyn")
    path = export(EncoderBlock(), torch.randn(2, 16, 64), d / "enc.onnx",
                  {"input": {0: "batch", 1: "seq"}, "output": {0: "batch", 1: "seq"}})
    art = pipeline.compile(path, "x86-64", output=d / "a", input_shapes={"input": ["B", "S", 64]},
                           dims={"B": "1..4", "S": "1..64@16"}, runner=True)
    return path, art


def test_one_artifact_runs_every_shape_in_range_and_matches_ort(encoder):
    path, art = encoder
    m = art.manifest
    assert m["model"]["inputs"][0]["shape"] == ["B", "S", 64]
    assert m["dims"] == {"B": {"min": 1, "max": 4, "opt": []}, "S": {"min": 1, "max": 64, "opt": [16]}}
    assert m["functions"] == [{"name": "main_S16", "dims": {"S": 16}}]
    # the built-in check ran at the specialization, both ends of the ranges and an odd size
    assert m["check"]["status"] == "passed" and "at 4 sizes" in m["check"]["inputs"]
    assert {k.split(" @ ")[1] for k in m["check"]["outputs"]} == {"B=1, S=16", "B=1, S=1", "B=3, S=33", "B=4, S=64"}
    for b, s in [(1, 7), (2, 16), (4, 64), (3, 1)]:
        x = _x(b, s, seed=b * 100 + s)
        np.testing.assert_allclose(art(x)["output"], ort_run(path, x)["output"], atol=1e-4, rtol=1e-3)
    assert art.function_for([_x(3, 16)["input"]]) == "main_S16"
    assert art.function_for([_x(3, 17)["input"]]) == "main"


def test_out_of_range_and_inconsistent_inputs_are_refused(encoder, cli):
    _, art = encoder
    with pytest.raises(DeployError, match=r"dim S=65 is outside its range 1\.\.64"):
        art(_x(1, 65))
    with pytest.raises(DeployError, match=r"dim B=5 is outside its range 1\.\.4"):
        art(_x(5, 8))
    with pytest.raises(DeployError, match="has shape"):
        art(_x(1, 8, d=32))
    np.save(art.path.parent / "big.npy", _x(1, 100)["input"])
    rc, out, err = cli("run", art.path, "-i", f"input={art.path.parent / 'big.npy'}")
    assert rc == 2 and "dim S=100 is outside its range 1..64" in out + err and "[B, S, 64]" in out + err


def test_the_runner_picks_the_function_and_refuses_out_of_range(encoder):
    _, art = encoder
    for b, s, fn in [(2, 7, "main"), (1, 16, "main_S16")]:
        x = _x(b, s, seed=s)
        r = art.run_runner(x)
        np.testing.assert_array_equal(r.outputs["output"], art(x)["output"])
    import subprocess

    runner = art.path / art.device["runner"]
    out = subprocess.run([str(runner), "--dim", "S=16", "--dim", "B=2"], capture_output=True, text=True)
    assert out.returncode == 0 and "function main_S16 for B=2 S=16" in out.stdout
    out = subprocess.run([str(runner), "--dim", "S=99"], capture_output=True, text=True)
    assert out.returncode == 2 and "dim S=99 is outside its range 1..64" in out.stderr


def test_verify_and_bench_take_shapes(encoder, cli):
    path, art = encoder
    rc, out, _ = cli("verify", art.path, "--model", path, "--shapes", "S=3,16", "--shapes", "B=1,4")
    assert rc == 0 and out.count("ok ") == 4 and "output @ B=4, S=16:" in out
    rc, out, err = cli("verify", art.path, "--model", path, "--shapes", "S=80")
    assert rc == 2 and "outside the range" in out + err
    rc, out, _ = cli("run", art.path, "--shapes", "S=33", "--shapes", "B=2")
    assert rc == 0 and "output: float32[2, 33, 64]" in out
    rc, out, _ = cli("bench", art.path, "--model", path, "--shapes", "S=5,16", "--seconds", "0.2", "--repeat", "2",
                     "--json")
    rows = json.loads(out)["shapes"]
    assert [r["dims"] for r in rows] == [{"B": 1, "S": 5}, {"B": 1, "S": 16}]
    assert all(r["deploy"]["median_ms"] > 0 and r["onnxruntime"]["median_ms"] > 0 for r in rows)


def test_dynamic_batch_cnn_matches_ort(tmp_path):
    from pipeline.examples import tiny_cnn

    import onnx

    path = tmp_path / "cnn.onnx"
    onnx.save(tiny_cnn(batch="N"), path)
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a", dims=["N=1..32"])
    name = art.outputs[0]["name"]
    for n in (1, 5, 32):
        x = art.random_inputs(seed=n, sizes={"N": n})
        ours = art(x)[name]
        assert ours.shape[0] == n
        np.testing.assert_allclose(ours, ort_run(path, x)[name], atol=1e-4, rtol=1e-3)


def test_shapes_computed_from_a_dynamic_dim_are_sized_by_it(tmp_path):
    """torch.arange(x.shape[1]) with the sequence dynamic: a Range TVM would size at run time, sized by S."""
    path = export(PositionalEmbedding().eval(), torch.randn(1, 16, 32), tmp_path / "pe.onnx",
                  {"input": {0: "B", 1: "S"}})
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a", dims={"B": "1..2", "S": "1..64"})
    for s in (3, 64):
        x = {"input": np.random.default_rng(s).standard_normal((2, s, 32)).astype(np.float32)}
        (ours,), (ref,) = art(x).values(), ort_run(path, x).values()
        np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-3)


def test_rpi4_artifact_with_a_dynamic_dim_runs_two_shapes_under_qemu(tmp_path):
    path = export(EncoderBlock(), torch.randn(1, 16, 64), tmp_path / "enc.onnx", {"input": {1: "S"}, "output": {1: "S"}})
    art = pipeline.compile(path, "rpi4", output=tmp_path / "a", dims={"S": "1..32@8"})
    assert art.emulated and art.manifest["functions"][0]["name"] == "main_S8"
    for s in (8, 21):
        x = _x(1, s, seed=s)
        np.testing.assert_allclose(art(x)["output"], ort_run(path, x)["output"], atol=1e-4, rtol=1e-3)
    with pytest.raises(DeployError, match=r"dim S=40 is outside its range 1\.\.32"):
        art(_x(1, 40))


def test_dim_and_shape_parsing():
    d = parse_dim("S=1..512@256,128")
    assert (d.min, d.max, d.opt) == (1, 512, [128, 256]) and str(d) == "S=1..512@128,256"
    assert parse_dim("B=8").max == 8
    dims = {"B": parse_dim("B=1..8"), "S": parse_dim("S=1..256@128")}
    assert parse_shapes(["S=7,64"], dims) == [{"B": 1, "S": 7}, {"B": 1, "S": 64}]
    assert len(parse_shapes(["S=7,64", "B=2,8"], dims)) == 4
    pts = sample_points(dims)
    assert pts[0] == {"B": 1, "S": 128} and {"B": 8, "S": 256} in pts and {"B": 1, "S": 1} in pts
    with pytest.raises(DeployError, match="no dynamic dims"):
        parse_shapes(["S=3"], {})


def test_cuda_artifact_with_dynamic_dims_builds(tmp_path):
    """Built here (no GPU): one library with the symbolic main and the specialization, GPU code inside."""
    from pipeline.backends.cuda import toolkit as cuda

    path = export(EncoderBlock(), torch.randn(1, 16, 64), tmp_path / "enc.onnx", {"input": {1: "S"}, "output": {1: "S"}})
    art = pipeline.compile(path, "cuda-sm86", output=tmp_path / "a", dims={"S": "1..128@32"})
    assert art.manifest["functions"] == [{"name": "main_S32", "dims": {"S": 32}}]
    assert {"kind": "cubin", "arch": "sm_86"} in cuda.gpu_code(art.library.read_bytes())
    import tvm
    from tvm import relax

    stats = relax.VMExecutable(tvm.runtime.load_module(str(art.library))).stats()
    globals_ = stats[stats.index("Globals"):].split("[", 1)[1].split("]", 1)[0].split(", ")
    assert {"main", "main_S32"} <= set(globals_)


class PositionsThenFlatten(torch.nn.Module):
    """GPT-2's embedding and Conv1D: tokens + positions(arange(S)), then x.view(-1, d) @ W viewed back."""

    def __init__(self, d: int = 32):
        super().__init__()
        self.pos, self.w = torch.nn.Embedding(64, d), torch.nn.Parameter(torch.randn(d, 3 * d) * 0.1)

    def forward(self, x):
        h = x + self.pos(torch.arange(x.shape[1]))
        out = h.reshape(-1, h.size(-1)) @ self.w
        return out.view(h.size()[:-1] + (self.w.shape[1],))


def test_range_over_a_dynamic_dim_keeps_shapes_known(tmp_path):
    """Range(0, S): sized by S itself (converters/range.py), so the flatten after it has a shape."""
    torch.manual_seed(0)
    path = export(PositionsThenFlatten().eval(), torch.randn(2, 16, 32), tmp_path / "p.onnx", {"input": {0: "B", 1: "S"}})
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a", dims={"B": "1..4", "S": "1..64"})
    for b, s in [(1, 5), (4, 64)]:
        x = {"input": np.random.default_rng(s).standard_normal((b, s, 32)).astype(np.float32)}
        (ours,), (ref,) = art(x).values(), ort_run(path, x).values()
        np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_recurrent_layers_take_a_dynamic_batch_not_a_dynamic_length(tmp_path, cell):
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = getattr(torch.nn, cell)(16, 24, batch_first=True)

        def forward(self, x):
            return self.rnn(x)[0]

    path = export(M().eval(), torch.randn(2, 9, 16), tmp_path / "r.onnx", {"input": {0: "N", 1: "T"}})
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a", input_shapes={"input": ["N", 9, 16]},
                           dims={"N": "1..4"})
    for n in (1, 3):
        x = {"input": np.random.default_rng(n).standard_normal((n, 9, 16)).astype(np.float32)}
        (ours,), (ref,) = art(x).values(), ort_run(path, x).values()
        np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-3)
    with pytest.raises(DeployError, match="dynamic sequence length") as e:
        pipeline.compile(path, "x86-64", output=tmp_path / "b", dims={"N": "1..4", "T": "1..20"})
    assert not (tmp_path / "b").exists() and cell in str(e.value)


def _minus_one_model(path):
    """A conv whose input's batch and width are written as dim_value -1 (paddle2onnx's dynamic axis)."""
    from onnx import TensorProto, helper, numpy_helper, save

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "W")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, 8, -1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 4, 8, -1])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    save(m, path)
    return path


def test_a_dim_value_of_minus_one_is_a_dynamic_axis(tmp_path, cli):
    """ONNX Runtime reads dim_value -1 as a dynamic axis; so do inspect, --input-shape and --dim,
    under the name deploy gives an unnamed dynamic axis (x_dim0)."""
    path = _minus_one_model(tmp_path / "m.onnx")
    rc, out, _ = cli("inspect", path, "--json")
    info = json.loads(out)
    assert rc == 0 and info["inputs"][0]["shape"] == ["x_dim0", 3, 8, "x_dim3"]
    assert info["dims"] == {"x_dim0": ["x axis 0"], "x_dim3": ["x axis 3"]} and info["gflop"] is None
    assert info["outputs"][0]["shape"] == [None, 4, 8, None]
    rc, out, _ = cli("compile", path, "--target", "x86-64", "-o", tmp_path / "a", "--input-shape", "x=1x3x8x12")
    assert rc == 0, out
    x = {"x": np.random.default_rng(1).standard_normal((1, 3, 8, 12)).astype(np.float32)}
    np.testing.assert_allclose(pipeline.load(tmp_path / "a")(x)["y"], ort_run(path, x)["y"], atol=1e-5, rtol=1e-4)
    with pytest.raises(DeployError, match=r"dynamic 'x_dim3' \(axis 3\) has no value.*--dim x_dim3=1\.\.64"):
        pipeline.compile(path, "x86-64", output=tmp_path / "b", dims={"x_dim0": "1..2"})
    art = pipeline.compile(path, "x86-64", output=tmp_path / "c", input_shapes={"x": ["x_dim0", 3, 8, 12]},
                           dims={"x_dim0": "1..2"})
    assert art.manifest["model"]["inputs"][0]["shape"] == ["x_dim0", 3, 8, 12]
    x2 = {"x": np.random.default_rng(2).standard_normal((2, 3, 8, 12)).astype(np.float32)}
    np.testing.assert_allclose(art(x2)["y"], ort_run(path, x2)["y"], atol=1e-5, rtol=1e-4)
