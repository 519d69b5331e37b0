"""Artifacts for targets this machine cannot run: CUDA (compiled GPU code) and ARM (cross-linked)."""

import re
import subprocess

import pytest

import pipeline
from pipeline.backends.cuda import toolkit as cuda
from pipeline.build import elf_machine


@pytest.mark.parametrize("target,sm", [("cuda-sm86", "sm_86"), ("cuda-sm90", "sm_90")])
def test_cuda_artifact_embeds_cubin_and_host_part_loads(models, tmp_path, target, sm):
    art = pipeline.compile(models / "cnn.onnx", target, output=tmp_path / "a")
    data = art.library.read_bytes()
    code = cuda.gpu_code(data)
    assert {"kind": "cubin", "arch": sm} in code
    assert b"extern \"C\" __global__" not in data  # GPU code, not CUDA C source
    assert art.manifest["target"]["gpu_code"] == code
    assert elf_machine(art.library) == "x86_64"
    # the host part loads here; the CUDA module inside it is recognised
    import tvm

    lib = tvm.runtime.load_module(str(art.library))
    kinds = []

    def walk(m):
        kinds.append(m.kind)
        for i in m.imports:
            walk(i)

    walk(lib)
    assert "cuda" in kinds


def test_cuda_artifact_refuses_to_run_without_gpu(models, tmp_path, cli):
    import tvm

    if tvm.cuda(0).exist:
        pytest.skip("a GPU is present")
    art = pipeline.compile(models / "cnn.onnx", "cuda-sm80", output=tmp_path / "a")
    rc, _, err = cli("run", art.path)
    assert rc == 2 and "needs an NVIDIA GPU" in err


@pytest.mark.parametrize("target,machine,qemu_cpu", [("rpi4", "aarch64", "cortex-a72"), ("rpi5", "aarch64", "cortex-a76"),
                                                     ("armv7", "armv7l", "cortex-a7")])
def test_arm_artifacts_cross_link(models, tmp_path, target, machine, qemu_cpu, cli):
    art = pipeline.compile(models / "cnn.onnx", target, output=tmp_path / "a")
    assert elf_machine(art.library) == machine == art.manifest["library"]["elf_machine"]
    # a linked shared library: a dynamic section whose only needed libraries are the C library's
    dyn = subprocess.run(["readelf", "-d", str(art.library)], capture_output=True, text=True).stdout
    assert "Dynamic section" in dyn
    needed = set(re.findall(r"Shared library: \[(.+?)\]", dyn))
    assert needed <= {"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "libgcc_s.so.1"}, needed
    rc, _, err = cli("run", art.path)
    if art.device is not None:  # a runner and TVM's runtime for the board: runs here under qemu-user
        assert rc == 0, err
    else:
        assert rc == 2 and f"built for {machine}" in err


def test_jetson_artifact(models, tmp_path):
    art = pipeline.compile(models / "cnn.onnx", "jetson-orin", output=tmp_path / "a")
    assert elf_machine(art.library) == "aarch64"
    assert {"kind": "cubin", "arch": "sm_87"} in cuda.gpu_code(art.library.read_bytes())
