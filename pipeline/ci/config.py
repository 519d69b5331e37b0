"""The `deploy build` config (deploy.toml): models x targets x precisions, as a list of entries."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DeployError, toml_kind
from ..quantize.options import PRECISIONS

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_BUILD_KEYS = {"output", "jobs", "verify"}
_TARGET_KEYS = {"preset", "db"}
_MODEL_KEYS = {"path", "input_shapes", "dims", "targets", "precisions", "calibration", "atol", "rtol", "opt_level"}


@dataclass
class Entry:
    name: str
    model_name: str
    model: Path
    target: str
    preset: str
    precision: str = "fp32"
    input_shapes: dict = field(default_factory=dict)
    dims: dict = field(default_factory=dict)  # dynamic dim -> "MIN..MAX[@OPT,...]" (frontend.dims)
    opt_level: int = 3
    calibration: Path | None = None
    db: Path | None = None
    atol: float | None = None  # None: the precision's own tolerance (check.TOLERANCES), as compile and verify use
    rtol: float | None = None


@dataclass
class Config:
    path: Path
    output: Path
    jobs: int
    verify: bool
    entries: list[Entry]


def _bad(path: Path, what: str, hint: str | None = None) -> DeployError:
    return DeployError(f"{path}: {what}", hint=hint)


def _check_keys(path: Path, table: str, data, known: set[str]) -> None:
    if not isinstance(data, dict):
        raise _bad(path, f"'{table}' must be a table")
    unknown = sorted(set(data) - known)
    if unknown:
        raise _bad(path, f"unknown key(s) {unknown} in table '{table}'", hint=f"valid keys: {sorted(known)}")


_KINDS = {str: "a string", bool: "true or false", int: "an integer", float: "a number", list: "an array of strings"}
_EXAMPLES = {"output": '"artifacts"', "jobs": "2", "verify": "true", "preset": '"x86-64" (or a file: "boards/my.toml")',
             "db": '"tuning"', "path": '"net.onnx"', "targets": '["x86-64", "rpi4"]', "precisions": '["fp32", "int8"]',
             "calibration": '"calib/"', "atol": "1e-4", "rtol": "1e-3", "opt_level": "3"}


def _get(path: Path, table: str, data: dict, key: str, kind: type, default=None):
    """``data[key]`` if it holds a value of ``kind`` (a DeployError with an example if not), else ``default``."""
    if key not in data:
        return default
    value = data[key]
    if kind is list:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif kind in (int, float):  # (true and false are ints to Python, not to TOML)
        ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise _bad(path, f"{table}.{key} must be {_KINDS[kind]}, not {toml_kind(value)}",
                   hint=f"e.g. {key} = {_EXAMPLES[key]}")
    return value


def _shapes(path: Path, model: str, value) -> dict[str, list]:
    if not isinstance(value, dict) or not all(
            isinstance(v, list) and all((isinstance(d, int) and d > 0) or isinstance(d, str) for d in v)
            for v in value.values()):
        raise _bad(path, f"models.{model}.input_shapes must map input names to lists of positive ints "
                         "(or names of dims with a range in dims)",
                   hint='e.g. input_shapes = { image = [1, 3, 224, 224] }, or { image = ["N", 3, 224, 224] } '
                        'with dims = { N = "1..32" }')
    return {str(k): list(v) for k, v in value.items()}


def _dims(path: Path, model: str, value) -> dict[str, str]:
    from ..frontend.dims import parse_dims

    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _bad(path, f"models.{model}.dims must map dim names to ranges",
                   hint='e.g. dims = { S = "1..512@128" }')
    try:
        parse_dims(value)
    except DeployError as e:
        raise _bad(path, f"models.{model}.dims: {e.message}", hint=e.hint)
    return {str(k): v for k, v in value.items()}


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise DeployError(f"build config not found: {path}", hint="pass a deploy.toml (see README, 'CI builds')")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise DeployError(f"cannot read {path}: {e}")
    except tomllib.TOMLDecodeError as e:
        raise DeployError(f"{path} is not valid TOML: {e}")
    base = path.resolve().parent
    unknown = sorted(set(data) - {"build", "targets", "models"})
    if unknown:
        raise _bad(path, f"unknown table(s) {unknown}", hint="a build config has the tables build, targets.NAME and models.NAME")
    build = data.get("build", {})
    _check_keys(path, "build", build, _BUILD_KEYS)
    jobs = _get(path, "build", build, "jobs", int, 1)
    if jobs < 1:
        raise _bad(path, "build.jobs must be a positive integer", hint="e.g. jobs = 2")
    output = _get(path, "build", build, "output", str, "artifacts")
    verify = _get(path, "build", build, "verify", bool, True)
    targets = data.get("targets", {})
    models = data.get("models", {})
    for table, value, example in (("targets", targets, "[targets.x86-64]"),
                                  ("models", models, '[models.net] with path = "net.onnx"')):
        if not isinstance(value, dict):
            raise _bad(path, f"'{table}' must be tables [{table}.NAME], not {toml_kind(value)}", hint=f"e.g. {example}")
    if not models:
        raise _bad(path, "no models.NAME tables", hint='add a table models.net with path = "net.onnx"')
    if not targets:
        raise _bad(path, "no targets.NAME tables", hint="add a table, e.g. targets.x86-64 (see `deploy targets`)")
    tinfo: dict[str, tuple[str, Path | None]] = {}
    for tname, t in targets.items():
        _check_keys(path, f"targets.{tname}", t, _TARGET_KEYS)
        if not _NAME.match(tname):
            raise _bad(path, f"target name '{tname}' may only use letters, digits, '.', '_', '+', '-'")
        preset = _get(path, f"targets.{tname}", t, "preset", str, tname)
        if preset.endswith(".toml"):
            preset = str((base / preset).resolve())
        db = _get(path, f"targets.{tname}", t, "db", str)
        tinfo[tname] = (preset, (base / db).resolve() if db else None)
    entries: list[Entry] = []
    for mname, m in models.items():
        _check_keys(path, f"models.{mname}", m, _MODEL_KEYS)
        if not _NAME.match(mname):
            raise _bad(path, f"model name '{mname}' may only use letters, digits, '.', '_', '+', '-'")
        if "path" not in m:
            raise _bad(path, f"models.{mname} has no path", hint=f'add path = "{mname}.onnx"')
        where = f"models.{mname}"
        model_path = _get(path, where, m, "path", str)
        mtargets = _get(path, where, m, "targets", list, list(targets))
        missing = [t for t in mtargets if t not in tinfo]
        if missing:
            raise _bad(path, f"models.{mname} names target(s) {missing} with no targets.NAME table",
                       hint=f"define them or use one of {list(tinfo)}")
        precisions = _get(path, where, m, "precisions", list, ["fp32"])
        bad = [p for p in precisions if p not in PRECISIONS]
        if bad:
            raise _bad(path, f"models.{mname}.precisions: unknown {bad}", hint=f"use {list(PRECISIONS)}")
        calibration = _get(path, where, m, "calibration", str)
        atol, rtol = _get(path, where, m, "atol", float, None), _get(path, where, m, "rtol", float, None)
        opt_level = _get(path, where, m, "opt_level", int, 3)
        if not 0 <= opt_level <= 3:
            raise _bad(path, f"{where}.opt_level {opt_level} is out of range", hint="use 0, 1, 2 or 3")
        if (atol is not None and atol < 0) or (rtol is not None and rtol < 0):
            raise _bad(path, f"{where}: atol and rtol must not be negative", hint="e.g. atol = 1e-4")
        for tname in mtargets:
            for prec in precisions:
                entries.append(Entry(
                    name=f"{mname}-{tname}" + ("" if prec == "fp32" else f"-{prec}"),
                    model_name=mname, model=(base / model_path).resolve(), target=tname,
                    preset=tinfo[tname][0], precision=prec,
                    input_shapes=_shapes(path, mname, m.get("input_shapes", {})),
                    dims=_dims(path, mname, m.get("dims", {})),
                    opt_level=opt_level, calibration=(base / calibration).resolve() if calibration else None,
                    db=tinfo[tname][1], atol=None if atol is None else float(atol), rtol=None if rtol is None else float(rtol)))
    seen: dict[str, Entry] = {}
    for e in entries:
        if e.name in seen:
            raise _bad(path, f"two entries are both named '{e.name}'", hint="rename a model or a target")
        seen[e.name] = e
    return Config(path=path, output=(base / output).resolve(), jobs=jobs, verify=verify, entries=entries)


def select(entries: list[Entry], only: list[str] | None) -> list[Entry]:
    """Entries whose name, model or target matches one of the (glob) patterns."""
    if not only:
        return entries
    patterns = [p for item in only for p in item.split(",") if p]
    chosen = [e for e in entries if any(fnmatch.fnmatchcase(x, p) for p in patterns
                                        for x in (e.name, e.model_name, e.target))]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(x, p) for e in entries
                                                for x in (e.name, e.model_name, e.target))]
    if unmatched:
        raise DeployError(f"--only {', '.join(unmatched)} matches no entry",
                          hint="entries: " + ", ".join(e.name for e in entries))
    return chosen
