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
from torch_models import export

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


def _ort_reader(samples, inp):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{inp: s} for s in samples[:16]])

        def get_next(self):
            return next(self.it, None)

    return Reader()


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
    quantize_static(str(path), str(qdq), _ort_reader(np.load(cal)[inp], inp), quant_format=QuantFormat.QDQ,
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
        quantize_static(str(src), str(q), _ort_reader(np.load(cal)[inp], inp), quant_format=QuantFormat.QOperator,
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

    from torch_models import EncoderBlock

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


def test_dynamic_int8_refuses_calibration_options(tmp_path, cli, models):
    base = ["compile", models / "cnn.onnx", "--target", "x86-64", "-o", tmp_path / "a"]
    rc, out, err = cli(*base, "--quantize", "int8", "--dynamic", "--calibrator", "entropy")
    assert rc != 0 and "no calibration" in err and "Traceback" not in err
    rc, out, err = cli(*base, "--dynamic")
    assert rc != 0 and "only apply to --quantize int8" in err
    assert not (tmp_path / "a").exists()


def _fragile_model():
    """x -> mm1 (8 copies of x plus one channel 500x larger) -> mm2 reads only the small channels.

    Per-tensor activation quantization of mm2's input rounds the informative channels to zero.
    """
    g = np.random.default_rng(0)
    w1 = np.concatenate([np.eye(8), 500 * np.eye(8)[:, :1]], 1).astype(np.float32)  # [8, 9]
    w2 = np.concatenate([g.normal(size=(8, 6)), np.zeros((1, 6))], 0).astype(np.float32)  # [9, 6]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("MatMul", ["h", "w2"], ["logits"], name="mm2")]
    graph = helper.make_graph(nodes, "fragile", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 6])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_accuracy_gate_falls_back_the_fragile_layer(tmp_path, cli):
    onnx.save(_fragile_model(), tmp_path / "f.onnx")
    np.savez(tmp_path / "cal.npz", x=np.random.default_rng(0).normal(size=(40, 1, 8)).astype(np.float32))
    base = ["compile", tmp_path / "f.onnx", "--target", "x86-64", "--quantize", "int8", "--calibration",
            tmp_path / "cal.npz", "--no-speed-check"]
    rc, out, err = cli(*base, "-o", tmp_path / "nogate")
    assert rc == 0, err
    drop = json.loads((tmp_path / "nogate/manifest.json").read_text())["quantization"]["accuracy"]["drop"]
    assert drop > 0.2  # without the gate, int8 breaks the model, and the compile says so loudly
    assert "warning: int8 is far from float32" in out + err and "--max-accuracy-drop 0.01" in out + err
    rc, out, err = cli(*base, "-o", tmp_path / "gate", "--max-accuracy-drop", "0.05")
    assert rc == 0, err
    assert "far from float32" not in out + err
    q = json.loads((tmp_path / "gate/manifest.json").read_text())["quantization"]
    assert q["fallback"] == ["mm2"] and q["quantized_layers"] == ["mm1"]
    assert q["sensitivity"]["mm2"] > q["sensitivity"]["mm1"] and q["accuracy"]["drop"] <= 0.05


@pytest.mark.parametrize("case", ["missing", "name", "shape", "dtype", "empty", "emptydir", "nofile"])
def test_bad_calibration_data(tmp_path, cli, case, models):
    model = models / "cnn.onnx"
    good = np.zeros((4, 1, 3, 32, 32), np.float32)
    cal = tmp_path / "cal.npz"
    expect = {"missing": "needs calibration data", "name": "unknown input name", "shape": "has shape",
              "dtype": "has dtype", "empty": "is empty", "emptydir": "holds no .npy", "nofile": "does not exist"}
    if case == "name":
        np.savez(cal, images=good)
    elif case == "shape":
        np.savez(cal, image=np.zeros((4, 3, 16, 16), np.float32))
    elif case == "dtype":
        np.savez(cal, image=good.astype(np.int64))
    elif case == "empty":
        np.savez(cal, image=np.zeros((0, 1, 3, 32, 32), np.float32))
    elif case == "emptydir":
        cal = tmp_path / "caldir"
        cal.mkdir()
    elif case == "nofile":
        cal = tmp_path / "nothere.npz"
    args = ["compile", model, "--target", "x86-64", "-o", tmp_path / "a", "--quantize", "int8"]
    rc, out, err = cli(*args, *([] if case == "missing" else ["--calibration", cal]))
    assert rc != 0 and expect[case] in err and "Traceback" not in err
    assert not (tmp_path / "a").exists()


def test_random_calibration_needs_the_flag_and_warns(tmp_path, cli, models):
    rc, out, err = cli("compile", models / "cnn.onnx", "--target", "x86-64", "-o", tmp_path / "a",
                       "--quantize", "int8", "--random-calibration", "--no-speed-check")
    assert rc == 0 and "meaningless" in out + err
    rc, out, err = cli("compile", models / "cnn.onnx", "--target", "x86-64", "-o", tmp_path / "b",
                       "--calibration", tmp_path / "x.npz")
    assert rc != 0 and "only apply to --quantize int8" in err


# ---------------------------------------------------------------- fp16


@pytest.mark.parametrize("target", ["cuda-sm86", "rpi4", "x86-64"])
def test_fp16_builds(tmp_path, cli, models, target):
    rc, out, err = cli("compile", models / "cnn.onnx", "--target", target, "-o", tmp_path / "a",
                       "--precision", "fp16", "--no-runner", "--dump-ir", tmp_path / "ir")
    assert rc == 0, err
    ir = next((tmp_path / "ir").glob("*fp16.py")).read_text()
    assert 'R.nn.conv2d(' in ir and 'dtype="float16"' in ir
    assert 'R.nn.softmax(' in ir and ir.count('R.Tensor((1, 10), dtype="float32") = R.nn.softmax') == 1
    assert ("no native float16" in out + err) == (target == "x86-64")
    if target == "x86-64":
        from pipeline.run.runtime import Artifact
        from conftest import assert_matches_ort

        assert_matches_ort(Artifact(tmp_path / "a"), models / "cnn.onnx", atol=2e-3, rtol=2e-2)


def _relu6_reflect_pad_cnn() -> onnx.ModelProto:
    """Conv, Clip(0, 6) (ReLU6, min/max as inputs), reflect Pad, Conv: ops TVM's ONNX frontend emits as TIR."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("w1", rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)), ("b1", rng.normal(0, 0.1, 8).astype(np.float32)),
        ("lo", np.array(0.0, np.float32)), ("hi", np.array(6.0, np.float32)),
        ("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
        ("w2", rng.normal(0, 0.2, (4, 8, 3, 3)).astype(np.float32))]]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),
             helper.make_node("Pad", ["r1", "pads"], ["p1"], mode="reflect"),
             helper.make_node("Conv", ["p1", "w2"], ["c2"]),
             helper.make_node("Clip", ["c2", "lo", "hi"], ["y"])]
    graph = helper.make_graph(nodes, "relu6", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("target", ["cuda-sm90", "x86-64"])
def test_fp16_with_ops_imported_as_tir(tmp_path, cli, target):
    """Reflect Pad becomes call_tir in TVM's ONNX frontend (so did ReLU6 before the importer
    turned constant-bound Clip into relax maximum/minimum); ToMixedPrecision used to crash on a
    call_tir after a float16 conv ("Expected TensorType, but got R.Callable"), so --precision fp16
    failed on MobileNetV2. The TIR op now runs in float32 between casts, ReLU6 in float16."""
    onnx.save(_relu6_reflect_pad_cnn(), tmp_path / "m.onnx")
    rc, out, err = cli("compile", tmp_path / "m.onnx", "--target", target, "-o", tmp_path / "a",
                       "--precision", "fp16", "--dump-ir", tmp_path / "ir")
    assert rc == 0, err
    ir = next((tmp_path / "ir").glob("*fp16.py")).read_text()
    assert "R.call_tir(cls.mirror_pad" in ir and "hidden" not in ir
    assert 'dtype="float16") = R.minimum(' in ir  # ReLU6: relax ops, in the conv's precision
    assert 'dtype="float16") = R.astype(' in ir
    if target == "x86-64":
        from pipeline.run.runtime import Artifact
        from conftest import assert_matches_ort

        assert_matches_ort(Artifact(tmp_path / "a"), tmp_path / "m.onnx", atol=2e-2, rtol=2e-2)


def _int8_cnn() -> onnx.ModelProto:
    """Convs with 16/32/24 output channels (VNNI tiles, 24 padded to 32), an odd input channel count,
    stride 2, 1x1."""
    rng = np.random.default_rng(1)

    def w(*s):
        return numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32))

    inits = [w(16, 3, 3, 3), w(16), w(32, 16, 3, 3), w(32), w(24, 32, 1, 1), w(24)]
    for t, n in zip(inits, ["W1", "B1", "W2", "B2", "W3", "B3"]):
        t.name = n
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "W3", "B3"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 20, 20])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 10, 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _int8_mlp() -> onnx.ModelProto:
    """3-D activations through two MatMuls: K = 40 and 20 (not multiples of 16), N = 20 (ragged)."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), n)
             for s, n in (((40, 20), "W1"), ((20,), "B1"), ((20, 16), "W2"))]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["m1"]), helper.make_node("Add", ["m1", "B1"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["r1"]), helper.make_node("MatMul", ["r1", "W2"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 40])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 16])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_int8_runs_on_vnni_and_matches_the_int32_path(tmp_path, name):
    """On a CPU with AVX-512 VNNI the int8 convs and matmuls become vpdpbusd kernels (u8 activations
    shifted by 128, packed weights, exact correction); their outputs equal the plain int32 build's."""
    import subprocess

    from pipeline.backends.cpu.int8_dot import supported
    from pipeline.run.runtime import Artifact, random_inputs
    from pipeline.targets import get_preset

    if not supported(get_preset("x86-64").tvm_target()):
        pytest.skip("this CPU has no AVX-512 VNNI")
    model, shape = (_int8_cnn(), (3, 20, 20)) if name == "cnn" else (_int8_mlp(), (6, 40))
    onnx.save(model, tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((16, 1, *shape)).astype(np.float32))
    arts = {}
    for target in ("x86-64", "x86-64-v3"):  # v3 (AVX2) has no AVX-512 VNNI: the int32 vector path
        arts[target] = compile_model(CompileArgs(model=tmp_path / "m.onnx", target=target, output=tmp_path / target,
                                                 precision="int8",
                                                 quant=QuantOptions(calibration=tmp_path / "cal.npz",
                                                                    speed_check=False),
                                                 dump_ir=tmp_path / f"ir-{target}"), show=False)
    asm = {t: subprocess.run(["objdump", "-d", str(a.library)], capture_output=True, text=True).stdout
           for t, a in arts.items()}
    assert asm["x86-64"].count("vpdpbusd") >= 2 and "vpdpbusd" not in asm["x86-64-v3"]
    ir = next((tmp_path / "ir-x86-64").glob("*int8-vnni.py")).read_text()
    assert ir.count("R.call_tir(cls.conv2d_nhwc_vnni") == (3 if name == "cnn" else 2)
    for seed in range(3):
        x = random_inputs(Artifact(tmp_path / "x86-64").inputs, seed=seed)
        a, b = arts["x86-64"].run(x)["y"], arts["x86-64-v3"].run(x)["y"]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


@pytest.mark.parametrize("name", ["cnn", "mlp-dynamic", "cnn-ort-uint8"])
def test_int8_on_arm_dotprod_is_sdot_and_matches_under_qemu(tmp_path, name):
    """rpi5 (Cortex-A76, ARMv8.2 dotprod): int8 convs and matmuls become sdot kernels (int8 x int8,
    4 int32 lanes, packed weights; uint8 activations shifted by -128 with the exact correction).
    Run under qemu, the rpi5 artifact matches ONNX Runtime's int8 outputs (the built-in check) and
    equals the rpi4 build (Cortex-A72, no dotprod: the int32 path, no sdot) exactly."""
    import subprocess

    from pipeline.run.runtime import random_inputs

    model = _int8_mlp() if name.startswith("mlp") else _int8_cnn()
    shape = (6, 40) if name.startswith("mlp") else (3, 20, 20)
    rng = np.random.default_rng(0)
    cal = rng.standard_normal((16, 1, *shape)).astype(np.float32)
    path, quant = tmp_path / "m.onnx", QuantOptions(speed_check=False)
    onnx.save(model, path)
    if name == "cnn":
        np.savez(tmp_path / "cal.npz", x=cal)
        quant = QuantOptions(calibration=tmp_path / "cal.npz", speed_check=False)
    elif name == "mlp-dynamic":
        quant = QuantOptions(dynamic=True, speed_check=False)
    else:  # ORT's own QDQ model: uint8 activations with zero points
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        quantize_static(str(tmp_path / "m.onnx"), str(tmp_path / "qdq.onnx"), _ort_reader(cal, "x"),
                        quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8)
        path, quant = tmp_path / "qdq.onnx", QuantOptions()
    arts = {t: compile_model(CompileArgs(model=path, target=t, output=tmp_path / t, check=True,
                                         precision="fp32" if name == "cnn-ort-uint8" else "int8", quant=quant),
                             show=False)
            for t in ("rpi5", "rpi4")}
    for a in arts.values():  # run under qemu against ORT's int8 (QDQ) outputs
        assert a.manifest["check"]["status"] == "passed", a.manifest["check"]
        assert a.manifest["precision"]["compute"] == "int8"
    asm = {t: subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(a.library)], capture_output=True,
                             text=True).stdout for t, a in arts.items()}
    assert len(re.findall(r"\bsdot\b", asm["rpi5"])) >= 4 and not re.search(r"\bsdot\b", asm["rpi4"])
    for seed in range(2):
        x = random_inputs(arts["rpi5"].inputs, seed=seed)
        a, b = arts["rpi5"].run(x)["y"], arts["rpi4"].run(x)["y"]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def _grouped_cnn() -> onnx.ModelProto:
    """A 3x3 conv, a 3x3 depthwise conv (stride 2), a 5x5 grouped conv (4 groups): the last two
    have no channel reduction for VNNI."""
    rng = np.random.default_rng(2)

    def w(name, *s):
        return numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), name)

    inits = [w("W1", 16, 3, 3, 3), w("B1", 16), w("W2", 16, 1, 3, 3), w("B2", 16), w("W3", 32, 4, 5, 5), w("B3", 32)]
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], group=16),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "W3", "B3"], ["y"], pads=[2, 2, 2, 2], group=4)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 20, 20])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 10, 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _int8_at_O2_and_O3(tmp_path, shape, scheme: str) -> dict:
    """tmp_path/m.onnx compiled to int8 at -O 2 and -O 3 (IR dumped to ir2/, ir3/): calibrated by
    deploy (symmetric int8), or, for ``ort-uint8``, ONNX Runtime's QDQ model with asymmetric uint8
    activations (the convs read int16(x_q) - z)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    cal = np.random.default_rng(0).standard_normal((16, *shape)).astype(np.float32)
    np.savez(tmp_path / "cal.npz", x=cal)
    model, prec, quant = tmp_path / "m.onnx", "int8", QuantOptions(calibration=tmp_path / "cal.npz", speed_check=False)
    if scheme == "ort-uint8":
        model, prec, quant = tmp_path / "qdq.onnx", "fp32", QuantOptions()
        quantize_static(str(tmp_path / "m.onnx"), str(model), _ort_reader(cal, "x"), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return {o: compile_model(CompileArgs(model=model, target="x86-64", output=tmp_path / f"O{o}", precision=prec,
                                         quant=quant, opt_level=o, dump_ir=tmp_path / f"ir{o}"), show=False)
            for o in (2, 3)}


@pytest.mark.parametrize("scheme", ["deploy", "ort-uint8"])
def test_int8_grouped_convs_compute_exactly_in_float32(tmp_path, scheme):
    """On x86, int8 depthwise and grouped convs (no channel reduction for VNNI; a 32-bit multiply
    per tap on the int32 path) compute in float32, which is exact for int8 operands: the -O 3
    build (that stage) returns what the -O 2 build (int32 compute) does, with a zero point too."""
    from pipeline.run.runtime import random_inputs

    onnx.save(_grouped_cnn(), tmp_path / "m.onnx")
    arts = _int8_at_O2_and_O3(tmp_path, (1, 3, 20, 20), scheme)
    ir = next((tmp_path / "ir3").glob("*int8-grouped-float.py")).read_text()
    # one kernel each, reading the integer activations and casting them itself
    assert len(re.findall(r"R\.call_tir\(cls\.conv2d_(u?int8|int16)_as_float\d", ir)) == 2, ir
    for seed in range(3):
        x = random_inputs(arts[2].inputs, seed=seed)
        a, b = arts[3].run(x)["y"], arts[2].run(x)["y"]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def _conv1d_net() -> onnx.ModelProto:
    """An audio front end: Conv1d 1->16 (k 9, stride 2), Conv1d 16->24 (k 3, dilation 2), a
    depthwise Conv1d, Conv1d 24->8 (k 1)."""
    rng = np.random.default_rng(4)

    def w(name, *s):
        return numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), name)

    inits = [w("W1", 16, 1, 9), w("B1", 16), w("W2", 24, 16, 3), w("B2", 24), w("W3", 24, 1, 3), w("W4", 8, 24, 1)]
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[4, 4], strides=[2]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], pads=[2, 2], dilations=[2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "W3"], ["c3"], pads=[1, 1], group=24),
             helper.make_node("Conv", ["c3", "W4"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 400])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 200])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("scheme", ["deploy", "ort-uint8"])
def test_int8_conv1d_computes_in_int8(tmp_path, scheme):
    """1-D convolutions are quantized and compute in int8: at -O 3 as 2-D convs on the dot-product
    kernels (the depthwise one in exact float32), at -O 2 as int8 conv1d on the int32 path. Both
    match ONNX Runtime's int8 (the built-in check) and each other exactly."""
    from pipeline.backends.cpu.int8_dot import supported
    from pipeline.run.runtime import random_inputs
    from pipeline.targets import get_preset

    onnx.save(_conv1d_net(), tmp_path / "m.onnx")
    arts = _int8_at_O2_and_O3(tmp_path, (1, 1, 400), scheme)
    int8 = next((tmp_path / "ir3").glob("*-int8.py")).read_text()
    assert int8.count('R.nn.conv1d(') == 4 and int8.count('out_dtype="int32"') >= 4
    for a in arts.values():
        assert a.manifest["precision"]["compute"] == "int8" and a.manifest["check"]["status"] == "passed"
    if supported(get_preset("x86-64").tvm_target()):  # the zero-point form too
        ir = next((tmp_path / "ir3").glob("*int8-vnni.py")).read_text()
        assert ir.count("R.call_tir(cls.conv2d_nhwc_vnni") == 3
    for seed in range(3):
        x = random_inputs(arts[2].inputs, seed=seed)
        a, b = arts[3].run(x)["y"], arts[2].run(x)["y"]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def _auto_pad_convs() -> onnx.ModelProto:
    """Convs with auto_pad, as TensorFlow and HF EfficientNet exports write them: SAME_UPPER 3x3,
    SAME_UPPER 3x3 stride 2 on an even size (the odd total pad goes at the end), SAME_LOWER stride 2
    (at the start), a depthwise SAME_UPPER 5x5, VALID 1x1."""
    rng = np.random.default_rng(5)

    def w(name, *s):
        return numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), name)

    inits = [w("W1", 8, 3, 3, 3), w("W2", 16, 8, 3, 3), w("W3", 16, 16, 3, 3), w("W4", 16, 1, 5, 5), w("W5", 8, 16, 1, 1)]
    nodes = [helper.make_node("Conv", ["x", "W1"], ["c1"], auto_pad="SAME_UPPER"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2"], ["c2"], auto_pad="SAME_UPPER", strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "W3"], ["c3"], auto_pad="SAME_LOWER", strides=[2, 2]),
             helper.make_node("Conv", ["c3", "W4"], ["c4"], auto_pad="SAME_UPPER", group=16),
             helper.make_node("Conv", ["c4", "W5"], ["y"], auto_pad="VALID")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 20, 20])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 5, 5])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_auto_pad_convs_compute_in_int8(tmp_path, cli):
    """auto_pad becomes the explicit pads it stands for at clean-up: float32 matches ONNX Runtime
    and every conv takes the int8 road (TVM's importer put a separate pad between the dequantize
    and the conv, and 76 of EfficientNet-B0's 81 convs stayed float)."""
    from conftest import assert_matches_ort
    from pipeline.run.runtime import Artifact

    onnx.save(_auto_pad_convs(), tmp_path / "m.onnx")
    rc, out, err = cli("compile", tmp_path / "m.onnx", "--target", "x86-64", "-o", tmp_path / "f")
    assert rc == 0, err
    assert_matches_ort(Artifact(tmp_path / "f"), tmp_path / "m.onnx")
    rc, out, err = cli("compile", tmp_path / "m.onnx", "--target", "x86-64", "-o", tmp_path / "q", "--quantize", "int8",
                       "--random-calibration", "--no-speed-check")
    assert rc == 0, err
    assert "int8 compute: 5 conv, 0 matmul" in out + err and "left in float" not in out + err


# ---------------------------------------------------------------- int8 where it pays

def test_select_charges_each_kernel_to_the_layers_it_computes():
    """A kernel's time goes to the quantized layers among its nodes (split evenly; a Gemm's bias
    Add stands for it); kernels of no layer count for none; a layer slower in int8 is kept float."""
    from pipeline.quantize.select import charge, select

    f = [{"ms": 1.0, "nodes": [["Conv", "c1"], ["Relu", "r1"]]}, {"ms": 0.5, "nodes": [["MaxPool", "p"]]},
         {"ms": 2.0, "nodes": [["Gemm", "fc"]]}]
    q = [{"ms": 0.2, "nodes": [["Conv", "c1"]]}, {"ms": 0.3, "nodes": [["Conv", "c1"], ["Relu", "r1"]]},
         {"ms": 0.6, "nodes": [["MaxPool", "p"], ["Conv", "c2"], ["Conv", "c1"]]}, {"ms": 2.5, "nodes": [["Add", "fc_bias"]]}]
    assert charge(q, ["c1", "c2", "fc"]) == pytest.approx({"c1": 0.8, "c2": 0.3, "fc": 2.5})
    sel = select(f, q, ["c1", "c2", "fc"])
    assert list(sel.kept_float()) == ["fc"] and "2.500 ms vs float 2.000" in sel.kept_float()["fc"]
    assert sel.to_dict()["c2"] == {"int8_ms": 0.3, "float_ms": None}  # measured once: stays int8


def _tiny_matmul() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.random.default_rng(3).standard_normal((16, 16)).astype(np.float32), "W")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("name", ["matmul", pytest.param("cnn", marks=pytest.mark.slow)])  # cnn: ~1 min
def test_int8_is_kept_only_where_it_is_faster(tmp_path, cli, name):
    """--quantize int8 on a target that runs here builds float32 too, times both layer by layer
    and end to end, keeps in float the layers int8 makes slower and writes the float32 build when
    int8 does not pay; the manifest holds the times behind every choice. A 16x16 matmul costs
    less than quantizing its input: it always loses in int8."""
    from conftest import assert_matches_ort

    model = _tiny_matmul() if name == "matmul" else _int8_cnn()
    onnx.save(model, tmp_path / "m.onnx")
    rc, out, err = cli("compile", tmp_path / "m.onnx", "--target", "x86-64", "-o", tmp_path / "a",
                       "--quantize", "int8", "--random-calibration")
    assert rc == 0, err
    m = json.loads((tmp_path / "a/manifest.json").read_text())
    sel = m["precision"]["selection"]
    assert m["precision"]["requested"] == "int8" and sel["chosen"] == m["precision"]["compute"]
    slower = {n for n, t in sel["layers"].items() if t["int8_ms"] is not None and t["float_ms"] is not None
              and t["int8_ms"] > t["float_ms"]}
    e2e = sel["end_to_end_ms"]
    # per-kernel times are noisy: a rebuild with the slower layers in float competes end to end with
    # the all-int8 build, and may lose to it
    dropped = "int8 (layers kept float)" in e2e
    kept = set() if dropped else slower
    assert set(sel["kept_float_for_speed"]) == kept
    assert not dropped or e2e["int8"] < e2e["int8 (layers kept float)"]
    assert (sel["chosen"] == "int8") == (e2e["int8"] < e2e["float32"] and len(kept) < len(sel["layers"]))
    if sel["chosen"] == "int8":
        q = m["quantization"]
        assert set(q["quantized_layers"]) == set(sel["layers"]) - kept
        assert all(q["layers"][n]["precision"] == "float32" and "slower in int8" in q["layers"][n]["why"] for n in kept)
    else:
        assert m["precision"]["compute"] == "fp32" and "quantization" not in m and "does not pay" in out + err
    if name == "matmul":
        assert slower == {"mm"} and sel["chosen"] == "fp32"
        assert_matches_ort(__import__("pipeline").runtime.Artifact(tmp_path / "a"), tmp_path / "m.onnx")
    assert not list(tmp_path.glob(".a.*"))  # no candidate left behind


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
