"""manifest.json: what an artifact is, for what, built from what; and the versions that built it."""

from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path

from .backends import for_preset
from .build import elf_machine
from .errors import DeployError
from .files import sha256_file
from .frontend import narrow, tflite, training
from .frontend.specs import graph_inputs, value_spec
from .version import __version__

LIB_NAME = "model.so"
MANIFEST = "manifest.json"


def versions() -> dict:
    import onnx
    import tvm
    import tvm_ffi
    from tvm.target import codegen

    return {
        "deploy": __version__,
        "tvm": tvm.__version__,
        "tvm_ffi": tvm_ffi.__version__,
        "llvm": str(codegen.llvm_version_major()),
        "onnx": onnx.__version__,
        "python": platform.python_version(),
    }


def make_manifest(args, preset, loaded, model, lib: Path, passes: dict) -> dict:
    """The manifest of a compile (``args``: compile.CompileArgs) of ``model`` into ``lib``."""
    if getattr(loaded, "format", "onnx") == tflite.FORMAT:
        section = tflite.manifest_model(loaded, args.input_shapes)
    else:
        section = _onnx_model(loaded, model)
    return {
        "format": 1,
        "model": section,
        "target": {
            "preset": preset.name,
            "description": preset.description,
            "family": preset.family,
            "arch": preset.arch,
            "tvm_target": preset.target_json(),
            "cpu_features": for_preset(preset).cpu_features(preset.tvm_target()),
            "gpu_code": for_preset(preset).library_code(lib),
            "cross_compiler": preset.cross_compiler,
        },
        "library": {"file": LIB_NAME, "sha256": sha256_file(lib), "bytes": lib.stat().st_size,
                    "elf_machine": elf_machine(lib)},
        "options": {"opt_level": args.opt_level, "input_shapes": args.input_shapes, "precision": args.precision,
                    "quantize": "int8" if args.precision == "int8" else None},
        "passes": passes,
        "versions": versions(),
        "build": {"time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "host": platform.machine()},
    }


def _onnx_model(loaded, model) -> dict:
    """The manifest's ``model`` section for an ONNX model (``model``: the cleaned-up graph)."""
    return {
        "name": loaded.name,
        "file": loaded.path.name,
        "format": "onnx",
        "sha256": loaded.sha256,
        "opset": next((o.version for o in loaded.model.opset_import if o.domain in ("", "ai.onnx")), None),
        "inputs": training.with_only_values(model, narrow.io_specs(loaded.model,
                                                                    [s.to_dict() for s in graph_inputs(model)])),
        "outputs": narrow.io_specs(loaded.model, [value_spec(v).to_dict() for v in model.graph.output],
                                   outputs=True),
        **unused_inputs(loaded.model, model),
    }


def unused_inputs(original, cleaned) -> dict:
    """``{"unused_inputs": [specs]}`` for the model's inputs that nothing uses (clean-up drops
    them; a caller still feeds them, as to ONNX Runtime: the artifact takes and ignores them)."""
    kept = {s.name for s in graph_inputs(cleaned)}
    unused = narrow.io_specs(original, [s.to_dict() for s in graph_inputs(original) if s.name not in kept])
    return {"unused_inputs": unused} if unused else {}


def read_manifest(artifact: Path) -> dict:
    path = Path(artifact) / MANIFEST
    if not path.is_file():
        raise DeployError(f"{artifact} is not an artifact (no {MANIFEST})", hint="pass a directory made by `deploy compile`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DeployError(f"{path} is corrupt: {e}", hint="recompile the artifact")
