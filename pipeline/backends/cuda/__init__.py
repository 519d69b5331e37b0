"""The CUDA backend: NVIDIA GPUs, deploy's GPU schedule rules, kernels compiled by nvcc into a fatbin.

The rules (rules/): tensor cores for float16, dlight's GPU rules for the rest.

Builds need no GPU (``toolkit`` stands in for the driver so TVM's CUDA code generator loads);
tuning and running do.
"""

from __future__ import annotations

from .. import Backend, tool_version
from ...errors import DeployError


class CudaBackend(Backend):
    family = "cuda"
    tvm_kinds = ("cuda",)
    has_default_schedules = True
    unscheduled = "TVM plain loops"

    def graph_stages(self, target, opt_level: int, precision: str, int8: bool):
        """float16 at -O 3: NHWC convolutions with OHWI filters, so each one is an implicit GEMM
        whose K (kh, kw, c) is contiguous in both operands (rules/tensor_core.py)."""
        if opt_level < 3 or precision != "fp16":
            return []
        return [("layout", _nhwc)]

    def apply_default_schedules(self, mod, target, chosen: dict | None = None):
        from .rules import apply_default_schedules

        return apply_default_schedules(mod, target, chosen)

    def fallback_schedules(self, mod, target, chosen: dict | None = None):
        """A GPU cannot run plain loops: the fallback is dlight's stock rules, without TensorCore."""
        from .rules import apply_default_schedules

        return apply_default_schedules(mod, target, chosen, tensor_cores=False)

    def default_schedule(self, func, target):
        from .rules import default_schedule

        return default_schedule(func, target)

    def prepare_driver(self) -> None:
        from .toolkit import prepare_driver

        prepare_driver()  # the stand-in libcuda.so.1 where there is no driver

    def tvm_pipeline(self):
        from tvm.relax.backend.cuda import pipeline

        return pipeline

    def runs_here(self, target_manifest: dict) -> bool:
        """A real driver with a GPU behind it (the stand-in driver builds, it runs nothing)."""
        from .toolkit import prepare_driver

        if prepare_driver() != "driver":
            return False
        import tvm

        return bool(tvm.cuda(0).exist)

    def check_measurable(self, preset) -> None:
        import tvm

        if not tvm.cuda(0).exist:
            raise DeployError(f"tuning '{preset.name}' needs an NVIDIA GPU to measure on, and none is visible here",
                              hint="run `deploy tune` on a machine with the GPU, or measure remotely with "
                                   "--rpc-tracker HOST:PORT --rpc-key KEY")

    def check_toolchain(self, preset) -> None:
        from .toolkit import find_nvcc

        find_nvcc()

    def before_build(self, preset) -> None:
        from .toolkit import setup_cuda_compile

        setup_cuda_compile()
        import tvm.support.nvcc  # noqa: F401  registers tvm_callback_cuda_compile

    def check_library(self, preset, lib) -> None:
        code = self.library_code(lib)
        want = preset.target["arch"]
        if not any(c["kind"] == "cubin" and c["arch"] == want for c in code):
            raise DeployError(f"the CUDA library holds no compiled {want} code (found {code or 'CUDA source only'})",
                              hint="check that nvcc works: nvcc --version; run with -v")

    def library_code(self, lib) -> list[dict]:
        from .toolkit import gpu_code

        return gpu_code(lib.read_bytes())

    def toolchain_versions(self, preset) -> dict:
        from .toolkit import find_nvcc

        try:
            nvcc = tool_version("nvcc", find_nvcc())
        except DeployError:
            nvcc = "missing"
        return {**super().toolchain_versions(preset), "nvcc": nvcc}

    def device(self, artifact_path):
        import tvm

        dev = tvm.cuda(0)
        if not dev.exist:
            raise DeployError(f"artifact {artifact_path} needs an NVIDIA GPU and none is visible here",
                              hint="run it on a machine with a GPU and the NVIDIA driver")
        return dev


def _nhwc() -> list:
    import tvm
    from tvm import relax

    from ...relax_helpers import has_conv2d

    t = relax.transform
    convert = t.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"], "relax.nn.conv2d_transpose": ["NCHW", "IOHW"]})

    @tvm.transform.module_pass(opt_level=0, name="ConvertLayoutWhereConv2d")
    def where_conv(mod, _ctx):
        return convert(mod) if has_conv2d(mod) else mod

    return [where_conv, t.FoldConstant(), t.DeadCodeElimination()]


BACKEND = CudaBackend()
