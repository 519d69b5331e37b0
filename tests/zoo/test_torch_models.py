"""Models exported from PyTorch (CPU build): compiled for the host and compared with ONNX Runtime."""

import pytest
from conftest import assert_matches_ort, needs_module

torch = needs_module("torch")

import pipeline  # noqa: E402
from zoo.torch_models import EncoderBlock, PadToMultiple, PositionalEmbedding, export, resnet18, small_resnet  # noqa: E402


def test_cnn_with_batchnorm(tmp_path):
    path = export(small_resnet(), torch.randn(1, 3, 32, 32), tmp_path / "rn.onnx", {"input": {0: "N"}})
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a", input_shapes={"input": [2, 3, 32, 32]})
    assert_matches_ort(art, path)


def test_transformer_encoder_block_dynamic_batch_and_seq(tmp_path):
    path = export(EncoderBlock(), torch.randn(2, 16, 64), tmp_path / "enc.onnx",
                  {"input": {0: "batch", 1: "seq"}, "output": {0: "batch", 1: "seq"}})
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a", input_shapes={"input": [1, 24, 64]})
    assert art.outputs[0]["shape"] == [1, 24, 64]
    assert_matches_ort(art, path)


@pytest.mark.parametrize("make,shape", [(PositionalEmbedding, [1, 16, 32]), (PadToMultiple, [1, 3, 30, 30])])
def test_shape_subgraphs_raw_tvm_rejects_are_folded(tmp_path, make, shape):
    """torch.arange(x.shape[1]) and pads computed from shapes: raw TVM fails, clean-up fixes it."""
    import onnx
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    dyn = {"input": {i: f"d{i}" for i in range(len(shape)) if i != 1 or len(shape) == 3}}
    path = export(make().eval(), torch.randn(*shape), tmp_path / "m.onnx", dyn)
    with pytest.raises(Exception):
        mod = from_onnx(onnx.load(path), shape_dict={"input": shape})
        tvm.compile(mod, tvm.target.Target({"kind": "llvm"}))
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a", input_shapes={"input": shape})
    assert_matches_ort(art, path)


@pytest.mark.slow
def test_resnet18(tmp_path):
    path = export(resnet18(), torch.randn(1, 3, 224, 224), tmp_path / "resnet18.onnx")
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a")
    assert_matches_ort(art, path, atol=1e-3)
