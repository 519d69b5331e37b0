"""deploy: compile ONNX models into verified, deployable libraries with Apache TVM.

Data flow, one module per stage:
load -> cleanup -> importer -> optimize (quantize) -> tune / schedule_cpu -> build -> package -> verify
"""

__version__ = "0.1.0"

from . import cuda as _cuda
from . import log as _log

_log.set_verbose(False)  # quiet by default; the CLI's -v turns TVM's logs back on

# TVM's thread pool assumes two hardware threads per core and starts cpu_count/2 workers: one on
# a 2-vCPU machine, which halves every run, every benchmark and every tuning measurement. Use
# every CPU this process may run on unless TVM_NUM_THREADS says otherwise (read at pool start).
import os as _os  # noqa: E402

_os.environ.setdefault("TVM_NUM_THREADS", str(len(_os.sched_getaffinity(0)) if hasattr(_os, "sched_getaffinity")
                                              else (_os.cpu_count() or 1)))

# Must run before TVM loads: lets TVM's CUDA code generator load on machines without a GPU.
_cuda.prepare_driver()

from .compile import CompileArgs, compile_model  # noqa: E402
from .errors import DeployError  # noqa: E402
from .runtime import Artifact, load  # noqa: E402


def compile(model, target: str, output=None, **kwargs) -> Artifact:  # noqa: A001
    """Compile ``model`` (an .onnx path) for ``target`` (a preset name); returns the artifact."""
    from pathlib import Path

    return compile_model(CompileArgs(model=Path(model), target=target, output=output, **kwargs), show=False)


__all__ = ["Artifact", "CompileArgs", "DeployError", "compile", "compile_model", "load"]
