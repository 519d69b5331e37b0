"""Every user error ends in one readable message and a non-zero exit, never a traceback."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import pipeline
from pipeline import DeployError, examples
from pipeline import host


def _err(cli, *args):
    rc, out, err = cli(*args)
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err and err.count("error:") == 1
    return err


def test_missing_file(cli, tmp_path):
    err = _err(cli, "compile", tmp_path / "nope.onnx", "--target", "x86-64", "-o", tmp_path / "a")
    assert "model file not found" in err
    assert not (tmp_path / "a").exists()


def test_not_onnx_and_truncated(cli, tmp_path, models):
    (tmp_path / "junk.onnx").write_bytes(os.urandom(300))
    assert "not a readable ONNX model" in _err(cli, "inspect", tmp_path / "junk.onnx")
    data = (models / "cnn.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    err = _err(cli, "compile", tmp_path / "cut.onnx", "--target", "x86-64", "-o", tmp_path / "a")
    assert "truncated" in err


def test_checker_failure(cli, tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "bad.onnx")
    err = _err(cli, "compile", tmp_path / "bad.onnx", "--target", "x86-64", "-o", tmp_path / "a")
    assert "fails the ONNX checker" in err


def _unsupported_model(path):
    """Two op types TVM's importer lacks (and ONNX defines no function for), one of them twice."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 2, 2])
    m = helper.make_tensor_value_info("m", TensorProto.FLOAT, [2, 3, 3])
    nodes = [
        helper.make_node("Det", ["m"], ["d"], name="det_a"),
        helper.make_node("DFT", ["x"], ["r1"], name="dft_a", axis=1),
        helper.make_node("DFT", ["r1"], ["r2"], name="dft_b", axis=1),
        helper.make_node("Relu", ["r2"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(nodes, "g", [x, m], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 2, 2]),
                                                   helper.make_tensor_value_info("d", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_unsupported_ops_listed_at_once(cli, tmp_path):
    _unsupported_model(tmp_path / "rnn.onnx")
    err = _err(cli, "compile", tmp_path / "rnn.onnx", "--target", "x86-64", "-o", tmp_path / "a")
    assert "2 op type(s)" in err and "Det (1x: det_a)" in err and "DFT (2x: dft_a, dft_b)" in err
    rc, out, _ = cli("inspect", tmp_path / "rnn.onnx")
    assert rc == 1 and "DFT: dft_a, dft_b" in out and "Det: det_a" in out


def test_unbound_dynamic_dim_names_it_and_the_flag(cli, models, tmp_path):
    err = _err(cli, "compile", models / "cnn_dyn.onnx", "--target", "x86-64", "-o", tmp_path / "a")
    assert "'N' (axis 0)" in err and "--input-shape image=1x3x32x32" in err
    err = _err(cli, "compile", models / "cnn_dyn.onnx", "--target", "x86-64", "-o", tmp_path / "a",
               "--input-shape", "image=2x4x32x32")
    assert "axis 1 is fixed to 3" in err
    assert "unknown input" in _err(cli, "compile", models / "cnn_dyn.onnx", "--target", "x86-64",
                                   "--input-shape", "img=1x3x32x32", "-o", tmp_path / "a")
    assert "bad --input-shape" in _err(cli, "compile", models / "cnn_dyn.onnx", "--target", "x86-64",
                                       "--input-shape", "image=1x0x3", "-o", tmp_path / "a")
    err = _err(cli, "compile", models / "cnn_dyn.onnx", "--target", "x86-64", "--input-shape", "image=Bx3x32x32",
               "-o", tmp_path / "a")
    assert "dim 'B' has no range; add --dim B=MIN..MAX" in err
    err = _err(cli, "compile", models / "cnn_dyn.onnx", "--target", "x86-64", "--dim", "N=1..4", "--dim", "S=1..9",
               "-o", tmp_path / "a")
    assert "--dim S is not a dim of any input" in err
    for bad, why in [("N=4..1", "1 <= MIN <= MAX"), ("N=1..8@9", "[9] are outside 1..8"), ("=1..8", "needs a name")]:
        assert why in _err(cli, "compile", models / "cnn_dyn.onnx", "--target", "x86-64", "--dim", bad,
                           "-o", tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_missing_cross_compiler_names_the_package(cli, models, tmp_path):
    preset = tmp_path / "board.toml"
    preset.write_text('description = "x"\nfamily = "cpu"\narch = "aarch64"\n'
                      'cross_compiler = "nonexistent-linux-gnu-g++"\ncross_package = "g++-nonexistent-linux-gnu"\n'
                      '[target]\nkind = "llvm"\nmtriple = "aarch64-linux-gnu"\n')
    err = _err(cli, "compile", models / "cnn.onnx", "--target", preset, "-o", tmp_path / "a")
    assert "nonexistent-linux-gnu-g++" in err and "apt-get install g++-nonexistent-linux-gnu" in err


def test_missing_nvcc(cli, models, tmp_path, monkeypatch):
    import shutil

    from pipeline.backends.cuda import toolkit as cuda

    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    monkeypatch.setattr(cuda, "CUDA_ROOTS", [])
    monkeypatch.delenv("CUDA_HOME", raising=False)
    err = _err(cli, "compile", models / "cnn.onnx", "--target", "cuda-sm86", "-o", tmp_path / "a")
    assert "nvcc" in err and "CUDA toolkit" in err


def test_output_exists_needs_force(cli, models, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep.txt").write_text("x")
    err = _err(cli, "compile", models / "cnn.onnx", "--target", "x86-64", "-o", tmp_path / "a")
    assert "already exists" in err and "--force" in err
    assert (tmp_path / "a" / "keep.txt").exists()
    rc, _, err = cli("compile", models / "cnn.onnx", "--target", "x86-64", "-o", tmp_path / "a", "--force")
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["layers.json", "manifest.json", "model.so"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_failed_compile_leaves_nothing(cli, models, tmp_path, monkeypatch):
    from pipeline import build

    def boom(*a, **k):
        raise DeployError("linking the library failed: simulated")

    monkeypatch.setattr(sys.modules["pipeline.compile"], "build_library", boom)
    _err(cli, "compile", models / "cnn.onnx", "--target", "x86-64", "-o", tmp_path / "a")
    assert list(tmp_path.iterdir()) == []


def test_tampered_artifact_is_refused(cli, models, tmp_path):
    art = pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path / "a")
    with open(art.library, "r+b") as f:
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 0xFF]))
    err = _err(cli, "run", art.path)
    assert "does not match the sha256" in err
    assert "not an artifact" in _err(cli, "run", tmp_path)


def test_artifact_for_another_cpu_is_refused_not_sigill(models, tmp_path):
    # A CPU with AMX and AVX-512 FP16: code for it dies with SIGILL on hosts without them.
    preset = tmp_path / "spr.toml"
    preset.write_text('description = "Sapphire Rapids"\nfamily = "cpu"\narch = "x86_64"\n'
                      '[target]\nkind = "llvm"\nmtriple = "x86_64-linux-gnu"\nmcpu = "sapphirerapids"\n')
    art = pipeline.compile(models / "cnn.onnx", str(preset), output=tmp_path / "a")
    missing = host.missing_features(art.manifest["target"]["cpu_features"])
    if not missing:
        pytest.skip("this host has every Sapphire Rapids feature")
    # run in a child process: if the check failed, SIGILL would kill only the child
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(art.path)], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "this CPU lacks features" in r.stderr and missing[0] in r.stderr and "Traceback" not in r.stderr
    m = json.loads((art.path / "manifest.json").read_text())
    assert "amx_tile" in m["target"]["cpu_features"]


def test_a_tvm_failure_in_a_step_names_the_step(cli, models, tmp_path, monkeypatch):
    """A TVM error inside a required stage is one message naming the step, with what to try."""
    from pipeline import optimize

    def broken(*a, **k):
        raise RuntimeError("InternalError: Check failed: something deep in TVM")

    monkeypatch.setattr(optimize, "_simplify", broken)
    err = _err(cli, "compile", models / "cnn.onnx", "--target", "x86-64", "-o", tmp_path / "a")
    assert "step 'optimize: simplify' failed" in err and "Check failed" in err and "--opt-level" in err
    assert "Traceback" not in err and "internal error" not in err
    assert not (tmp_path / "a").exists()


# Clean edges: a user error is exit 2 with one message, an internal error 3, Ctrl-C 130.

@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """tiny_mlp (input x float32[1, 64]) and its x86-64 artifact (art/)."""
    d = tmp_path_factory.mktemp("mlp")
    onnx.save(examples.tiny_mlp(), d / "mlp.onnx")
    pipeline.compile(d / "mlp.onnx", "x86-64", output=d / "art", check=False)
    return d


@pytest.fixture
def bad_arrays(tmp_path):
    """Array files deploy must refuse with a message: empty, pickled objects, .npy vs .npz."""
    (tmp_path / "empty.npy").write_bytes(b"")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}, None], dtype=object))
    np.save(tmp_path / "x.npy", np.zeros((1, 64), np.float32))
    np.savez(tmp_path / "x.npz", x=np.zeros((1, 64), np.float32))
    return tmp_path


@pytest.mark.parametrize("command", ["run", "verify", "bench", "profile"])
def test_bad_npy_inputs(cli, mlp, bad_arrays, command):
    extra = ["--model", mlp / "mlp.onnx"] if command == "verify" else []

    def err(name):
        return _err(cli, command, mlp / "art", *extra, "--input", f"x={bad_arrays / name}")

    e = err("empty.npy")
    assert f"cannot use {bad_arrays / 'empty.npy'} as input 'x': the file is empty" in e and "numpy.save" in e
    e = err("objects.npy")
    assert "as input 'x': it holds Python objects" in e and "fix: convert it to a numeric array" in e
    e = err("x.npz")
    assert "as input 'x': it is an .npz archive (1 array(s): x), not one .npy array" in e


def test_bad_npz_inputs(cli, mlp, bad_arrays, tmp_path):
    def err(*args):
        return _err(cli, "compile", mlp / "mlp.onnx", "--target", "x86-64", "-o", tmp_path / "a", *args)

    e = err("--check-inputs", bad_arrays / "x.npy")  # refused before the build, not after it
    assert "as --check-inputs: it is an .npy file (one array, without a name), not an .npz archive" in e
    assert "fix: save the arrays with numpy.savez" in e
    assert "--check-inputs: the file is empty" in err("--check-inputs", bad_arrays / "empty.npy")
    assert "--check-inputs: it holds Python objects" in err("--check-inputs", bad_arrays / "objects.npz")
    e = err("--precision", "int8", "--calibration", bad_arrays / "objects.npy")
    assert "as calibration data: it holds Python objects" in e
    assert not (tmp_path / "a").exists()


PRESET = 'description = "my board"\nfamily = "cpu"\narch = "x86_64"\n[target]\nkind = "llvm"\n'


@pytest.mark.parametrize("edit, why, fix", [
    (('arch = "x86_64"\n', ""), "is malformed: no 'arch'", 'add arch = "aarch64"'),
    (('family = "cpu"\n', ""), "is malformed: no 'family'", 'add family = "cpu"'),
    (('arch = "x86_64"', "arch = 3"), "'arch' must be a string, not an integer (3)", 'e.g. arch = "aarch64"'),
    (('[target]\nkind = "llvm"\n', 'target = "llvm"\n'), "'target' must be a table, not a string ('llvm')",
     'e.g. [target] with kind = "llvm"'),
    (('[target]', 'detect_host = "yes"\n[target]'), "'detect_host' must be true or false, not a string ('yes')",
     "e.g. detect_host = false"),
    (('kind = "llvm"', 'mcpu = "znver3"'), "[target] has no kind", 'add kind = "llvm" (CPU) or "cuda"'),
])
def test_malformed_target_preset(cli, models, tmp_path, edit, why, fix):
    (tmp_path / "my.toml").write_text(PRESET.replace(*edit))
    err = _err(cli, "compile", models / "cnn.onnx", "--target", tmp_path / "my.toml", "-o", tmp_path / "a")
    assert f"target preset {tmp_path / 'my.toml'}" in err and why in err and f"fix: {fix}" in err


@pytest.mark.parametrize("table, line, why", [
    ("build", 'verify = "yes"', "build.verify must be true or false, not a string ('yes')"),
    ("build", "output = 5", "build.output must be a string, not an integer (5)"),
    ("build", "jobs = true", "build.jobs must be an integer, not a boolean (true)"),
    ("target", "preset = 3", "targets.x86-64.preset must be a string, not an integer (3)"),
    ("target", "db = false", "targets.x86-64.db must be a string, not a boolean (false)"),
    ("model", 'targets = "x86-64"', "models.mlp.targets must be an array of strings, not a string ('x86-64')"),
    ("model", 'precisions = "fp32"', "models.mlp.precisions must be an array of strings, not a string ('fp32')"),
    ("model", 'atol = "big"', "models.mlp.atol must be a number, not a string ('big')"),
    ("model", 'opt_level = "3"', "models.mlp.opt_level must be an integer, not a string ('3')"),
    ("model", "opt_level = 7", "models.mlp.opt_level 7 is out of range"),
    ("model", "path = 3", "models.mlp.path must be a string, not an integer (3)"),
    ("model", "calibration = [1]", "models.mlp.calibration must be a string, not an array ([1])"),
])
def test_build_config_value_types(cli, tmp_path, table, line, why):
    lines = {"build": "", "target": "", "model": "" if line.startswith("path") else 'path = "mlp.onnx"'}
    lines[table] += "\n" + line
    cfg = tmp_path / "deploy.toml"
    cfg.write_text(f"[build]{lines['build']}\n[targets.x86-64]{lines['target']}\n[models.mlp]\n{lines['model']}\n")
    err = _err(cli, "build", cfg)
    assert f"{cfg}: {why}" in err and "fix: " in err
    assert not (tmp_path / "artifacts").exists()


def test_unwritable_output_paths(cli, mlp, tmp_path):
    art, blocker, folder = mlp / "art", tmp_path / "file", tmp_path / "dir.tar.gz"
    blocker.write_text("x")
    folder.mkdir()
    db = tmp_path / "db" / "x86-64-0123456789ab"
    db.mkdir(parents=True)
    (db / "target.json").write_text("{}")
    under_file = f"{blocker} is a file, not a directory"
    for args, why in [
        (("run", art, "-o", blocker), "it is a file, not a directory"),
        (("run", art, "-o", blocker / "out"), under_file),
        (("profile", art, "-o", blocker), "it is a file, not a directory"),
        (("profile", art, "-o", blocker / "out"), under_file),
        (("package", art, "-o", folder), "it is a directory"),
        (("package", art, "-o", blocker / "b.tar.gz"), under_file),
        (("db", "export", "--db", tmp_path / "db", "-o", folder), "it is a directory"),
        (("db", "export", "--db", tmp_path / "db", "-o", blocker / "db.tar.gz"), under_file),
    ]:
        err = _err(cli, *args)
        assert f"cannot write {args[-1]}: {why}" in err and "fix: choose another -o" in err, (args, err)
    assert blocker.read_text() == "x" and not list(folder.iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]
    rc, out, err = cli("run", art, "-o", tmp_path / "new" / "out")
    assert rc == 0 and (tmp_path / "new" / "out" / "y.npy").is_file(), err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_directory(cli, mlp, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        err = _err(cli, "run", mlp / "art", "-o", ro / "out")
        assert f"permission denied ({ro} is not writable)" in err
        assert "permission denied" in _err(cli, "package", mlp / "art", "-o", ro / "b.tar.gz")
    finally:
        ro.chmod(0o700)


def test_truncated_db_archive(cli, tmp_path):
    db = tmp_path / "db" / "x86-64-0123456789ab"
    db.mkdir(parents=True)
    (db / "target.json").write_text("{}")
    assert cli("db", "export", "--db", tmp_path / "db", "-o", tmp_path / "db.tar.gz")[0] == 0
    (tmp_path / "cut.tar.gz").write_bytes((tmp_path / "db.tar.gz").read_bytes()[:60])
    err = _err(cli, "db", "import", tmp_path / "cut.tar.gz", "--db", tmp_path / "into")
    assert "cut.tar.gz is not a tuning database archive: Compressed file ended" in err


def test_bench_and_profile_counts(cli, mlp):
    for args, why, fix in [(("bench", "--repeat", "0"), "--repeat 0 must be at least 1", "e.g. --repeat 20"),
                           (("bench", "--repeat", "-2"), "--repeat -2 must be at least 1", "e.g. --repeat 20"),
                           (("bench", "--iterations", "0"), "--iterations 0 must be at least 1", "--iterations 200"),
                           (("profile", "--runs", "0"), "--runs 0 must be at least 1", "e.g. --runs 20")]:
        err = _err(cli, args[0], mlp / "art", *args[1:])
        assert why in err and fix in err


def test_a_failed_inference_under_concurrency_is_an_error(cli, mlp, monkeypatch):
    """Not a smaller count of inferences per second: the engine runs here in a thread (the same
    protocol as its process), and one of the two requests in flight fails after a few runs."""
    import multiprocessing
    import threading

    from pipeline.run import bench

    class ThreadEngine(bench._Engine):
        def __init__(self, kind, path, threads, inputs_file):
            self.kind = kind
            self.conn, child = multiprocessing.Pipe()
            self.proc = threading.Thread(target=bench._serve, args=(kind, str(path), threads, str(inputs_file), child),
                                         daemon=True)
            self.proc.start()
            self._reply("ready")

        def kill(self):
            pass

    binds = []

    class Flaky(pipeline.Artifact):
        def bind(self, inputs):
            run = super().bind(inputs)
            binds.append(run)
            if len(binds) < 3:  # the timing runner and the first request's
                return run
            n = [0]

            def flaky():
                n[0] += 1
                if n[0] > 5:
                    raise RuntimeError("simulated failure of one request")
                return run()
            return flaky

    monkeypatch.setattr(bench, "_Engine", ThreadEngine)
    monkeypatch.setattr(bench, "Artifact", Flaky)
    monkeypatch.setenv("TVM_NUM_THREADS", os.environ.get("TVM_NUM_THREADS", "1"))  # restored after set_threads
    err = _err(cli, "bench", mlp / "art", "--concurrency", "2", "--seconds", "0.2", "--repeat", "1", "--warmup", "1")
    assert ("the deploy benchmark process failed: an inference failed with 2 requests in flight: "
            "RuntimeError: simulated failure of one request") in err


def test_interrupt_internal_error_and_eof_in_commands_and_callbacks(cli, monkeypatch, tmp_path):
    from pipeline import log, targets

    (tmp_path / "bad.toml").write_text('family = "cpu"\n')
    monkeypatch.setenv("DEPLOY_TARGETS_DIR", str(tmp_path))  # searched first: its bad preset is listed
    err = _err(cli, "targets")  # the `targets` group's callback lists the presets
    assert f"target preset {tmp_path / 'bad.toml'} is malformed: no 'description', 'arch', [target] table" in err
    for exc, rc, text in [(KeyboardInterrupt(), 130, "interrupted"),  # typer: exit 130 and not a word
                          (EOFError("simulated"), 3, "internal error: EOFError: simulated"),  # typer: 'Aborted.', 1
                          (RuntimeError("simulated"), 3, "internal error: RuntimeError: simulated")]:
        def raises(*a, exc=exc, **k):
            raise exc
        monkeypatch.setattr(targets, "list_presets", raises)
        got, out, err = cli("targets")
        assert got == rc and err.splitlines()[0] == text and "Traceback" not in err and "Aborted" not in err, err
    monkeypatch.setattr(log, "set_verbose", lambda flag: 1 / 0)  # the app's own callback (-v)
    got, out, err = cli("targets", "show", "x86-64")
    assert got == 3 and "internal error: ZeroDivisionError: division by zero" in err and "Traceback" not in err


ROOT = Path(__file__).resolve().parent.parent


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **extra)
    env.pop("DEPLOY_TUNING_DB", None)
    return env


def test_unwritable_cache(tmp_path):
    """deploy's cache under a regular file: importing deploy (which keeps a stand-in libcuda there)
    still works, and a command that writes the cache says what is wrong."""
    (tmp_path / "file").write_text("x")
    db = tmp_path / "db" / "x86-64-0123456789ab"
    db.mkdir(parents=True)
    (db / "target.json").write_text("{}")
    import tarfile

    with tarfile.open(tmp_path / "db.tar.gz", "w:gz") as tar:
        tar.add(db / "target.json", arcname=f"{db.name}/target.json")
    env = _env(XDG_CACHE_HOME=str(tmp_path / "file" / "cache"))
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "--help"], env=env, cwd=tmp_path, capture_output=True,
                       text=True)
    assert r.returncode == 0 and "compile" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "db", "import", "db.tar.gz"], env=env, cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    cache = tmp_path / "file" / "cache" / "deploy" / "tuning" / db.name
    assert f"error: cannot write tuning database {cache}: Not a directory" in r.stderr
    assert "fix: pass a writable --db DIR" in r.stderr and "Traceback" not in r.stderr


def _group(pgid: int) -> list[int]:
    """The processes of a process group."""
    pids = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and int((p / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                pids.append(int(p.name))
        except (OSError, IndexError, ValueError):
            pass
    return pids


def _ctrl_c(cmd, cwd, ready, timeout=240):
    """Run ``cmd`` in a process group of its own; once ``ready(pgid)``, send SIGINT to the whole group
    as a terminal's Ctrl-C does. Returns the exit code and stderr, once no process of the group is left."""
    # SIGINT back to its default in the child: a test run started in the background by a shell
    # (a CI runner's `cmd &`) inherits it ignored, and Python then never raises KeyboardInterrupt
    p = subprocess.Popen(cmd, cwd=cwd, env=_env(), start_new_session=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + timeout
        while not ready(p.pid):
            assert p.poll() is None, p.communicate()
            assert time.time() < deadline, "never got ready"
            time.sleep(0.1)
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=60)
        deadline = time.time() + 15
        while _group(p.pid) and time.time() < deadline:  # workers end with the build, not after it
            time.sleep(0.2)
        assert not _group(p.pid), "processes left running"
    finally:
        if p.poll() is None or _group(p.pid):
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return p.returncode, err


def _interrupted_once(rc, err):
    assert rc == 130, err
    assert err.count("interrupted") == 1 and "Traceback" not in err and "KeyboardInterrupt" not in err, err


def test_ctrl_c_during_a_parallel_build(tmp_path):
    onnx.save(examples.tiny_cnn(), tmp_path / "cnn.onnx")
    onnx.save(examples.tiny_mlp(), tmp_path / "mlp.onnx")
    (tmp_path / "deploy.toml").write_text('[targets.x86-64]\n[models.cnn]\npath = "cnn.onnx"\n'
                                          '[models.mlp]\npath = "mlp.onnx"\n')
    out = tmp_path / "artifacts"

    def building(pgid):  # both workers started, one of them (at least) in the middle of its compile
        return len(_group(pgid)) >= 3 and any(out.glob(".*.partial-*"))

    rc, err = _ctrl_c([sys.executable, "-m", "pipeline.cli", "build", "deploy.toml", "--jobs", "2"], tmp_path,
                      building)
    _interrupted_once(rc, err)


def test_ctrl_c_during_profile(mlp, tmp_path):
    lib = str((mlp / "art" / "model.so").resolve())

    def profiling(pgid):  # the deploy engine's process has loaded the library: it is timing it
        for pid in set(_group(pgid)) - {pgid}:
            try:
                if lib in Path(f"/proc/{pid}/maps").read_text():
                    return True
            except OSError:
                pass
        return False

    rc, err = _ctrl_c([sys.executable, "-m", "pipeline.cli", "profile", str(mlp / "art"), "--warmup", "1000000000",
                       "-o", str(tmp_path / "report")], tmp_path, profiling)
    _interrupted_once(rc, err)
    assert not (tmp_path / "report").exists()
