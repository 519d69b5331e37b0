"""Target presets: one TOML file per target, shipped inside the package.

Target presets: one TOML file per target, shipped inside the package (``pipeline/presets/``,
read with importlib.resources, so an installed wheel has them; ``targets/`` at the top of a
checkout points there). A directory of the user's own presets, named by ``DEPLOY_TARGETS_DIR``,
is searched first; a path to a ``.toml`` file works as a target name too.

A preset names the TVM target JSON (and its host for GPU targets), the architecture its code
runs on, and for cross targets the compiler, the Debian package that provides it, and how to
emulate it. ``detect_host = true`` presets fill ``mcpu`` and ``num-cores`` from this machine.
"""

from __future__ import annotations

import copy
import os
import tomllib
from dataclasses import MISSING, dataclass, field
from pathlib import Path

from .errors import DeployError, toml_kind

USER_DIR_ENV = "DEPLOY_TARGETS_DIR"


def builtin_dir() -> Path:
    """The presets shipped with deploy (a directory inside the installed package)."""
    from importlib.resources import files

    return Path(str(files("pipeline") / "presets"))


def preset_dirs() -> list[Path]:
    """Where presets are looked up, first match wins: the user's directory, then deploy's own."""
    user = os.environ.get(USER_DIR_ENV)
    return [*([Path(user)] if user else []), builtin_dir()]


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    family: str                      # a backend: "cpu" or "cuda" (backends.families())
    arch: str                        # architecture the host code runs on: x86_64, aarch64, armv7l
    target: dict
    host: dict | None = None
    cross_compiler: str | None = None
    cross_package: str | None = None
    qemu: str | None = None
    qemu_cpu: str | None = None
    sysroot: str | None = None
    detect_host: bool = False
    path: Path | None = field(default=None, compare=False)

    @property
    def is_cross(self) -> bool:
        return self.cross_compiler is not None

    def target_json(self) -> dict:
        """The full TVM target as JSON, host CPU detection applied."""
        target = copy.deepcopy(self.target)
        if self.detect_host:
            from tvm.target import codegen

            target.setdefault("mcpu", str(codegen.llvm_get_system_cpu()))
            target.setdefault("num-cores", os.cpu_count() or 1)
        if target.get("kind") == "llvm":
            # lets LLVM vectorize a sum along a row (layer norm's mean and variance: 5x faster) by
            # reordering its additions, as ONNX Runtime's kernels do; no NaN/inf assumptions
            target.setdefault("fast-math-reassoc", True)
        if self.host is not None:
            target["host"] = copy.deepcopy(self.host)
        return target

    def tvm_target(self):
        import tvm

        return tvm.target.Target(self.target_json())

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if v is not None and k != "path"}
        return d


def _parse(path: Path) -> Preset:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise DeployError(f"cannot read target preset {path}: {e}")
    fields = {k: f for k, f in Preset.__dataclass_fields__.items() if k not in ("name", "path")}
    unknown = set(data) - set(fields)
    if unknown:
        raise DeployError(f"target preset {path} is malformed: unknown keys {sorted(unknown)}",
                          hint=f"valid keys: {sorted(fields)}")
    examples = {"description": 'description = "My board"', "family": 'family = "cpu"', "arch": 'arch = "aarch64"',
                "target": '[target] with kind = "llvm" and mtriple = "aarch64-linux-gnu"',
                "host": '[host] with kind = "llvm"', "detect_host": "detect_host = false"}
    missing = [k for k, f in fields.items() if k not in data and f.default is MISSING]
    if missing:
        raise DeployError(f"target preset {path} is malformed: no "
                          + ", ".join("[target] table" if k == "target" else f"'{k}'" for k in missing),
                          hint="add " + "; ".join(examples[k] for k in missing))
    types = {"target": (dict, "a table"), "host": (dict, "a table"), "detect_host": (bool, "true or false")}
    for key, value in data.items():
        want, name = types.get(key, (str, "a string"))
        if not isinstance(value, want):
            raise DeployError(f"target preset {path}: '{key}' must be {name}, not {toml_kind(value)}",
                              hint="e.g. " + examples.get(key, f'{key} = "..."'))
    if not isinstance(data["target"].get("kind"), str):
        raise DeployError(f"target preset {path}: [target] has no kind", hint='add kind = "llvm" (CPU) or "cuda"')
    from .backends import families

    if data["family"] not in families():
        raise DeployError(f"target preset {path} has family {data['family']!r}",
                          hint=f"use one of: {', '.join(families())}")
    return Preset(name=path.stem, path=path, **data)


def _preset_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in preset_dirs():
        for p in sorted(d.glob("*.toml")):
            found.setdefault(p.stem, p)
    return dict(sorted(found.items()))


def list_presets() -> list[Preset]:
    return [_parse(p) for p in _preset_files().values()]


def get_preset(name: str) -> Preset:
    """A preset by name, or a path to a preset file of the user's own."""
    if name.endswith(".toml") and Path(name).is_file():
        return _parse(Path(name))
    files = _preset_files()
    if name not in files:
        raise DeployError(f"unknown target '{name}'", hint=f"use one of: {', '.join(files)} (see `deploy targets`)")
    return _parse(files[name])
