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
from pathlib import Path

from ..backends import for_preset
from ..files import sha256_file, sha256_tree
from ..manifest import versions as compile_versions

PACKAGE = Path(__file__).resolve().parent.parent
# Files of the package that do not change what a compile produces (paths relative to it); every
# other .py file under pipeline/, in every subpackage, is hashed: a module added or moved later
# is covered without anyone remembering to.
_NOT_IN_COMPILE_PATH = {"cli.py", "run/bench.py", "run/verify.py", "log.py", "errors.py", "examples.py"}
_NOT_IN_COMPILE_PATH_DIRS = {"ci"}  # `deploy build` itself


def canonical(data) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def compile_path_sources() -> list[Path]:
    """The package's source files that the key hashes, sorted by relative path."""
    out = []
    for p in sorted(PACKAGE.rglob("*.py")):
        rel = p.relative_to(PACKAGE)
        if rel.as_posix() in _NOT_IN_COMPILE_PATH or rel.parts[0] in _NOT_IN_COMPILE_PATH_DIRS:
            continue
        out.append(p)
    return out


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
    h = hashlib.sha256()
    for p in compile_path_sources():
        h.update(f"{p.relative_to(PACKAGE).as_posix()}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def versions() -> dict:
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
    return for_preset(preset).toolchain_versions(preset)


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
