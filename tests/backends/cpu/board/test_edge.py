"""Edge boards: ARM artifacts carry a C++ runner and TVM's runtime, and are proven by running them
under qemu-user against ONNX Runtime; the runner's x86 build is checked against the Python loader."""

import os
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

import pipeline
from conftest import ort_run, needs_module
from pipeline.backends.cpu.board import runner as device
from pipeline.build import elf_machine
from pipeline.run.runtime import random_inputs


@pytest.fixture(scope="module")
def rpi4_cnn(models, tmp_path_factory):
    return pipeline.compile(models / "cnn.onnx", "rpi4", output=tmp_path_factory.mktemp("edge") / "cnn-rpi4")


@pytest.fixture(scope="module")
def x86_cnn(models, tmp_path_factory):
    return pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path_factory.mktemp("edge") / "cnn-x86",
                            runner=True)


def _run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)


def test_rpi4_artifact_holds_runner_and_aarch64_runtime(rpi4_cnn):
    d = rpi4_cnn.device
    assert d["arch"] == "aarch64" and d["emulation"]["qemu_cpu"] == "cortex-a72"
    for rel in ("runner", "lib/libtvm_runtime.so", "lib/libtvm_ffi.so"):
        assert elf_machine(rpi4_cnn.path / rel) == "aarch64"
        assert rel in d["files"]
    needed = _run(["readelf", "-d", rpi4_cnn.path / "runner"]).stdout
    assert "[libtvm_runtime.so]" in needed and "[libtvm_ffi.so]" in needed and "$ORIGIN/lib" in needed


def test_rpi4_cnn_verifies_under_qemu(rpi4_cnn, models, cli):
    rc, out, err = cli("verify", rpi4_cnn.path, "--model", models / "cnn.onnx")
    assert rc == 0, err
    assert out.startswith("ok") and "max abs error" in out


def test_rpi4_encoder_block_matches_ort_under_qemu(tmp_path):
    torch = needs_module("torch")
    from zoo.torch_models import EncoderBlock, export

    path = export(EncoderBlock(), torch.randn(1, 16, 64), tmp_path / "enc.onnx")
    art = pipeline.compile(path, "rpi4", output=tmp_path / "a")
    assert art.emulated
    inputs = random_inputs(art.inputs, seed=3)
    ours, ref = art(inputs), ort_run(path, inputs)
    np.testing.assert_allclose(ours["output"], ref["output"], atol=1e-4, rtol=1e-3)


def test_x86_runner_matches_python_loader_bit_for_bit(x86_cnn):
    assert x86_cnn.device["arch"] == "x86_64" and not x86_cnn.emulated
    inputs = random_inputs(x86_cnn.inputs, seed=7)
    r = x86_cnn.run_runner(inputs, repeat=3)
    py = pipeline.load(x86_cnn.path)(inputs)
    for name in py:
        assert r.outputs[name].dtype == py[name].dtype and np.array_equal(r.outputs[name], py[name])
    assert r.runs == 3 and r.latency_ms["median"] > 0


def test_bundle_unpacks_and_runs_under_qemu(rpi4_cnn, models, tmp_path, cli):
    bundle = tmp_path / "cnn-rpi4.tar.gz"
    rc, out, err = cli("package", rpi4_cnn.path, "-o", bundle)
    assert rc == 0, err
    with tarfile.open(bundle) as tar:
        tar.extractall(tmp_path / "board", filter="data")
    board = tmp_path / "board" / rpi4_cnn.path.name
    readme = (board / "README.md").read_text()
    assert "./runner" in readme and "image" in readme and "glibc" in readme
    assert _run(["sha256sum", "-c", "SHA256SUMS"], cwd=board).returncode == 0
    x = random_inputs(rpi4_cnn.inputs, seed=5)["image"]
    np.save(tmp_path / "x.npy", x)
    # as on the board: run from the unpacked folder, no --artifact, nothing from this checkout
    r = _run(["qemu-aarch64-static", "-cpu", "cortex-a72", "-L", "/usr/aarch64-linux-gnu", "./runner",
              "--input", f"image={tmp_path / 'x.npy'}", "--output-dir", tmp_path, "--repeat", "2"], cwd=board)
    assert r.returncode == 0, r.stderr
    assert "output probs: float32[1, 10]" in r.stdout and "latency: median" in r.stdout and "over 2 runs" in r.stdout
    ref = ort_run(models / "cnn.onnx", {"image": x})["probs"]
    np.testing.assert_allclose(np.load(tmp_path / "probs.npy"), ref, atol=1e-5, rtol=1e-4)
    rc, _, err = cli("package", rpi4_cnn.path, "-o", bundle)
    assert rc == 2 and "--force" in err


@pytest.mark.parametrize("emulated", [False, True])
def test_bad_runner_inputs_fail_clearly(x86_cnn, rpi4_cnn, tmp_path, emulated):
    art = rpi4_cnn if emulated else x86_cnn
    prefix = device.launcher(art.device)
    good = random_inputs(art.inputs)["image"]
    np.save(tmp_path / "good.npy", good)
    np.save(tmp_path / "shape.npy", good[:, :2])
    np.save(tmp_path / "dtype.npy", good.astype(np.float64))
    base = [*prefix, art.path / "runner", "--artifact", art.path]
    cases = {
        "img=good.npy": "unknown input 'img'",
        "image=shape.npy": "input 'image' has shape [1, 2, 32, 32], the artifact expects [1, 3, 32, 32]",
        "image=dtype.npy": "input 'image' has dtype float64, the artifact expects float32",
        "image=missing.npy": "cannot read",
        "image": "write it as NAME=file.npy",
    }
    for arg, message in cases.items():
        r = _run([*base, "--input", arg], cwd=tmp_path)
        assert r.returncode == 2, (arg, r.stdout, r.stderr)
        assert r.stderr.startswith("error: ") and message in r.stderr, r.stderr
        assert "terminate called" not in r.stderr and "Traceback" not in r.stderr


def test_cli_run_on_arm_artifact_checks_inputs(rpi4_cnn, tmp_path, cli):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    rc, _, err = cli("run", rpi4_cnn.path, "--input", f"image={tmp_path / 'x.npy'}")
    assert rc == 2 and "has shape [1, 3, 8, 8], the artifact expects [1, 3, 32, 32]" in err
    rc, out, err = cli("run", rpi4_cnn.path, "-o", tmp_path / "out")
    assert rc == 0, err
    assert (tmp_path / "out" / "probs.npy").is_file()


def test_missing_qemu_names_the_debian_package(rpi4_cnn, models, tmp_path, cli, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # a machine without qemu-user on PATH
    rc, _, err = cli("verify", rpi4_cnn.path, "--model", models / "cnn.onnx")
    assert rc == 2 and "qemu-aarch64-static" in err and "apt-get install qemu-user-static" in err
    rc, _, err = cli("compile", models / "cnn.onnx", "--target", "rpi5", "-o", tmp_path / "x")
    assert rc == 2 and "apt-get install g++-aarch64-linux-gnu" in err


def test_modified_runner_is_refused(rpi4_cnn, tmp_path, cli):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(rpi4_cnn.path, copy)
    with open(copy / "lib" / "libtvm_runtime.so", "ab") as f:
        f.write(b"\0")
    rc, _, err = cli("run", copy)
    assert rc == 2 and "libtvm_runtime.so does not match the sha256" in err


def test_bench_on_arm_artifact_says_emulated(rpi4_cnn, cli):
    rc, out, err = cli("bench", rpi4_cnn.path, "--repeat", "2")
    assert rc == 0, err
    assert "EMULATED" in out and "not board timings" in out and "--rpc-tracker" in out
    rc, _, err = cli("bench", rpi4_cnn.path, "--rpc-key", "rpi4")
    assert rc == 2 and "go together" in err


def test_bench_through_rpc_tracker(x86_cnn, cli, tmp_path):
    """A 'board' registered with a TVM RPC tracker on loopback (an x86 server stands in for the Pi)."""
    import socket

    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    port = free_port()
    env = {**os.environ, "TVM_NUM_THREADS": "1"}
    tracker = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port",
                                str(port), "--port-end", str(port + 1)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    sport = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}",
                               "--key", "pi", "--host", "127.0.0.1", "--port", str(sport), "--port-end",
                               str(sport + 1)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                              cwd=tmp_path, start_new_session=True)
    try:
        from tvm import rpc

        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if any(s["key"].endswith(":pi") for s in rpc.connect_tracker("127.0.0.1", port).summary()["server_info"]):
                    break
            except Exception:
                pass
            time.sleep(1)
        rc, out, err = cli("bench", x86_cnn.path, "--rpc-tracker", f"127.0.0.1:{port}", "--rpc-key", "pi",
                           "--repeat", "3", "--seconds", "0.3")
        assert rc == 0, err
        assert "median" in out and f"pi@127.0.0.1:{port}" in out
        rc, _, err = cli("bench", x86_cnn.path, "--rpc-tracker", f"127.0.0.1:{port}", "--rpc-key", "jetson")
        assert rc == 2 and "no device with key 'jetson'" in err and "registered: pi" in err
    finally:
        for p in (server, tracker):  # their process groups: the servers' popen workers go with them
            try:
                os.killpg(p.pid, 15)
            except ProcessLookupError:
                pass
            p.wait(timeout=30)


def test_armv7_runs_with_runtime_built_from_wheel_sources(models, tmp_path, cli):
    """No armv7 wheel exists: the runtime is built from the installed wheels' C++ sources."""
    art = pipeline.compile(models / "cnn.onnx", "armv7", output=tmp_path / "a")
    assert elf_machine(art.library) == "armv7l"
    for rel in ("runner", "lib/libtvm_runtime.so", "lib/libtvm_ffi.so"):
        assert elf_machine(art.path / rel) == "armv7l"
    assert "built for armv7l from the wheels' C++ sources" in art.device["runtime_source"]
    assert art.device["emulation"] == {"qemu": "qemu-arm-static", "qemu_cpu": "cortex-a7",
                                       "sysroot": "/usr/arm-linux-gnueabihf"}
    rc, out, err = cli("verify", art.path, "--model", models / "cnn.onnx")
    assert rc == 0 and out.startswith("ok"), err


@pytest.mark.slow
@pytest.mark.parametrize("target", ["rpi4", "rpi5"])
def test_resnet18_under_emulation(tmp_path, target):
    torch = needs_module("torch")
    from zoo.torch_models import export, resnet18

    path = export(resnet18(), torch.randn(1, 3, 224, 224), tmp_path / "resnet18.onnx")
    art = pipeline.compile(path, target, output=tmp_path / "a")
    inputs = random_inputs(art.inputs, seed=1)
    r = art.run_runner(inputs)
    ref = ort_run(path, inputs)["output"]
    ours = r.outputs["output"]
    diff = np.abs(ours.astype(np.float64) - ref)
    print(f"\n{target} resnet18 under {art.device['emulation']['qemu']} -cpu {art.device['emulation']['qemu_cpu']}: "
          f"max abs error {diff.max():.3g}, max rel error {diff.max() / np.abs(ref).max():.3g}, "
          f"emulated run {r.latency_ms['median']:.0f} ms, runner process {r.wall_s:.1f} s")
    np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=1e-3)
