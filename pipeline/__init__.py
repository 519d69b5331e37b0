"""deploy: compile ONNX models into verified, deployable libraries with Apache TVM.

Data flow, one module per stage:
load -> cleanup -> importer -> optimize -> build -> package -> verify
"""

__version__ = "0.1.0"

from . import cuda as _cuda
from . import log as _log

_log.set_verbose(False)  # quiet by default; the CLI's -v turns TVM's logs back on

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
