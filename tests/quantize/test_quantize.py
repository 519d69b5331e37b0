"""int8 quantization and fp16: models trained here on learnable synthetic tasks, so accuracy means something."""

import json
import re

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from pipeline.compile import CompileArgs, compile_model
from pipeline.quantize.options import QuantOptions
from pipeline.run.verify import reference_outputs
from zoo.torch_models import export
from int8_models import ort_reader


# ---------------------------------------------------------------- tasks and models


def _cnn_data(n, seed):
    """16x16 RGB noise with a bright 4x4 blob in one of 4 quadrants (the label), channel tinted."""
    g = np.random.default_rng(seed)
    x = g.normal(0, 0.4, (n, 3, 16, 16)).astype(np.float32)
    y = g.integers(0, 4, n)
    for i, c in enumerate(y):
        r, q = divmod(int(c), 2)
        oy, ox = r * 8 + g.integers(0, 4), q * 8 + g.integers(0, 4)
        x[i, :, oy:oy + 4, ox:ox + 4] += np.array([1.5, 1.0, 0.5], np.float32)[:, None, None]
    return x, y


def _mlp_data(n, seed):
    g = np.random.default_rng(seed)
    w = np.random.default_rng(123).normal(size=(16, 4))
    x = g.normal(size=(n, 16)).astype(np.float32)
    return x, (np.tanh(x) @ w).argmax(1)


def _train(model, x, y, steps=250, lr=1e-2):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for i in range(steps):
        idx = torch.randint(0, len(x), (64,))
        loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """{name: (onnx path, calibration .npz, test x, test y, input name)}, trained in a few seconds."""
    d = tmp_path_factory.mktemp("quant")
    torch.manual_seed(0)
    out = {}
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(16, 4))
    mlp = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    for name, model, data, shape in (("cnn", cnn, _cnn_data, (1, 3, 16, 16)), ("mlp", mlp, _mlp_data, (1, 16))):
        x, y = data(2000, 0)
        _train(model, x, y)
        path = d / f"{name}.onnx"
        with torch.no_grad():
            export(model, torch.zeros(shape), path)
        inp = onnx.load(path).graph.input[0].name
        cx, _ = data(64, 1)
        np.savez(d / f"{name}_cal.npz", **{inp: cx[:, None]})
        tx, ty = data(300, 2)
        out[name] = (path, d / f"{name}_cal.npz", tx, ty, inp)
    return out


def _top1(run, x, inp):
    return np.array([next(iter(run({inp: x[i:i + 1]}).values())).argmax() for i in range(len(x))])


def _float_top1(path, x, inp):
    return _top1(lambda feed: reference_outputs(path, feed), x, inp)


# ---------------------------------------------------------------- int8


@pytest.mark.parametrize("calibrator", ["minmax", "percentile", "entropy"])
@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_int8_keeps_accuracy(trained, tmp_path, name, calibrator):
    path, cal, x, y, inp = trained[name]
    dump = tmp_path / "ir"
    art = compile_model(CompileArgs(model=path, target="x86-64", output=tmp_path / "a", precision="int8",
                                    quant=QuantOptions(calibration=cal, calibrator=calibrator, speed_check=False),
                                    dump_ir=dump),
                        show=False)
    f32 = (_float_top1(path, x, inp) == y).mean()
    i8 = (_top1(art, x, inp) == y).mean()
    assert f32 > 0.7, f"the float model did not learn the task ({f32}; chance is 0.25)"
    assert i8 >= f32 - 0.01 - 1e-9, (name, calibrator, f32, i8)
    q = art.manifest["quantization"]
    assert q["calibrator"] == calibrator and len(q["calibration_sha256"]) == 64 and q["fallback"] == []
    assert q["accuracy"]["outputs"] and q["accuracy"]["samples"] == 16
    assert q["quantized_weight_bytes"]["int8"] < q["quantized_weight_bytes"]["float32"] / 3.5
    assert art.manifest["precision"]["compute"] == "int8"
    lowered = next(dump.glob("*lower.py")).read_text()
    # real int8 compute: int8 buffers (kernel parameters) widened to int32 inside the reduction
    assert 'T.Cast("int32", ' in lowered and re.search(r'T\.Buffer\([^"]*"int8"\)', lowered)
    op = "conv2d" if name == "cnn" else "matmul"
    assert f'R.{"nn." if op == "conv2d" else ""}{op}(' in next(dump.glob("*int8.py")).read_text()
    assert 'out_dtype="int32"' in next(dump.glob("*int8.py")).read_text()


def test_per_tensor_and_exclude(trained, tmp_path, cli):
    path, cal, x, y, inp = trained["mlp"]
    names = [n.name for n in onnx.load(path).graph.node if n.op_type in ("Gemm", "MatMul")]
    rc, out, err = cli("compile", path, "--target", "x86-64", "-o", tmp_path / "a", "--quantize", "int8",
                       "--calibration", cal, "--per-tensor", "--exclude", names[-1], "--no-speed-check")
    assert rc == 0, err
    q = json.loads((tmp_path / "a/manifest.json").read_text())["quantization"]
    assert "per-tensor" in q["scheme"] and q["excluded"] == [names[-1]] and names[-1] not in q["quantized_layers"]
    assert "top-1 agreement" in out + err
    rc, out, err = cli("compile", path, "--target", "x86-64", "-o", tmp_path / "b", "--quantize", "int8",
                       "--calibration", cal, "--exclude", "no_such_node")
    assert rc != 0 and "no_such_node" in err and "Traceback" not in err


def _assert_int8_and_exact(model, tmp_path, x, inp, min_int32_ops):
    art = compile_model(CompileArgs(model=model, target="x86-64", output=tmp_path / "a", dump_ir=tmp_path / "ir"),
                        show=False)
    int8_ir = next((tmp_path / "ir").glob("*int8.py")).read_text()
    assert int8_ir.count('out_dtype="int32"') >= min_int32_ops
    from pipeline.backends.cpu.int8_dot import supported
    from pipeline.run.check import onnx_reference_outputs
    from pipeline.targets import get_preset

    vnni = supported(get_preset("x86-64").tvm_target())
    for i in range(5):
        feed = {inp: x[i:i + 1]}
        ours, exact = art(feed), onnx_reference_outputs(model, feed)
        assert exact, "ONNX's reference implementation could not run the model"
        for k in exact:  # what ONNX defines the quantized model to compute
            np.testing.assert_allclose(ours[k], exact[k], atol=0.05 * np.abs(exact[k]).max())
        if vnni:  # ORT's int8 kernels are exact too where the CPU has VNNI (see _REDUCE_RANGE)
            ref = reference_outputs(model, feed)
            for k in ref:
                np.testing.assert_allclose(ours[k], ref[k], atol=0.05 * np.abs(ref[k]).max())
    return art


@pytest.mark.parametrize("scheme", ["int8-symmetric", "uint8-asymmetric", "int8-asymmetric"])
def test_ort_qdq_model_computes_in_int8(trained, tmp_path, scheme):
    """quantize_static's QDQ models, including its default uint8 activations with zero points."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    path, cal, x, y, inp = trained["cnn"]
    qdq = tmp_path / "cnn_qdq.onnx"
    quantize_static(str(path), str(qdq), ort_reader(np.load(cal)[inp], inp), quant_format=QuantFormat.QDQ,
                    per_channel=True, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8 if scheme.startswith("uint8") else QuantType.QInt8,
                    extra_options={"ActivationSymmetric": scheme.endswith("-symmetric")})
    _assert_int8_and_exact(qdq, tmp_path, x, inp, 3)  # 2 conv2d + the classifier
    from pipeline.backends.cpu.int8_dot import supported
    from pipeline.targets import get_preset

    if supported(get_preset("x86-64").tvm_target()):  # both convs (8 and 16 channels), classifier: vpdpbusd
        assert next((tmp_path / "ir").glob("*int8-vnni.py")).read_text().count("R.call_tir(cls.conv2d_nhwc_vnni") == 3


# ONNX Runtime's uint8 x int8 kernels on x86 CPUs without VNNI (AVX2 alone) add pairs of products
# in 16 bits, which full-range int8 weights overflow: its outputs are then off the exact integer
# result (0.36 on an MLP here) while deploy's int32 accumulation is exact. 7-bit weights
# (reduce_range, as ORT recommends for such CPUs) keep ORT exact on every CPU, so these tests
# compare two exact executions wherever they run.
_REDUCE_RANGE = True


def test_qoperator_models_compute_in_int8(trained, tmp_path):
    """QLinearConv (CNN) and QLinearMatMul (MLP with its Gemms as MatMuls), as quantize_static's
    QOperator format writes them: rewritten to QDQ, compiled to int8 kernels, equal to ORT's."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from pipeline.quantize.qdq import gemm_to_matmul

    for name, op in (("cnn", "Conv"), ("mlp", "MatMul")):
        path, cal, x, y, inp = trained[name]
        src = tmp_path / f"{name}_mm.onnx"
        onnx.save(gemm_to_matmul(onnx.load(path)), src)
        q = tmp_path / f"{name}_qop.onnx"
        quantize_static(str(src), str(q), ort_reader(np.load(cal)[inp], inp), quant_format=QuantFormat.QOperator,
                        op_types_to_quantize=[op], per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, reduce_range=_REDUCE_RANGE)
        ops = {n.op_type for n in onnx.load(q).graph.node}
        assert f"QLinear{op}" in ops, ops
        _assert_int8_and_exact(q, tmp_path / name, x, inp, 2)


def test_integer_ops_from_dynamic_quantization(trained, tmp_path):
    """quantize_dynamic: DynamicQuantizeLinear (scale and zero point computed at run time) feeding
    ConvInteger / MatMulInteger; both become int8 kernels with an exact int32 result."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from pipeline.quantize.qdq import gemm_to_matmul

    for name, op in (("cnn", "Conv"), ("mlp", "MatMul")):
        path, cal, x, y, inp = trained[name]
        src = tmp_path / f"{name}_mm.onnx"
        onnx.save(gemm_to_matmul(onnx.load(path)), src)
        q = tmp_path / f"{name}_dyn.onnx"
        quantize_dynamic(str(src), str(q), op_types_to_quantize=[op], weight_type=QuantType.QInt8,
                         reduce_range=_REDUCE_RANGE)
        ops = {n.op_type for n in onnx.load(q).graph.node}
        assert f"{op}Integer" in ops, ops
        _assert_int8_and_exact(q, tmp_path / name, x, inp, 2)


def test_dynamic_int8_needs_no_calibration_and_keeps_accuracy(trained, tmp_path):
    """--dynamic: every MatMul in int8 with its activation's scale and zero point computed at run
    time (DynamicQuantizeLinear), as ONNX Runtime's quantize_dynamic; no calibration data."""
    path, cal, x, y, inp = trained["mlp"]
    dump = tmp_path / "ir"
    art = compile_model(CompileArgs(model=path, target="x86-64", output=tmp_path / "a", precision="int8",
                                    quant=QuantOptions(dynamic=True, speed_check=False), dump_ir=dump), show=False)
    f32 = (_float_top1(path, x, inp) == y).mean()
    i8 = (_top1(art, x, inp) == y).mean()
    assert f32 > 0.7 and i8 >= f32 - 0.01 - 1e-9, (f32, i8)
    q = art.manifest["quantization"]
    assert q["scheme"].startswith("int8 dynamic") and q["calibrator"] == "dynamic" and len(q["quantized_layers"]) == 3
    assert q["accuracy"]["samples"] == 4 and art.manifest["precision"]["compute"] == "int8"
    assert next(dump.glob("*int8.py")).read_text().count('out_dtype="int32"') >= 3


def test_dynamic_int8_on_a_transformer_block(tmp_path):
    """An encoder layer (attention, GELU feed-forward, layer norms): its weight MatMuls compute in
    int8 (the attention's activation x activation MatMuls stay float), close to float32."""
    from pipeline.run.runtime import random_inputs

    from zoo.torch_models import EncoderBlock

    torch.manual_seed(0)
    path = tmp_path / "enc.onnx"
    with torch.no_grad():
        export(nn.Sequential(EncoderBlock(), EncoderBlock()), torch.randn(1, 16, 64), path)
    art = compile_model(CompileArgs(model=path, target="x86-64", output=tmp_path / "a", precision="int8",
                                    quant=QuantOptions(dynamic=True, speed_check=False),
                                    dump_ir=tmp_path / "ir"), show=False)
    q = art.manifest["quantization"]
    assert len(q["quantized_layers"]) == 8, q["quantized_layers"]  # per block: qkv, out-proj, 2 FFN
    assert next((tmp_path / "ir").glob("*int8.py")).read_text().count('out_dtype="int32"') >= len(q["quantized_layers"])
    for seed in range(3):
        feed = random_inputs(art.inputs, seed=seed)
        ours, ref = art(feed), reference_outputs(path, feed)
        for k in ref:
            a, b = ours[k].ravel().astype(np.float64), ref[k].ravel().astype(np.float64)
            assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.999


def test_exclude_takes_the_users_node_names_when_clean_up_renamed_them(tmp_path, cli):
    """Clean-up folds a Pad into the Conv after it and names the result after its output tensor:
    --exclude with the name the user sees in their model still finds it."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
             numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "W1"),
             numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype(np.float32), "W2")]
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], name="mypad"),
             helper.make_node("Conv", ["p", "W1"], ["c"], name="myconv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "W2"], ["y"], name="conv2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    rc, out, err = cli("compile", tmp_path / "m.onnx", "--target", "x86-64", "-o", tmp_path / "a", "--quantize", "int8",
                       "--random-calibration", "--exclude", "myconv", "--no-speed-check")
    assert rc == 0, err
    q = json.loads((tmp_path / "a/manifest.json").read_text())["quantization"]
    assert q["quantized_layers"] == ["conv2"] and len(q["excluded"]) == 1
