"""Cache keys for matrix builds: one sha256 over everything that determines an artifact's bytes.

The key covers, as content and never as absolute paths (so two checkouts in different
directories agree):
- the ONNX file's sha256 (and of every external-data file it references),
- the preset name and the full TVM target JSON (host CPU detection applied: a runner with
  another CPU or core count gets another key),
- the compile options (input shapes, opt level, precision),
- the quantization calibration data's hash (int8 entries) and the tuning database's hash
  (every file under the target's ``db`` directory),
- the versions of TVM, apache-tvm-ffi, LLVM, onnx, onnxslim, Python and deploy, a hash of
  deploy's own compile-path source files, and the linker/CUDA compiler versions.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from .load import sha256_file

# Modules that do not change what a compile produces; every other pipeline/*.py file is hashed,
# so a module added later (tuning, quantization) is covered without anyone remembering to.
_NOT_IN_COMPILE_PATH = {"cli.py", "matrix.py", "cachekey.py", "bench.py", "verify.py", "runtime.py", "log.py",
                        "errors.py", "examples.py"}


def canonical(data) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def sha256_tree(path: Path) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents, sorted)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        rel = p.relative_to(path).as_posix()
        if any(part.startswith(".") for part in p.relative_to(path).parts):
            continue  # lock files, editor droppings
        h.update(f"{rel}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def model_hash(path: Path) -> str:
    """sha256 of the .onnx file, combined with its external-data files when it has any."""
    import onnx

    path = Path(path)
    main = sha256_file(path)
    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception:
        return main  # the compile will report it
    locations = set()
    for t in m.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            locations.update(e.value for e in t.external_data if e.key == "location")
    if not locations:
        return main
    h = hashlib.sha256(main.encode())
    for loc in sorted(locations):
        f = path.parent / loc
        h.update(f"{loc}\0{sha256_file(f) if f.is_file() else 'missing'}\n".encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def pipeline_source_hash() -> str:
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(root.glob("*.py")):
        if p.name not in _NOT_IN_COMPILE_PATH:
            h.update(f"{p.name}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def tool_version(tool: str) -> str:
    """First line of ``tool --version`` (last line for nvcc, which puts the release there)."""
    exe = shutil.which(tool)
    if exe is None:
        if tool == "nvcc":
            from . import cuda

            try:
                exe = cuda.find_nvcc()
            except Exception:
                return "missing"
        else:
            return "missing"
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not out:
        return "unknown"
    return out[-1] if tool == "nvcc" else out[0]


@functools.lru_cache(maxsize=1)
def versions() -> dict:
    from .compile import versions as compile_versions  # `pipeline.compile` the attribute is a function

    v = dict(compile_versions())
    try:
        import onnxslim

        v["onnxslim"] = getattr(onnxslim, "__version__", "unknown")
    except ImportError:
        v["onnxslim"] = "missing"
    v["pipeline_source"] = pipeline_source_hash()
    return v


def toolchain(preset) -> dict:
    """The compilers that link (and for CUDA compile) the library."""
    tools = {"linker": tool_version(preset.cross_compiler or "g++")}
    if preset.family == "cuda":
        tools["nvcc"] = tool_version("nvcc")
    return tools


def key_inputs(*, model: Path, preset, options: dict, calibration: Path | None = None,
               db: Path | None = None) -> dict:
    """Everything the key is computed from, as a JSON-able dict with no absolute paths."""
    return {
        "model_sha256": model_hash(model),
        "preset": preset.name,
        "target": preset.target_json(),
        "options": options,
        "calibration_sha256": sha256_tree(calibration) if calibration else None,
        "tuning_db_sha256": sha256_tree(db) if db else None,
        "versions": versions(),
        "toolchain": toolchain(preset),
    }


def cache_key(inputs: dict) -> str:
    return hashlib.sha256(canonical(inputs).encode()).hexdigest()
