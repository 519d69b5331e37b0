"""Backends: everything that depends on the target family, one package per family.

Each family (``cpu/``, ``cuda/``) exposes one ``Backend`` with the same hooks: the graph stages
it adds, TVM's lowering and VM-build passes for it, its default schedules, what tuning needs on
it, its toolchain and build checks, the CPU features its code needs, the device its artifacts
run on, the runner it packs into them and the README of their bundle. ``for_preset``,
``for_family`` and ``for_tvm_kind`` are the only places a family is chosen; a family deploy does
not know is an error, never a fallback. Code outside ``backends/`` imports no family's package:
it asks the family's ``Backend``. Adding a family is one new package here with a ``BACKEND`` and
one line in ``_FAMILIES``.
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

    # -- before TVM loads
    def prepare_driver(self) -> None:
        """Make what TVM's libraries for this family link loadable, before TVM loads (see ``prepare_drivers``)."""

    # -- target
    def host_target(self, target):
        """The part of ``target`` (a tvm.target.Target) whose code runs on the CPU: its host."""
        import tvm

        return tvm.target.Target(target.host)

    def cpu_features(self, target) -> list[str]:
        """CPU instruction-set features (/proc/cpuinfo names) the code for ``target`` uses: those of its
        host part, as the family of the host's TVM kind reads them."""
        host = self.host_target(target)
        backend = for_tvm_kind(str(host.kind.name))
        return [] if backend is self else backend.cpu_features(host)

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

    def fallback_schedules(self, mod, target, chosen: dict | None = None):
        """What kernels get when the default schedules failed the build or the check: by default
        nothing (``unscheduled``: TVM's plain loops, which CPUs run)."""
        return mod

    def post_tuning_passes(self, target) -> list:
        return []

    def tuning_device(self) -> str:
        """The device name MetaSchedule's runners measure this family's kernels on."""
        return self.family

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

    # -- the runner: an artifact that runs without Python (``supports_runner``), its ``device`` manifest entry
    def check_runner(self, preset) -> None:
        """Before a compile's long part: get (and check) what ``add_device_files`` will need."""

    def add_device_files(self, artifact_dir, preset) -> dict | None:
        """Put the runner and the runtime it needs into the artifact; its manifest ``device`` entry
        (None: the artifact is library and manifest only)."""
        return None

    def check_device_files(self, artifact_dir, device: dict) -> None:
        """Raise a DeployError when a file of the ``device`` entry is missing or modified."""

    def runner_launcher(self, device: dict) -> list[str]:
        """The command prefix that runs the artifact's runner here (an emulator, or nothing)."""
        raise DeployError(f"a {self.family} artifact holds no runner deploy can start")

    def run_runner(self, artifact_dir, device: dict, outputs: list[dict], inputs: dict | None,
                   repeat: int = 1, warmup: int = 0, threads: int | None = None):
        """Run the artifact's runner here; an object with ``outputs``, ``latency_ms``, ``runs``,
        ``wall_s`` and ``command``."""
        raise DeployError(f"a {self.family} artifact holds no runner deploy can start")

    # -- package
    def bundle_readme(self, manifest: dict, bundle_name: str, folder: str) -> str:
        """The README of the artifact's bundle (`deploy package`): what it holds and how to load it."""
        from ..bundle_readme import library_only, readme_head

        return readme_head(manifest) + library_only(manifest)


def for_family(family: str) -> Backend:
    if family not in _FAMILIES:
        raise DeployError(f"unknown target family '{family}'",
                          hint=f"a preset's family must be one of: {', '.join(_FAMILIES)}")
    return importlib.import_module(f".{_FAMILIES[family]}", __name__).BACKEND


def for_preset(preset) -> Backend:
    """The backend of a target preset."""
    return for_family(preset.family)


def for_tvm_kind(kind: str) -> Backend:
    """The backend whose TVM target kind is ``kind`` (databases and targets record kinds, not families)."""
    for family in _FAMILIES:
        backend = for_family(family)
        if kind in backend.tvm_kinds:
            return backend
    known = "; ".join(f"{f}: {', '.join(for_family(f).tvm_kinds)}" for f in _FAMILIES)
    raise DeployError(f"no target family compiles TVM target kind '{kind}'",
                      hint=f"deploy's target families and their TVM kinds: {known}")


def prepare_drivers() -> None:
    """Every family's ``prepare_driver``: run before TVM loads."""
    for family in _FAMILIES:
        for_family(family).prepare_driver()


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
