#!/usr/bin/env python
"""Regenerate the bundled example models in examples/ (deterministic: same bytes every run)."""

import sys
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline import examples  # noqa: E402

out = Path(__file__).resolve().parent.parent / "examples"
onnx.save(examples.tiny_cnn(), out / "tiny_cnn.onnx")
onnx.save(examples.tiny_mlp(), out / "tiny_mlp.onnx")
print("wrote", out / "tiny_cnn.onnx", out / "tiny_mlp.onnx")
