"""The test sets themselves: a skip for a set-up step scripts/setup.sh should have done fails the
run under DEPLOY_REQUIRE_SETUP=1 (as .ci/run sets it), and the summary line counts skips by reason."""

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _pytest(tmp_path, require: bool):
    (tmp_path / "test_sample.py").write_text(
        "import pytest\nfrom conftest import needs_program\n\n"
        "@needs_program('deploy-no-such-program')\ndef test_needs_it():\n    pass\n\n"
        "def test_cpu_feature():\n    pytest.skip('this CPU has no AVX-512 VNNI')\n\n"
        "def test_plain():\n    pass\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    env.pop("DEPLOY_REQUIRE_SETUP", None)
    if require:
        env["DEPLOY_REQUIRE_SETUP"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_sample.py")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def test_skip_summary_and_missing_setup_step_fails_under_ci(tmp_path):
    r = _pytest(tmp_path, require=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 skipped: not set up: deploy-no-such-program (scripts/setup.sh installs" in r.stdout
    assert "this CPU has no AVX-512 VNNI (x1)" in r.stdout
    r = _pytest(tmp_path, require=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 test(s) skipped for a set-up step that scripts/setup.sh should have done" in r.stdout
