"""Backends: everything that depends on the target family, one package per family.

Each family (``cpu/``, ``cuda/``) exposes one ``Backend`` with the same hooks: the graph stages
it adds, TVM's lowering and VM-build passes for it, its default schedules, what tuning needs on
it, its toolchain and build checks, and the device its artifacts run on. ``for_preset`` is the
only place a family is chosen; a family deploy does not know is an error, never a fallback.
Adding a family is one new package here with a ``BACKEND`` and one line in ``_FAMILIES``.
"""

from __future__ import annotations

import functools
import importlib
import shutil
import subprocess
from collections.abc import Callable

from ..errors import DeployError

PassList = list[tuple[str, Callable[[], list]]]

# family name -> the package that holds its BACKEND
_FAMILIES = {"cpu": "cpu", "cuda": "cuda"}


class Backend:
    """The hook set of one target family; the defaults are what a family without the feature does."""

    family: str = ""
    tvm_kinds: tuple[str, ...] = ()   # TVM target kinds of this family (read back from a tuning database)
    supports_runner = False           # the C++ runner can drive its artifacts
    has_default_schedules = False     # schedules kernels without tuning records itself
    unscheduled = "TVM plain loops"   # what a kernel with neither a record nor a default schedule runs
    host_timed = False                # a kernel's time is the host clock around its call (deploy profile)
    half_in_float32 = False           # float16/bfloat16 models compute in float32 (frontend/half.py)

    # -- import
    def frontend_kernels(self, target):
        """The family's fused kernels the frontend may emit instead of portable Relax ops (an
        object with ``lstm_kernel``, see cpu/recurrence.py), or None."""
        return None

    # -- optimize
    def graph_stages(self, target, opt_level: int, precision: str, int8: bool) -> PassList:
        """The family's own named graph stages, run after ``simplify``. They are optimizations: a
        stage that fails is skipped (the module stays as it was before it) and the compile says so."""
        return []

    def tvm_pipeline(self):
        """TVM's ``relax.backend.<kind>.pipeline`` module for this family."""
        raise NotImplementedError

    def extra_lower_passes(self, target) -> list:
        return []

    def legalize_overrides(self, target) -> dict:
        """op name -> legalization replacing TVM's (``LegalizeOps(customize_legalize_map=...)``), at -O 2+."""
        return {}

    # -- schedules and tuning
    def apply_default_schedules(self, mod, target, chosen: dict | None = None):
        """Schedule what the database left unscheduled; ``chosen`` gets PrimFunc (before) -> rule name."""
        return mod

    def default_schedule(self, func, target):
        return None

    def post_tuning_passes(self, target) -> list:
        return []

    def check_measurable(self, preset) -> None:
        """Raise a DeployError when kernels for ``preset`` cannot be measured on this machine."""

    def register_tuning_rules(self) -> None:
        """MetaSchedule custom rules the family's kernels name."""

    def load_tensor_intrinsics(self) -> None:
        """Register the tensor intrinsics its tuning records may name (before a database is read)."""

    # -- build
    def check_precision(self, preset, precision: str) -> None:
        pass

    def check_toolchain(self, preset) -> None:
        pass

    def before_build(self, preset) -> None:
        pass

    def check_library(self, preset, lib) -> None:
        pass

    def library_code(self, lib) -> list[dict]:
        """Device code embedded in the library, for the manifest."""
        return []

    def toolchain_versions(self, preset) -> dict:
        return {"linker": tool_version(preset.cross_compiler or "g++")}

    # -- run
    def device(self, artifact_path):
        """The TVM device an artifact of this family runs on here."""
        raise NotImplementedError

    def runs_here(self, target_manifest: dict) -> bool:
        """Whether an artifact with this manifest ``target`` section runs in this process."""
        return False

    def timed_here(self, preset) -> bool:
        """Whether this machine runs the preset's artifacts natively and times them by its clock
        (int8's choice of layers by measured time needs both)."""
        return False


def for_family(family: str) -> Backend:
    if family not in _FAMILIES:
        raise DeployError(f"unknown target family '{family}'",
                          hint=f"a preset's family must be one of: {', '.join(_FAMILIES)}")
    return importlib.import_module(f".{_FAMILIES[family]}", __name__).BACKEND


def for_preset(preset) -> Backend:
    """The backend of a target preset."""
    return for_family(preset.family)


def for_tvm_kind(kind: str | None) -> Backend:
    """The backend whose TVM target kind is ``kind`` (databases record kinds, not families)."""
    for family in _FAMILIES:
        backend = for_family(family)
        if kind in backend.tvm_kinds:
            return backend
    return for_family("cpu") if kind is None else for_family(str(kind))


def families() -> list[str]:
    return list(_FAMILIES)


@functools.lru_cache(maxsize=None)
def tool_version(tool: str, exe: str | None = None) -> str:
    """First line of ``tool --version`` (last line for nvcc, which puts the release there)."""
    exe = exe or shutil.which(tool)
    if exe is None:
        return "missing"
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not out:
        return "unknown"
    return out[-1] if tool == "nvcc" else out[0]
