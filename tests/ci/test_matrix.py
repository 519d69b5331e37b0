"""`deploy build`: a matrix from one config, cached by content, reproducible, safe under CI conditions."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from pipeline import examples
from pipeline.ci import entry as matrix
from pipeline.files import sha256_file

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
TARGETS = ["x86-64", "cuda-sm86", "rpi4"]


def write_config(d: Path, models: dict, targets=TARGETS, extra: str = "") -> Path:
    lines = ['[build]', 'output = "artifacts"', ""]
    lines += [f"[targets.{t}]" for t in targets] + [""]
    for name, body in models.items():
        lines += [f"[models.{name}]", body, ""]
    (d / "deploy.toml").write_text("\n".join(lines) + extra)
    return d / "deploy.toml"


def make_project(d: Path, targets=TARGETS) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    onnx.save(examples.tiny_cnn(), d / "cnn.onnx")
    onnx.save(examples.tiny_mlp(), d / "mlp.onnx")
    return write_config(d, {"cnn": 'path = "cnn.onnx"\ninput_shapes = { image = [1, 3, 32, 32] }',
                            "mlp": 'path = "mlp.onnx"'}, targets)


def sums(out: Path) -> dict[str, str]:
    return {line[66:]: line[:64] for line in (out / "SHA256SUMS").read_text().splitlines()}


def run_cli(*args, cwd, env=None, **kw):
    e = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([PY, "-m", "pipeline.cli", *map(str, args)], cwd=cwd, env=e, capture_output=True,
                          text=True, **kw)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project with 2 models x (x86-64, cuda-sm86, rpi4), built once from clean."""
    d = tmp_path_factory.mktemp("proj")
    make_project(d)
    from pipeline.cli import _main

    try:
        rc = _main(["build", str(d / "deploy.toml"), "--json", "--junit", str(d / "report.xml")])
    except SystemExit as e:
        rc = e.code
    assert rc in (0, None)
    first = {"sums": sums(d / "artifacts"), "index": json.loads((d / "artifacts/index.json").read_text())}
    return d, first


def test_first_build_makes_every_entry_verifies_what_runs_here(project):
    d, first = project
    out = d / "artifacts"
    entries = first["index"]["entries"]
    names = {f"{m}-{t}" for m in ("cnn", "mlp") for t in TARGETS}
    assert set(entries) == names
    for name, e in entries.items():
        assert e["status"] == "built" and len(e["key"]) == 64
        m = e["manifest"]
        assert m["cache"]["key"] == e["key"] and m["library"]["sha256"] == sha256_file(out / name / "model.so")
        assert "time_utc" not in m["build"] and "seconds" not in m["build"]  # kept out of the hashed files
        assert e["built_utc"]  # ... and recorded in the index instead
        v = e["verification"]
        if name.endswith(("x86-64", "rpi4")):  # natively, and under qemu with the artifact's runner
            assert v["status"] == "passed" and v["max_abs"] < 1e-4
        else:
            assert v["status"] == "not verified" and "needs an NVIDIA GPU" in v["reason"]
    # SHA256SUMS covers every file of every artifact, and checks out with sha256sum
    files = {p.relative_to(out).as_posix() for n in names for p in (out / n).rglob("*") if p.is_file()}
    assert set(first["sums"]) == files
    subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=out, check=True)
    # no temp or half-made dirs left
    assert not [p for p in out.iterdir() if ".partial-" in p.name or ".old-" in p.name]
    junit = ET.parse(d / "report.xml").getroot()
    assert junit.find("testsuite").get("tests") == "6" and junit.find("testsuite").get("failures") == "0"


def test_second_run_rebuilds_nothing(project, cli):
    d, first = project
    out = d / "artifacts"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("model.so")}
    rc, stdout, err = cli("build", d / "deploy.toml", "--json")
    assert rc == 0, err
    summary = json.loads(stdout)
    assert summary["counts"] == {"built": 0, "cached": 6, "failed": 0, "verified": 4, "total": 6}
    assert "cached (key unchanged)" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model.so")} == before
    assert sums(out) == first["sums"]


def test_two_clean_builds_in_different_dirs_are_identical(project, tmp_path):
    """A separate process, another directory depth, TMPDIR and hash seed: the same bytes."""
    d, first = project
    other = tmp_path / "x" / "y"
    make_project(other)
    (tmp_path / "tmp").mkdir()
    r = run_cli("build", "deploy.toml", "--jobs", "2", cwd=other,
                env={"TMPDIR": str(tmp_path / "tmp"), "PYTHONHASHSEED": "123"})
    assert r.returncode == 0, r.stderr
    assert (other / "artifacts/SHA256SUMS").read_text() == "".join(
        f"{h}  {p}\n" for p, h in sorted(first["sums"].items()))


def test_changing_one_model_rebuilds_only_its_entries(project, cli):
    d, _ = project
    onnx.save(examples.tiny_mlp(seed=7), d / "mlp.onnx")
    rc, stdout, err = cli("build", d / "deploy.toml", "--json")
    assert rc == 0, err
    status = {e["name"]: e["status"] for e in json.loads(stdout)["entries"]}
    assert status == {**{f"cnn-{t}": "cached" for t in TARGETS}, **{f"mlp-{t}": "built" for t in TARGETS}}
    subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=d / "artifacts", check=True)
    # --only limits the run, and a changed option (opt_level) is a changed key
    cfg = (d / "deploy.toml").read_text().replace('path = "mlp.onnx"', 'path = "mlp.onnx"\nopt_level = 2')
    (d / "deploy.toml").write_text(cfg)
    rc, stdout, err = cli("build", d / "deploy.toml", "--json", "--only", "mlp-x86-64,cnn-rpi4")
    assert rc == 0, err
    assert {e["name"]: e["status"] for e in json.loads(stdout)["entries"]} == {"cnn-rpi4": "cached",
                                                                                "mlp-x86-64": "built"}


def _unsupported_model(path: Path) -> None:
    """A model with an op TVM's importer lacks (Det)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 3])
    node = helper.make_node("Det", ["x"], ["y"], name="det")
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    onnx.save(helper.make_model(helper.make_graph([node], "g", [x], [y]),
                                opset_imports=[helper.make_opsetid("", 17)]), path)


def test_failing_entries_do_not_stop_the_others(tmp_path, cli):
    onnx.save(examples.tiny_mlp(), tmp_path / "mlp.onnx")
    _unsupported_model(tmp_path / "rnn.onnx")
    cfg = write_config(tmp_path, {
        "rnn": 'path = "rnn.onnx"',
        "mlp": 'path = "mlp.onnx"\nprecisions = ["fp32", "int8"]\ncalibration = "calib"',
        "gone": 'path = "missing.onnx"',
    }, targets=["x86-64"])
    rc, stdout, err = cli("build", cfg, "--json", "--junit", tmp_path / "ci/report.xml")
    assert rc == 1 and "Traceback" not in err
    entries = {e["name"]: e for e in json.loads(stdout)["entries"]}
    assert entries["mlp-x86-64"]["status"] == "built" and entries["mlp-x86-64"]["verification"]["status"] == "passed"
    assert entries["rnn-x86-64"]["status"] == "failed" and "Det" in entries["rnn-x86-64"]["error"]
    assert entries["gone-x86-64"]["status"] == "failed" and "model file not found" in entries["gone-x86-64"]["error"]
    int8 = entries["mlp-x86-64-int8"]
    assert int8["status"] == "failed" and "calibration data" in int8["error"] and "does not exist" in int8["error"]
    assert not (tmp_path / "artifacts/rnn-x86-64").exists()
    suite = ET.parse(tmp_path / "ci/report.xml").getroot().find("testsuite")
    assert suite.get("tests") == "4" and suite.get("failures") == "3"
    failed = {c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None}
    assert failed == {"rnn-x86-64", "gone-x86-64", "mlp-x86-64-int8"}
    index = json.loads((tmp_path / "artifacts/index.json").read_text())["entries"]
    assert index["rnn-x86-64"]["status"] == "failed" and "mlp-x86-64/model.so" in sums(tmp_path / "artifacts")
    # a model that breaks: its previous (now stale) artifact is removed, not shipped as current
    _unsupported_model(tmp_path / "mlp.onnx")
    rc, stdout, _ = cli("build", cfg, "--json", "--only", "mlp-x86-64")
    assert rc == 1 and json.loads(stdout)["entries"][0]["status"] == "failed"
    assert not (tmp_path / "artifacts/mlp-x86-64").exists() and not sums(tmp_path / "artifacts")


# `deploy build`, made to hang once the entry named in argv[1] has its manifest written and before
# its rename (a marker file says it got there), so that a test can kill it midway
STALLING_BUILD = """
import sys, time
from pipeline.ci import entry
from pipeline.cli import main

stall, write = sys.argv.pop(1), entry.write_json

def write_json(path, data):
    write(path, data)
    if path.parent.name.startswith(f".{stall}.partial-"):
        (path.parent / ".stalled").touch()
        time.sleep(3600)

entry.write_json = write_json
sys.argv[0] = "deploy"
main()
"""


def test_killed_build_leaves_no_half_artifact_and_next_run_recovers(tmp_path, cli):
    cfg = make_project(tmp_path, targets=["x86-64"])
    out = tmp_path / "artifacts"
    p = subprocess.Popen([PY, "-c", STALLING_BUILD, "mlp-x86-64", "build", str(cfg)], cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not list(out.glob(".mlp-x86-64.partial-*/.stalled")):
            assert p.poll() is None and time.time() < deadline, "the build ended before reaching the hook"
            time.sleep(0.2)
        p.send_signal(signal.SIGKILL)  # midway: the library is written, the rename has not happened
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
    assert (out / "cnn-x86-64/model.so").is_file()
    assert not (out / "mlp-x86-64").exists() and list(out.glob(".mlp-x86-64.partial-*"))
    rc, stdout, err = cli("build", cfg, "--json")
    assert rc == 0, err
    assert {e["name"]: e["status"] for e in json.loads(stdout)["entries"]} == {"cnn-x86-64": "cached",
                                                                                "mlp-x86-64": "built"}
    assert "removed what a killed build left: .mlp-x86-64.partial-" in err
    assert not [q for q in out.iterdir() if ".partial-" in q.name or ".old-" in q.name]
    subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=out, check=True)


def test_two_jobs_building_into_one_directory(tmp_path):
    cfg = make_project(tmp_path, targets=["x86-64"])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([PY, "-m", "pipeline.cli", "build", str(cfg), "--json", "--no-verify"], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    statuses = [{e["name"]: e["status"] for e in json.loads(o[0])["entries"]} for o in outs]
    for name in ("cnn-x86-64", "mlp-x86-64"):  # each entry built by one job, found cached by the other
        assert sorted(s[name] for s in statuses) == ["built", "cached"]
    out = tmp_path / "artifacts"
    subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=out, check=True)
    assert set(json.loads((out / "index.json").read_text())["entries"]) == {"cnn-x86-64", "mlp-x86-64"}


def test_disk_full_and_permission_errors_are_reported(tmp_path, cli, monkeypatch):
    cfg = make_project(tmp_path, targets=["x86-64"])

    def full(entry, *a, **k):
        if entry.model_name == "mlp":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(entry, *a, **k)

    real = matrix._compile_into
    monkeypatch.setattr(matrix, "_compile_into", full)
    rc, stdout, err = cli("build", cfg, "--json", "--no-verify")
    assert rc == 1
    entries = {e["name"]: e for e in json.loads(stdout)["entries"]}
    assert entries["cnn-x86-64"]["status"] == "built"
    assert entries["mlp-x86-64"]["error"].startswith("disk full") and "free disk space" in entries["mlp-x86-64"]["hint"]

    def denied(out):
        raise OSError(errno.EACCES, "Permission denied", str(out))

    monkeypatch.setattr(matrix.Path, "mkdir", lambda self, *a, **k: denied(self))
    rc, _, err = cli("build", cfg)
    assert rc == 2 and "permission denied" in err and "Traceback" not in err


def test_config_errors_are_one_message(tmp_path, cli):
    cfg = tmp_path / "deploy.toml"
    cfg.write_text('[targets.x86-64]\n[models.a]\npath = "a.onnx"\nshapes = 1\n')
    rc, _, err = cli("build", cfg)
    assert rc == 2 and "unknown key(s) ['shapes'] in table 'models.a'" in err and err.count("error:") == 1
    cfg.write_text('[targets.x86-64]\n[models.a]\npath = "a.onnx"\ntargets = ["rpi9"]\n')
    rc, _, err = cli("build", cfg)
    assert rc == 2 and "rpi9" in err
    cfg.write_text('[targets.x86-64]\n[models.a]\npath = "a.onnx"\n')
    rc, _, err = cli("build", cfg, "--only", "zzz")
    assert rc == 2 and "matches no entry" in err and "a-x86-64" in err
    rc, _, err = cli("build", tmp_path / "nope.toml")
    assert rc == 2 and "build config not found" in err


def test_key_covers_tuning_db_calibration_and_options(tmp_path):
    from pipeline.targets import get_preset

    onnx.save(examples.tiny_mlp(), tmp_path / "m.onnx")
    (tmp_path / "db").mkdir()
    (tmp_path / "db/database_tuning_record.json").write_text("[1]\n")
    (tmp_path / "calib").mkdir()
    np.save(tmp_path / "calib/x.npy", np.zeros((1, 64), np.float32))
    e = matrix.Entry(name="m-x86-64", model_name="m", model=tmp_path / "m.onnx", target="x86-64", preset="x86-64",
                     precision="int8", calibration=tmp_path / "calib", db=tmp_path / "db")
    preset = get_preset("x86-64")
    k0, inputs = matrix.entry_key(e, preset)
    assert inputs["tuning_db_sha256"] and inputs["calibration_sha256"] and str(tmp_path) not in json.dumps(inputs)
    (tmp_path / "db/database_tuning_record.json").write_text("[2]\n")
    k1, _ = matrix.entry_key(e, preset)
    np.save(tmp_path / "calib/x.npy", np.ones((1, 64), np.float32))
    k2, _ = matrix.entry_key(e, preset)
    k3, _ = matrix.entry_key(matrix.Entry(**{**e.__dict__, "opt_level": 2}), preset)
    k4, _ = matrix.entry_key(matrix.Entry(**{**e.__dict__, "precision": "fp32"}), preset)  # no calibration then
    assert len({k0, k1, k2, k3, k4}) == 5
    shutil.copytree(tmp_path / "db", tmp_path / "db2")
    assert matrix.entry_key(matrix.Entry(**{**e.__dict__, "db": tmp_path / "db2"}), preset)[0] == k2  # content, not path


def test_key_covers_the_per_user_database_an_entry_without_db_applies(tmp_path, monkeypatch):
    """An entry with no db compiles with the per-user database's records: they change its key."""
    from pipeline.targets import get_preset
    from pipeline.tune.database import path_for

    onnx.save(examples.tiny_mlp(), tmp_path / "m.onnx")
    monkeypatch.setenv("DEPLOY_TUNING_DB", str(tmp_path / "user-db"))
    e = matrix.Entry(name="m-x86-64", model_name="m", model=tmp_path / "m.onnx", target="x86-64", preset="x86-64")
    preset = get_preset("x86-64")
    k0, inputs = matrix.entry_key(e, preset)
    assert inputs["tuning_db_sha256"] is None
    path_for(preset, None).mkdir(parents=True)
    (path_for(preset, None) / "database_tuning_record.json").write_text("[1]\n")
    k1, inputs = matrix.entry_key(e, preset)
    assert inputs["tuning_db_sha256"] and k1 != k0


def _tamper(art: Path, library: Path | None = None, drop_output: bool = False) -> None:
    """Change an artifact as a bad cache restore or a hand edit would, keeping its manifest
    consistent with its library (so the cache takes it as current and only running it can tell)."""
    m = json.loads((art / "manifest.json").read_text())
    if library is not None:  # a new file: writing into the one this process has mapped would crash it
        (art / "model.so").unlink()
        shutil.copy(library, art / "model.so")
        m["library"]["sha256"], m["library"]["bytes"] = sha256_file(art / "model.so"), (art / "model.so").stat().st_size
    if drop_output:
        m["model"]["outputs"] = m["model"]["outputs"][:-1]
    (art / "manifest.json").write_text(json.dumps(m, indent=2))


def test_build_fails_on_an_artifact_that_mismatches_crashes_or_drops_an_output(tmp_path, cli):
    """`deploy build` re-verifies a cached artifact whose files changed and fails the entry, naming
    it and why; `deploy verify` gives the same verdict and figures on the same artifact."""
    import pipeline

    d = tmp_path / "proj"
    d.mkdir()
    onnx.save(examples.tiny_mlp(), d / "mlp.onnx")
    onnx.save(examples.tiny_mlp(seed=7), d / "other.onnx")  # same inputs and outputs, other weights
    config = write_config(d, {"mlp": 'path = "mlp.onnx"'}, ["x86-64"])
    out = d / "artifacts"
    assert cli("build", config)[0] == 0
    other = pipeline.compile(d / "other.onnx", "x86-64", output=tmp_path / "other").path / "model.so"
    garbage = tmp_path / "garbage.so"
    garbage.write_bytes(b"\x7fELF not really a library")

    cases = [("mismatch", dict(library=other), "max abs error"),
             ("crash", dict(library=garbage), "the artifact failed to run"),
             ("dropped output", dict(drop_output=True), "missing from the artifact's outputs")]
    for what, change, reason in cases:
        if not (out / "mlp-x86-64").exists():
            assert cli("build", config)[0] == 0, what  # the last case's failure removed it
        _tamper(out / "mlp-x86-64", **change)
        shutil.copytree(out / "mlp-x86-64", tmp_path / what)
        rc, stdout, err = cli("build", config, "--json")
        assert rc == 1, what
        (r,) = json.loads(stdout)["entries"]
        assert r["name"] == "mlp-x86-64" and r["status"] == "failed" and reason in r["error"], (what, r)
        assert r["verification"]["status"] == "failed"
        assert not (out / "mlp-x86-64").exists()  # a broken artifact is not left to ship
        assert "mlp-x86-64" not in (out / "SHA256SUMS").read_text()
        vrc, vout, verr = cli("verify", tmp_path / what, "--model", d / "mlp.onnx")
        assert vrc == 1 and "FAIL" in vout and reason in vout + verr, (what, vout, verr)
        if what == "mismatch":  # the same figure in both verdicts
            figure = vout.split("max abs error ")[1].split(",")[0]
            assert f"max abs error {figure}" in r["error"]


def test_verify_build_and_compile_agree_on_a_good_artifact(tmp_path, cli):
    """One rule: compile's built-in check record, `deploy verify` and `deploy build` report the same
    tolerance and the same max error for the same artifact."""
    d = tmp_path / "proj"
    d.mkdir()
    onnx.save(examples.tiny_cnn(), d / "cnn.onnx")
    config = write_config(d, {"cnn": 'path = "cnn.onnx"'}, ["x86-64"])
    rc, stdout, _ = cli("build", config, "--json")
    assert rc == 0
    (r,) = json.loads(stdout)["entries"]
    art = d / "artifacts" / "cnn-x86-64"
    rc, vout, _ = cli("verify", art, "--model", d / "cnn.onnx")
    assert rc == 0 and vout.startswith("ok")
    import pipeline

    check = pipeline.compile(d / "cnn.onnx", "x86-64", output=tmp_path / "c").manifest["check"]
    assert check["status"] == r["verification"]["status"] == "passed"
    assert check["tolerance"] == r["verification"]["tolerance"]
    assert check["outputs"] == r["verification"]["outputs"]
    (name, figs), = check["outputs"].items()
    assert f"{name}: max abs error {figs['max_abs']:.3g}" in vout
