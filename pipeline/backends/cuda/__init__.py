"""The CUDA backend: NVIDIA GPUs, TVM's dlight schedules, kernels compiled by nvcc into a fatbin.

Builds need no GPU (``toolkit`` stands in for the driver so TVM's CUDA code generator loads);
tuning and running do.
"""

from __future__ import annotations

from .. import Backend, tool_version
from ...errors import DeployError


class CudaBackend(Backend):
    family = "cuda"
    tvm_kinds = ("cuda",)
    unscheduled = "dlight (TVM's GPU default schedules)"

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


BACKEND = CudaBackend()
