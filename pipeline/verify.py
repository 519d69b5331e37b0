"""Verify: run the artifact and ONNX Runtime on the same inputs and compare."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import log
from .errors import DeployError
from .files import sha256_file
from .reference import reference_outputs
from .runtime import Artifact


@dataclass
class OutputError:
    name: str
    max_abs: float
    max_rel: float  # max |ours - ref| / max |ref|
    ok: bool


def compare(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], atol: float, rtol: float) -> list[OutputError]:
    errors = []
    for name, r in ref.items():
        if name not in ours:
            raise DeployError(f"the artifact has no output '{name}' that the ONNX model has",
                              hint="was the artifact compiled from this model?")
        o = np.asarray(ours[name])
        r = np.asarray(r)
        if o.shape != r.shape:
            errors.append(OutputError(name, float("inf"), float("inf"), False))
            continue
        if o.dtype == bool or r.dtype == bool:
            o, r = o.astype(np.int8), r.astype(np.int8)
        diff = np.abs(o.astype(np.float64) - r.astype(np.float64))
        max_abs = float(diff.max()) if diff.size else 0.0
        scale = float(np.abs(r.astype(np.float64)).max()) if r.size else 0.0
        ok = bool(np.all(diff <= atol + rtol * np.abs(r.astype(np.float64))))
        errors.append(OutputError(name, max_abs, max_abs / scale if scale > 0 else max_abs, ok))
    return errors


def check_model_matches(artifact: Artifact, model_path: str | Path) -> None:
    recorded = artifact.manifest["model"]["sha256"]
    if sha256_file(Path(model_path)) != recorded:
        log.warn(f"{model_path} is not the file this artifact was compiled from (sha256 differs)")


def verify(artifact: Artifact, model_path: str | Path, inputs: dict[str, np.ndarray] | None = None,
           atol: float = 1e-4, rtol: float = 1e-3, seed: int = 0, sizes: dict[str, int] | None = None) -> list[OutputError]:
    """Outputs against ONNX Runtime's on ``inputs`` (default: seeded random ones, at the dynamic
    dims' ``sizes`` where the artifact has dims)."""
    if not Path(model_path).is_file():
        raise DeployError(f"model file not found: {model_path}", hint="pass the .onnx the artifact was compiled from")
    check_model_matches(artifact, model_path)
    inputs = artifact.random_inputs(seed, sizes) if inputs is None else inputs
    ours = artifact.run(inputs)
    ref = reference_outputs(model_path, inputs)
    return compare(ours, ref, atol, rtol)
