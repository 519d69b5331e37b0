"""Quantization after the build, on the int8 artifact in its temp dir (README, "The pipeline": the order).

The QDQ model the artifact computes is kept beside it (``keep_reference``), then the artifact runs
on the held-out calibration samples against the float model: the accuracy goes into the manifest,
and ``--max-accuracy-drop`` is the gate (``accuracy_gate``). A failed gate leaves nothing written.
"""

from __future__ import annotations

from pathlib import Path

from .. import log
from ..backends import for_family
from ..errors import DeployError
from ..files import sha256_file, write_json
from ..manifest import MANIFEST
from ..run.runtime import Artifact
from .accuracy import accuracy, format_accuracy


def accuracy_gate(out: Path, res, gate: float | None, step) -> None:
    """The "quantize: accuracy" step: ``res`` (quantize.int8.Int8Result) measured on the artifact."""
    with step("quantize: accuracy"):
        _int8_report(out, res, gate)


REFERENCE = "reference.onnx"


def keep_reference(out: Path, qdq_model) -> dict:
    """Keep the QDQ model an int8 artifact computes (its int8 weights, a quarter of the float
    model's bytes): `deploy verify` and `deploy build` compare with ONNX Runtime running it, as
    the built-in check does, instead of with the float model."""
    try:
        data = qdq_model.SerializeToString()
    except Exception as e:  # noqa: BLE001 - protobuf's 2 GB limit: verify falls back to the float model
        log.info(f"  the QDQ reference is not kept in the artifact ({type(e).__name__}: over protobuf's limit)")
        return {}
    (out / REFERENCE).write_bytes(data)
    return {"reference": {"file": REFERENCE, "sha256": sha256_file(out / REFERENCE)}}


def _int8_report(out: Path, res, gate: float | None) -> None:
    """Run the int8 artifact (in its temp dir ``out``) on the held-out samples against the float
    model; record the accuracy in its manifest and apply the gate."""
    art = Artifact(out)
    if not for_family(art.manifest["target"]["family"]).runs_here(art.manifest["target"]):
        log.info("  int8 accuracy (ONNX Runtime simulation; the artifact cannot run here) "
                 + format_accuracy(res.info["simulated_accuracy"]))
        _warn_if_poor(res.info["simulated_accuracy"], res.info.get("calibrator"), gate)
        return
    ours = [art.run(s) for s in res.held_out]
    acc = accuracy(res.reference, ours)
    log.info("  int8 accuracy " + format_accuracy(acc))
    _warn_if_poor(acc, res.info.get("calibrator"), gate)
    manifest = dict(art.manifest)
    manifest["quantization"] = dict(manifest["quantization"], accuracy=acc)
    write_json(out / MANIFEST, manifest)
    if gate is not None and acc["drop"] > gate:
        raise DeployError(f"int8 accuracy gate failed on the compiled artifact: drop {acc['drop']:.4f} > "
                          f"--max-accuracy-drop {gate}\n    " + format_accuracy(acc),
                          hint="raise --max-accuracy-drop, or exclude more layers with --exclude")


POOR_INT8_DROP = 0.05  # an int8 build this far from float32, with no gate asked for, is reported loudly


def _warn_if_poor(acc: dict, calibrator: str | None, gate: float | None) -> None:
    """A warning (not an error: the user asked for int8 and may accept it) where the int8 build,
    with no --max-accuracy-drop, is far from float32: 'entropy' calibration clipped MobileNetV2's
    ReLU6 outputs from 6 to 1.9 and kept 0% of its decisions, with only an info line to say so."""
    if gate is not None or acc["drop"] <= POOR_INT8_DROP:
        return
    other = "minmax" if calibrator != "minmax" else "percentile"
    log.warn(f"int8 is far from float32 (drop {acc['drop']:.3f} > {POOR_INT8_DROP}) "
             + format_accuracy(acc)
             + f"\n  try --calibrator {other}, more representative --calibration samples, or "
               "--max-accuracy-drop 0.01 (the most sensitive layers fall back to float32)")
