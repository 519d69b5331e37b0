"""deploy as users install it: a wheel built from a clean copy of the tree holds every module and
every piece of data, installs into a fresh virtual environment (not editable), and compiles and
verifies the bundled example from a directory outside the checkout, for x86-64 and for rpi4
(cross-compiled, verified under qemu-user)."""

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd, timeout=900, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _clean_copy(dest: Path) -> Path:
    """The files git would commit (tracked, plus untracked ones it does not ignore), nothing else:
    no .venv, no build/ or *.egg-info from an editable install, no artifacts."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the clean copy is made from git's file list")
    listed = _run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).stdout
    for rel in filter(None, listed.split("\0")):
        src, dst = ROOT / rel, dest / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the work tree, not yet committed
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = _clean_copy(tmp_path_factory.mktemp("tree") / "deploy")
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", "-w", dist, src])
    (whl,) = dist.glob("deploy-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel and its dependencies installed by pip, no -e."""
    env = tmp_path_factory.mktemp("venv") / "env"
    venv.create(env, with_pip=True)
    py = env / "bin" / "python"
    _run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel])
    return env


def test_wheel_holds_every_module_and_the_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "pipeline").rglob("*.py")}
    assert len(modules) > 100
    assert sorted(modules - names) == []
    presets = {p.relative_to(ROOT).as_posix() for p in (ROOT / "pipeline" / "presets").glob("*.toml")}
    assert {"pipeline/presets/x86-64.toml", "pipeline/presets/rpi4.toml"} <= presets
    assert sorted(presets - names) == []
    board = ROOT / "pipeline" / "backends" / "cpu" / "board" / "src"
    sources = {p.relative_to(ROOT).as_posix() for p in board.rglob("*") if p.is_file()}
    assert "pipeline/backends/cpu/board/src/deploy_runner.cc" in sources
    assert sorted(sources - names) == []
    assert not [n for n in names if n.startswith(("tests/", "scripts/", "examples/", "targets/"))]


def test_installed_wheel_compiles_and_verifies_outside_the_checkout(installed, tmp_path):
    deploy = installed / "bin" / "deploy"
    work = tmp_path / "user"
    work.mkdir()
    shutil.copy(ROOT / "examples" / "tiny_cnn.onnx", work / "tiny_cnn.onnx")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DEPLOY_TARGETS_DIR")}
    env["PATH"] = f"{installed / 'bin'}{os.pathsep}{env.get('PATH', '')}"

    where = _run([installed / "bin" / "python", "-c", "import pipeline; print(pipeline.__file__)"],
                 cwd=work, env=env).stdout.strip()
    assert where.startswith(str(installed)), where  # the wheel's copy, not the checkout's
    version = _run([deploy, "--version"], cwd=work, env=env).stdout
    assert version.startswith("deploy ") and "apache-tvm 0.27" in version and "onnxruntime " in version
    presets = _run([deploy, "targets"], cwd=work, env=env).stdout
    assert "x86-64" in presets and "rpi4" in presets and "cuda-sm90" in presets

    for target in ("x86-64", "rpi4"):
        out = work / f"cnn-{target}"
        _run([deploy, "compile", "tiny_cnn.onnx", "--target", target, "-o", out], cwd=work, env=env)
        assert (out / "model.so").is_file() and (out / "manifest.json").is_file()
        r = _run([deploy, "verify", out, "--model", "tiny_cnn.onnx"], cwd=work, env=env)
        assert r.stdout.startswith("ok"), r.stdout
    assert (work / "cnn-rpi4" / "runner").is_file()  # built from the wheel's runner source
