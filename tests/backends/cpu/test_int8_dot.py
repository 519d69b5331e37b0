"""int8 on CPU dot-product instructions (backends/cpu/int8_dot.py): AVX-512 VNNI against the int32
path, ARM dotprod (sdot) under qemu-user."""

import re

import numpy as np
import onnx
import pytest

from pipeline.compile import CompileArgs, compile_model
from pipeline.quantize.options import QuantOptions
from int8_models import int8_cnn, int8_mlp, ort_reader


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
    model, shape = (int8_cnn(), (3, 20, 20)) if name == "cnn" else (int8_mlp(), (6, 40))
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

    model = int8_mlp() if name.startswith("mlp") else int8_cnn()
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

        quantize_static(str(tmp_path / "m.onnx"), str(tmp_path / "qdq.onnx"), ort_reader(cal, "x"),
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
