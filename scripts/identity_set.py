"""Build the byte-identity set and print every artifact file's sha256, to show a refactor changed no output.

    python scripts/identity_set.py OUT_DIR          # with the checkout to test first on PYTHONPATH
    diff <(python scripts/identity_set.py a) <(PYTHONPATH=other python scripts/identity_set.py b)

The set: x86-64 fp32 (the bundled CNN), int8 (calibrated on fixed samples), a convolution that
Winograd rewrites, CUDA fp16 (cuda-sm86, built without a GPU), rpi4, and one dynamic-batch build.
Each is compiled by the CLI in its own process (``python -m pipeline.cli``, as PYTHONPATH resolves
it); the lines are ``case/file sha256``, sorted. A manifest records when and how long its build
took: it is hashed without ``build.time_utc`` and ``build.seconds``. The int8 build runs without the
speed check (``--no-speed-check``), whose choice of layers kept in float depends on timings.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline import examples  # noqa: E402


def _winograd_model(path: Path) -> Path:
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array((rng.standard_normal((32, 16, 3, 3)) * 0.2).astype(np.float32), "W")
    b = numpy_helper.from_array((rng.standard_normal(32) * 0.2).astype(np.float32), "B")
    g = helper.make_graph([helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                           helper.make_node("Relu", ["c"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 56, 56])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 56, 56])], [w, b])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cnn, dyn = out / "cnn.onnx", out / "cnn_dyn.onnx"
    onnx.save(examples.tiny_cnn(), cnn)
    onnx.save(examples.tiny_cnn(batch="N"), dyn)
    wino = _winograd_model(out / "wino.onnx")
    calib = out / "calib.npz"
    np.savez(calib, input=np.random.default_rng(0).standard_normal((8, 1, 3, 32, 32)).astype(np.float32))
    name = examples.tiny_cnn().graph.input[0].name
    if name != "input":
        np.savez(calib, **{name: np.random.default_rng(0).standard_normal((8, 1, 3, 32, 32)).astype(np.float32)})
    cases = {
        "x86-fp32": [cnn, "--target", "x86-64"],
        "x86-int8": [cnn, "--target", "x86-64", "--precision", "int8", "--calibration", calib, "--no-speed-check"],
        "x86-winograd": [wino, "--target", "x86-64"],
        "cuda-fp16": [cnn, "--target", "cuda-sm86", "--precision", "fp16"],
        "rpi4": [cnn, "--target", "rpi4"],
        "x86-dynamic": [dyn, "--target", "x86-64", "--dim", "N=1..4"],
    }
    lines = []
    for case, args in cases.items():
        art = out / case
        cmd = [sys.executable, "-m", "pipeline.cli", "compile", *map(str, args), "-o", str(art), "--force"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"{case}: {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
        for f in sorted(p for p in art.rglob("*") if p.is_file()):
            data = f.read_bytes()
            if f.name == "manifest.json":
                m = json.loads(data)
                m["build"].pop("time_utc", None)
                m["build"].pop("seconds", None)
                data = json.dumps(m, sort_keys=True).encode()
            lines.append(f"{case}/{f.relative_to(art)} {hashlib.sha256(data).hexdigest()}")
    print("\n".join(sorted(lines)))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
