import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import pipeline  # noqa: E402  (loads TVM with the CUDA stand-in first)
from pipeline import examples  # noqa: E402
from pipeline.cli import _main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# A skip whose reason starts so is a set-up step scripts/setup.sh should have done (a program, a
# package): .ci/run sets DEPLOY_REQUIRE_SETUP=1 and such a skip fails the run. Skips for what this
# machine cannot have (a CPU feature, a GPU) stay skips; the summary counts both.
NOT_SET_UP = "not set up:"


def needs_program(name: str, package: str | None = None):
    """Skip a test when a program scripts/setup.sh installs is missing (a failure under .ci/run)."""
    import shutil

    return pytest.mark.skipif(shutil.which(name) is None,
                              reason=f"{NOT_SET_UP} {name} (scripts/setup.sh installs {package or name} as root)")


def needs_module(name: str):
    """The module, or a skip when scripts/setup.sh's test extras are not installed (a failure under .ci/run)."""
    try:
        return __import__(name)
    except ImportError:
        pytest.skip(f"{NOT_SET_UP} python module {name} (scripts/setup.sh installs the test extras)",
                    allow_module_level=True)


def pytest_terminal_summary(terminalreporter):
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons: dict[str, int] = {}
    for rep in skipped:
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    terminalreporter.write_line(f"{len(skipped)} skipped: " + "; ".join(f"{r} (x{n})" for r, n in sorted(reasons.items())))


def pytest_sessionfinish(session, exitstatus):
    import os

    if os.environ.get("DEPLOY_REQUIRE_SETUP") != "1":
        return
    rep = session.config.pluginmanager.get_plugin("terminalreporter")
    missing = [r for r in (rep.stats.get("skipped", []) if rep else [])
               if NOT_SET_UP in (r.longrepr[2] if isinstance(r.longrepr, tuple) else str(r.longrepr))]
    if missing:
        if rep:
            rep.write_line(f"DEPLOY_REQUIRE_SETUP: {len(missing)} test(s) skipped for a set-up step that "
                           "scripts/setup.sh should have done", red=True)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Path:
    """A folder of small ONNX models built with onnx.helper."""
    d = tmp_path_factory.mktemp("models")
    onnx.save(examples.tiny_cnn(), d / "cnn.onnx")
    onnx.save(examples.tiny_cnn(batch="N"), d / "cnn_dyn.onnx")
    return d


@pytest.fixture
def cli(capsys):
    """Run the deploy CLI in-process; returns (exit code, stdout, stderr)."""

    def run(*args):
        try:
            rc = _main([str(a) for a in args])
        except SystemExit as e:  # typer exits through SystemExit
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out = capsys.readouterr()
        return rc, out.out, out.err

    return run


def ort_run(model_path, inputs):
    from pipeline.run.verify import reference_outputs

    return reference_outputs(model_path, inputs)


def assert_matches_ort(artifact, model_path, inputs=None, atol=1e-4, rtol=1e-3):
    from pipeline.run.runtime import random_inputs

    inputs = inputs or random_inputs(artifact.inputs, seed=1)
    ours = artifact(inputs)
    ref = ort_run(model_path, inputs)
    assert set(ours) == set(ref)
    for k in ref:
        np.testing.assert_allclose(ours[k], ref[k], atol=atol, rtol=rtol)


def onnx_model(nodes, inputs, outputs, inits=(), opset=17):
    """A model whose output types come from onnx's shape inference."""
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_empty_tensor_value_info(n) for n in outputs],
                          [numpy_helper.from_array(a, n) for n, a in inits])
    m = onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]))
    inferred = {vi.name: vi for vi in m.graph.value_info}
    for out in m.graph.output:
        out.CopyFrom(inferred[out.name])
    onnx.checker.check_model(m)
    return m
