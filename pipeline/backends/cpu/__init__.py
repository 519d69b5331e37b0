"""The CPU backend: x86-64 and ARM (aarch64, armv7) through LLVM, this host's CPU or a board's.

- fused kernels the frontend emits: an LSTM's whole recurrence (``recurrence``);
- graph stages: conv1d as conv2d (``conv1d``), 2x2 stride-2 transposed convs as 1x1 convs
  (``deconv``), NHWC/HWIO convolutions (``layout``), int8 convs on AVX-512 VNNI or ARM dotprod (``int8_dot``),
  int8 depthwise/grouped convs in exact float32 (``int8_grouped``),
  float32 3x3 convs as Winograd F(4x4, 3x3) (``winograd``);
- default schedules for kernels without tuning records (``rules/``, one rule per file);
- tuning: Winograd's MetaSchedule rules, the light x86/ARM tensor-intrinsic import
  (``intrinsics``), weights pre-packed for the tuned layout (x86 hosts);
- CPU features an artifact needs (``features``), and for boards the C++ runner with TVM's
  runtime for their architecture, run here under qemu-user, and their bundle's README (``board/``).
"""

from __future__ import annotations

from .. import Backend, PassList
from ... import log
from ...errors import DeployError
from ...host import host_arch, missing_features
from ...relax_helpers import has_conv2d
from .features import is_x86, prepack_weights, required_features


def _rewrite_pass(name: str, rewrite):
    """A module pass of ``rewrite(mod) -> (mod, count)`` (int8_dot's, winograd's)."""
    import tvm

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod, _ctx):
        return rewrite(mod)[0]

    return _pass


def _layout() -> list:
    """NHWC/HWIO convolutions, only in modules that have a conv2d (nothing to gain without convs).
    TVM's layout inference fails on some ops (a 5-D stack + sum, reductions, squeeze, ...): those
    ops keep their layout, the rest of the model converts (``layout.convert_keeping``); the kept
    ops are recorded in the module's ``deploy_layout_kept`` attribute (JSON), for the manifest."""
    import tvm
    from tvm import relax

    t = relax.transform
    # conv2d_transpose stays NCHW: TVM legalizes it in NCHW only (apache/tvm#19694), and left to
    # layout inference it follows its NHWC input and reaches the VM unlowered
    convert = t.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"], "relax.nn.conv2d_transpose": ["NCHW", "IOHW"]})

    @tvm.transform.module_pass(opt_level=0, name="ConvertLayoutWhereConv2d")
    def where_conv(mod, _ctx):
        import json

        from ...layers import KEPT_ATTR
        from .layout import convert_keeping

        if not has_conv2d(mod):
            return mod
        new, kept = convert_keeping(mod, convert)
        if kept:
            log.warn(f"layout: {len(kept)} op(s) TVM cannot give the NHWC layout keep their own, with layout "
                     f"transforms at their edges; the rest of the model is NHWC (manifest: layout.kept)")
            new = new.with_attr(KEPT_ATTR, json.dumps(kept))
        return new

    return [where_conv, t.FoldConstant(), t.DeadCodeElimination()]


def _conv1d() -> list:
    from tvm import relax

    from .conv1d import conv1d_as_conv2d

    return [_rewrite_pass("Conv1dAsConv2d", conv1d_as_conv2d), relax.transform.FoldConstant()]


def _deconv() -> list:
    from tvm import relax

    from .deconv import deconv_as_conv

    return [_rewrite_pass("ConvTransposeAsConv1x1", deconv_as_conv), relax.transform.FoldConstant()]


def _int8_dot(isa) -> callable:
    def stage() -> list:
        from tvm import relax

        from .int8_dot import dot_rewrite

        return [_rewrite_pass(f"Int8DotConv2d-{isa.block}", lambda mod: dot_rewrite(mod, isa)),
                relax.transform.FoldConstant()]

    return stage


def _int8_grouped() -> list:
    from tvm import relax

    from .int8_grouped import grouped_as_float

    return [_rewrite_pass("Int8GroupedConvAsFloat", grouped_as_float), relax.transform.FoldConstant()]


def _winograd() -> list:
    from tvm import relax

    from .winograd import winograd_rewrite

    return [_rewrite_pass("Conv2dWinogradF43", winograd_rewrite), relax.transform.FoldConstant()]


class CpuBackend(Backend):
    family = "cpu"
    tvm_kinds = ("llvm", "c")
    supports_runner = True
    has_default_schedules = True
    host_timed = True
    half_in_float32 = True  # no half arithmetic on x86 (LLVM converts around each op); ORT's CPU provider computes half graphs in float32 too

    def host_target(self, target):
        return target  # all of it runs on the CPU

    def cpu_features(self, target) -> list[str]:
        return required_features(target)

    def tuning_device(self) -> str:
        return "cpu"

    def frontend_kernels(self, target):
        from . import recurrence

        return recurrence

    def graph_stages(self, target, opt_level: int, precision: str, int8: bool) -> PassList:
        """1-D convolutions as 2-D, kernel = stride transposed convs as 1x1 convs, NHWC layout, then VNNI and Winograd rewrites of the NHWC
        convolutions (opt level 3)."""
        if opt_level < 3:
            return []
        stages: PassList = [("conv1d-as-conv2d", _conv1d), ("deconv-as-conv", _deconv), ("layout", _layout)]
        from .int8_dot import isa_for

        isa = isa_for(target) if int8 else None
        if isa is not None:  # int8 NHWC convs -> AVX-512 VNNI or ARM dotprod kernels
            stages.append((isa.stage, _int8_dot(isa)))
        if int8 and is_x86(target):  # int8 depthwise/grouped convs -> exact float32 compute
            stages.append(("int8-grouped-float", _int8_grouped))
        if precision == "fp32":  # float32 3x3 convs -> Winograd F(4x4, 3x3)
            stages.append(("winograd", _winograd))
        return stages

    def tvm_pipeline(self):
        from tvm.relax.backend.cpu_generic import pipeline

        return pipeline

    def legalize_overrides(self, target) -> dict:
        from .fastmath import overrides

        return overrides()

    def extra_lower_passes(self, target) -> list:
        import tvm

        if prepack_weights(target):
            # lets tuned schedules pick the weight layout; the rewrite is folded into the constants
            return [tvm.relax.transform.AttachAttrLayoutFreeBuffers()]
        return []

    def apply_default_schedules(self, mod, target, chosen: dict | None = None):
        from .rules import apply_default_schedules  # imports tvm: only once it is needed

        return apply_default_schedules(mod, target, chosen)

    def default_schedule(self, func, target):
        from .rules import default_schedule

        return default_schedule(func, target)

    def post_tuning_passes(self, target) -> list:
        """After tuned schedules are applied: split out weight layout rewrites and fold them."""
        from tvm import relax

        if prepack_weights(target):
            return [relax.transform.SplitLayoutRewritePreproc(), relax.transform.FoldConstant()]
        return []

    def check_measurable(self, preset) -> None:
        if preset.arch != host_arch() or preset.is_cross:
            raise DeployError(f"tuning '{preset.name}' needs its board to measure on (emulated timings mean nothing)",
                              hint="register the board with a TVM RPC tracker and pass --rpc-tracker HOST:PORT "
                                   "--rpc-key KEY")
        missing = missing_features(self.cpu_features(preset.tvm_target()))
        if missing:
            raise DeployError(f"this CPU lacks {', '.join(missing)}, which '{preset.name}' code uses: it cannot "
                              "measure it", hint="tune on a machine with that CPU, or measure remotely with --rpc-tracker")

    def register_tuning_rules(self) -> None:
        from .winograd import register_rules

        register_rules()  # the Winograd transforms' schedules, as MetaSchedule custom rules

    def load_tensor_intrinsics(self) -> None:
        from .intrinsics import light_tensor_intrinsics
        from .int8_dot import ISAS

        light_tensor_intrinsics()
        for isa in ISAS.values():
            isa.intrinsic()

    def check_precision(self, preset, precision: str) -> None:
        if precision == "fp16" and preset.arch == "x86_64":
            log.warn("fp16 on x86 CPUs: no native float16 arithmetic, every op converts; expect it slower than fp32")

    def device(self, artifact_path):
        import tvm

        return tvm.cpu(0)

    def runs_here(self, target_manifest: dict) -> bool:
        """This host's architecture, and every CPU feature the code uses (else it would die of SIGILL)."""
        return (target_manifest["arch"] == host_arch()
                and not missing_features(target_manifest.get("cpu_features", [])))

    def timed_here(self, preset) -> bool:
        return self.runs_here({"arch": preset.arch, "cpu_features": self.cpu_features(preset.tvm_target())})

    def check_runner(self, preset) -> None:
        from .board import runtime_libs

        if runtime_libs.supported(preset.arch):
            runtime_libs.runtime_dir(preset.arch)  # fetch it (once) before the long part, to fail fast offline
            runtime_libs.check_compiler(preset.cross_compiler or "g++", preset.cross_package or "g++")

    def add_device_files(self, artifact_dir, preset) -> dict | None:
        from .board import runner, runtime_libs

        if not runtime_libs.supported(preset.arch):
            log.warn(f"no TVM runtime for {preset.arch} can be had here: the artifact is compile-only "
                     "(library and manifest, no runner)")
            return None
        return runner.add_device_files(artifact_dir, preset)

    def check_device_files(self, artifact_dir, device: dict) -> None:
        from .board import runner

        runner.check_files(artifact_dir, device)

    def runner_launcher(self, device: dict) -> list[str]:
        from .board import runner

        return runner.launcher(device)

    def run_runner(self, artifact_dir, device: dict, outputs: list[dict], inputs: dict | None,
                   repeat: int = 1, warmup: int = 0, threads: int | None = None):
        from .board import runner

        return runner.run_runner(artifact_dir, device, outputs, inputs, repeat=repeat, warmup=warmup, threads=threads)

    def bundle_readme(self, manifest: dict, bundle_name: str, folder: str) -> str:
        from .board.board_readme import board_readme

        return board_readme(manifest, bundle_name, folder)


BACKEND = CpuBackend()
