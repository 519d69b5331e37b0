import pytest

from pipeline import DeployError
from pipeline.targets import get_preset, list_presets

REQUIRED = ["x86-64", "x86-64-v3", "x86-64-v4", "cuda-sm80", "cuda-sm86", "cuda-sm89", "cuda-sm90",
            "rpi4", "rpi5", "jetson-orin", "armv7"]


def test_required_presets_exist_and_make_tvm_targets():
    names = {p.name for p in list_presets()}
    assert set(REQUIRED) <= names
    for p in list_presets():
        t = p.tvm_target()
        assert str(t.kind.name) == p.target["kind"]
        if p.family == "cuda":
            assert t.host is not None and str(t.attrs["arch"]) == p.target["arch"]
        if p.is_cross:
            assert p.cross_package and p.qemu and p.qemu_cpu


def test_host_preset_detects_cpu():
    from tvm.target import codegen

    j = get_preset("x86-64").target_json()
    assert j["mcpu"] == str(codegen.llvm_get_system_cpu()) and j["mcpu"] not in ("native", "generic")
    assert j["num-cores"] >= 1


def test_unknown_target_lists_valid_ones(cli):
    with pytest.raises(DeployError) as e:
        get_preset("tpu-v9")
    assert "rpi4" in e.value.hint and "cuda-sm90" in e.value.hint
    rc, out, err = cli("targets", "show", "tpu-v9")
    assert rc == 2 and "unknown target 'tpu-v9'" in err and "Traceback" not in err


def test_targets_cli(cli):
    rc, out, _ = cli("targets")
    assert rc == 0 and all(n in out for n in REQUIRED)
    rc, out, _ = cli("targets", "show", "rpi4")
    assert rc == 0 and '"mtriple": "aarch64-linux-gnu"' in out and "cortex-a72" in out


def test_user_preset_directory_is_searched_first(tmp_path, monkeypatch, cli):
    """DEPLOY_TARGETS_DIR adds a directory of the user's own presets; one with a built-in's name
    replaces it, and the built-ins stay listed."""
    from pipeline.targets import builtin_dir

    (tmp_path / "myboard.toml").write_text(
        (builtin_dir() / "rpi4.toml").read_text().replace('description = "', 'description = "my board: ', 1))
    (tmp_path / "x86-64.toml").write_text((builtin_dir() / "x86-64-v3.toml").read_text())
    monkeypatch.setenv("DEPLOY_TARGETS_DIR", str(tmp_path))
    names = {p.name for p in list_presets()}
    assert {"myboard", "rpi4", "cuda-sm90"} <= names
    assert get_preset("myboard").arch == "aarch64" and get_preset("myboard").path == tmp_path / "myboard.toml"
    assert get_preset("x86-64").path == tmp_path / "x86-64.toml"
    rc, out, _ = cli("targets")
    assert rc == 0 and "myboard" in out and "rpi4" in out
