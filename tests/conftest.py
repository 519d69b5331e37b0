import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import pipeline  # noqa: E402  (loads TVM with the CUDA stand-in first)
from pipeline import examples  # noqa: E402
from pipeline.cli import _main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


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
    from pipeline.verify import reference_outputs

    return reference_outputs(model_path, inputs)


def assert_matches_ort(artifact, model_path, inputs=None, atol=1e-4, rtol=1e-3):
    from pipeline.runtime import random_inputs

    inputs = inputs or random_inputs(artifact.inputs, seed=1)
    ours = artifact(inputs)
    ref = ort_run(model_path, inputs)
    assert set(ours) == set(ref)
    for k in ref:
        np.testing.assert_allclose(ours[k], ref[k], atol=atol, rtol=rtol)
