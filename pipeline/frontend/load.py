"""Load: read an ONNX file (external data included) and run onnx's checker."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from ..errors import DeployError
from ..files import sha256_file


@dataclass
class LoadedModel:
    path: Path
    model: onnx.ModelProto
    sha256: str

    @property
    def name(self) -> str:
        return self.path.stem


def load_model(path: str | Path, check: bool = True) -> LoadedModel:
    path = Path(path)
    if not path.exists():
        raise DeployError(f"model file not found: {path}", hint="check the path")
    if path.is_dir():
        raise DeployError(f"{path} is a directory, not an ONNX file", hint="pass the .onnx file itself")
    try:
        model = onnx.load(str(path), load_external_data=True)
    except FileNotFoundError as e:
        raise DeployError(
            f"{path}: external data file missing ({e.filename or e})",
            hint="keep the model's external data files next to the .onnx file",
        )
    except Exception as e:  # protobuf DecodeError and friends
        raise DeployError(
            f"{path} is not a readable ONNX model ({type(e).__name__}: {str(e)[:200]})",
            hint="the file may be truncated or not an ONNX file; re-export it",
        )
    if not model.graph.node and not model.graph.output:
        raise DeployError(f"{path} is not an ONNX model (empty graph)", hint="the file may be truncated or not ONNX")
    if check:
        check_model(model, path)
    return LoadedModel(path=path, model=model, sha256=sha256_file(path))


def check_model(model: onnx.ModelProto, path: Path | str = "model") -> None:
    from google.protobuf.message import EncodeError

    try:
        try:
            onnx.checker.check_model(model)
        except (ValueError, EncodeError):  # over protobuf's 2 GB: checked from the file (its external data)
            onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "invalid model"
        raise DeployError(
            f"{path} fails the ONNX checker: {first}",
            hint="re-export the model, or fix the graph (onnx.checker.check_model shows the details)",
        )
