"""Verify: run an artifact and ONNX Runtime on the same inputs and give the verdict.

The comparison is the built-in check's (``check.judge``): the precision's tolerance (``--atol``/
``--rtol`` override it), cosine for fp16 and int8, NaN where ONNX Runtime has NaN counting as
equal, and for an int8 artifact the QDQ model it was compiled from (``reference.onnx`` in the
artifact) as the reference, the float model as the second opinion. ``deploy verify``,
``deploy build`` and ``compile``'s check so give the same verdict on the same artifact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import log
from .check import Verdict, judge, tolerance
from ..errors import DeployError
from ..files import sha256_file
from .reference import reference_outputs  # noqa: F401 - the reference's outputs, for scripts and tests
from .runtime import Artifact


def check_model_matches(artifact: Artifact, model_path: str | Path) -> None:
    recorded = artifact.manifest["model"]["sha256"]
    if sha256_file(Path(model_path)) != recorded:
        log.warn(f"{model_path} is not the file this artifact was compiled from (sha256 differs)")


def precision_of(artifact: Artifact) -> str:
    """The precision the artifact computes in, as its manifest records it."""
    return (artifact.manifest.get("precision") or {}).get("compute", "fp32")


def int8_reference(artifact: Artifact) -> Path | None:
    """The QDQ model an int8 artifact was compiled from, where the artifact holds it."""
    ref = (artifact.manifest.get("quantization") or {}).get("reference")
    if not ref:
        return None
    path = artifact.path / ref["file"]
    if not path.is_file() or sha256_file(path) != ref["sha256"]:
        raise DeployError(f"{path} is missing or does not match the sha256 in its manifest",
                          hint="recompile the artifact, or restore the original files")
    return path


def verify(artifact: Artifact, model_path: str | Path, inputs: dict[str, np.ndarray] | None = None,
           atol: float | None = None, rtol: float | None = None, seed: int = 0,
           points: list[dict[str, int]] | None = None) -> Verdict:
    """The artifact's outputs against ONNX Runtime's on ``inputs`` (default: seeded random ones,
    at each of ``points`` (sizes of the dynamic dims), else at the dims' sample sizes)."""
    if not Path(model_path).is_file():
        raise DeployError(f"model file not found: {model_path}", hint="pass the .onnx the artifact was compiled from")
    check_model_matches(artifact, model_path)
    why = artifact.why_not_here()
    if why:
        raise DeployError(f"cannot verify {artifact.path} here: {why.message}",
                          hint=why.hint or "verify it on a machine that runs it (`deploy package` bundles it)")
    precision = precision_of(artifact)
    reference = int8_reference(artifact) if precision == "int8" else None
    precision = (artifact.manifest.get("precision") or {}).get("check", precision)  # ORT computes in int8
    return judge(artifact, reference or model_path, precision, inputs, seed,
                 float_model=model_path if reference else None, tol=tolerance(precision, atol, rtol),
                 points=points, label="given inputs")
