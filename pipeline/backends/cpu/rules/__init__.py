"""Default CPU schedules: what a kernel runs with when the tuning database has no record for it.

TVM legalizes every operator to a plain loop nest: single-threaded, scalar, with the output
written through memory on every multiply-add. These rules, in the style of TVM's dlight
(``ApplyDefaultSchedule`` runs the first rule that applies to each unscheduled function),
give every kernel a schedule that is parallel over cores and vectorized:

- ``Winograd``: the winograd module's tile transforms (pack, unpack with its epilogue), scheduled by
  backends/cpu/winograd.py itself; their matmuls take ``ConvMatmul``.
- ``Int8Vnni``: the vnni module's packed int8 convolution, blocked like ConvMatmul, with each
  16 output x 4 input channels step tensorized to one AVX-512 VNNI ``vpdpbusd``.
- ``ConvMatmul``: one reduction block (conv2d in NHWC/HWIO, depthwise conv, matmul, dense,
  pooling windows) with injective producers (padding) and an elementwise epilogue (bias,
  residual add, relu). The output is tiled into a register block of ``rows x (1-2 vectors)``:
  vectors along the output channel (contiguous in the output and in HWIO / [K, N] weights),
  rows along the next spatial axis. The reduction runs inside the block, the accumulators stay
  in registers, and the epilogue is applied to each block as it leaves registers. When the
  weights outweigh the activations, output-channel blocks are the outer loop.
- dlight's own CPU ``GEMV`` and ``Reduction`` (softmax, layer norm).
- ``Injective``: elementwise, transpose, reshape, pad: inlined into one loop nest, parallel
  outer loop, vectorized inner loop.
- ``Parallel``: anything else gets its outermost data-parallel loops run in parallel.

Tile sizes come from the target's vector width (``llvm_get_vector_width``): 16 floats per
AVX-512 register, 8 for AVX2, 4 for NEON.

One rule per file, each behind dlight's ``apply(func, target, tunable)``: a rule that does not
apply returns None and the next one tries; ``Parallel`` is the last resort.
"""

from __future__ import annotations

from tvm.s_tir import dlight as dl

from .conv_matmul import ConvMatmul
from .injective import Injective
from .int8_vnni import Int8Vnni
from .parallel import Parallel
from .winograd import Winograd


def rules() -> list:
    return [Winograd(), Int8Vnni(), ConvMatmul(), dl.cpu.GEMV(), dl.cpu.Reduction(), Injective(), Parallel()]


def default_schedule(func, target):
    """The schedule the first applicable rule gives ``func`` (its trace can be stored as a
    tuning record), or None."""
    with target:
        for rule in rules():
            sch = rule.apply(func, target, False)
            if isinstance(sch, list):
                sch = sch[0] if sch else None
            if sch is not None:
                return sch
    return None


def apply_default_schedules(mod, target):
    """Schedule every function the database left unscheduled; returns the module."""
    with target:
        return dl.ApplyDefaultSchedule(*rules())(mod)
