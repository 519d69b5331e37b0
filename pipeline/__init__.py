"""deploy: compile ONNX models into verified, deployable libraries with Apache TVM.

The package, in the order data flows:
- ``frontend/``: load, clean-up, QOperator -> QDQ, import to Relax; model specs and `inspect`;
- ``prepare``: the front half compile and tune share (frontend, int8 rewrite, ``optimize``);
- ``quantize/``: precision options, calibration, the QDQ writer, int8 rewrite, accuracy;
- ``tune/``: MetaSchedule tuning and its database; ``schedule``: records or default schedules;
- ``build``, ``manifest``, ``package``: the library, what it is, written atomically;
- ``run/``: the run side: ``runtime``, ``reference``, ``check``, ``verify``, ``bench``, ``profile``:
  run an artifact, check and time it against ONNX Runtime;
- ``backends/``: everything per target family (``cpu/``, ``cuda/``), chosen in ``backends.for_preset``;
- ``ci/``: `deploy build`, a models x targets matrix with a content-keyed cache;
- ``compile``: the steps in order; ``cli``: the `deploy` command over this API.
"""

import os as _os

from . import log as _log
from .backends import prepare_drivers as _prepare_drivers
from .version import __version__

_log.set_verbose(False)  # quiet by default; the CLI's -v turns TVM's logs back on

# TVM's thread pool assumes two hardware threads per core and starts cpu_count/2 workers: one on
# a 2-vCPU machine, which halves every run, every benchmark and every tuning measurement. Use
# every CPU this process may run on unless TVM_NUM_THREADS says otherwise (read at pool start).
_os.environ.setdefault("TVM_NUM_THREADS", str(len(_os.sched_getaffinity(0)) if hasattr(_os, "sched_getaffinity")
                                              else (_os.cpu_count() or 1)))

# A pool worker that finds no task spins 300,000 times (TVM's default) before it sleeps, pinned to
# its core. Beside another busy process on the same cores (a second model served on the host) the
# spinning and the pinning starve the thread a parallel region waits for: the example CNN went from
# under a millisecond to tens of milliseconds a call (benchmarks/neighbours.txt). Workers here spin
# 2,000 times (sleeping at once cost the example CNN alone 0.1 ms of wake-ups; 20,000 and more
# gave tails of 25 ms beside a CPU-bound process) and may move between cores; kernels too small to
# split do not wake them at all (backends/cpu/rules/rule_base.py). The environment still wins; the
# board runner sets the same.
_os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "2000")
_os.environ.setdefault("TVM_BIND_THREADS", "0")

# Must run before TVM loads: lets TVM's CUDA code generator load on machines without a GPU.
_prepare_drivers()

from .compile import CompileArgs, compile_model  # noqa: E402
from .errors import DeployError  # noqa: E402
from .quantize.options import QuantOptions, split_kwargs  # noqa: E402
from .run.runtime import Artifact, load  # noqa: E402
from .run.verify import verify  # noqa: E402


def compile(model, target: str, output=None, **kwargs) -> Artifact:  # noqa: A001
    """Compile ``model`` (an .onnx path) for ``target`` (a preset name); returns the artifact.

    Keyword arguments are CompileArgs' fields; the int8 options (calibration, calibrator, ...)
    may be given flat, and ``quantize="int8"`` is the same as ``precision="int8"``."""
    from pathlib import Path

    return compile_model(CompileArgs(model=Path(model), target=target, output=output, **split_kwargs(kwargs)),
                         show=False)


__all__ = ["Artifact", "CompileArgs", "DeployError", "QuantOptions", "__version__", "compile", "compile_model",
           "load", "verify"]
