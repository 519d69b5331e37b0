"""Default CPU schedules: what a kernel runs with when the tuning database has no record for it.

TVM legalizes every operator to a plain loop nest: single-threaded, scalar, with the output
written through memory on every multiply-add. These rules, in the style of TVM's dlight
(``ApplyDefaultSchedule`` runs the first rule that applies to each unscheduled function),
give every kernel a schedule that is parallel over cores and vectorized:

- ``Winograd``: the winograd module's tile transforms (pack, unpack with its epilogue), scheduled by
  backends/cpu/winograd.py itself; their matmuls take ``ConvMatmul``.
- ``Int8Dot``: the int8_dot module's packed int8 convolution, blocked like ConvMatmul, with each
  lanes x 4 input channels step tensorized to one AVX-512 VNNI ``vpdpbusd`` (16 lanes) or one
  ARM dotprod ``sdot`` (4 lanes).
- ``ConvMatmul``: one reduction block (conv2d in NHWC/HWIO, depthwise conv, matmul, dense,
  pooling windows) with injective producers (padding) and an elementwise epilogue (bias,
  residual add, relu). The output is tiled into a register block of ``rows x (1-2 vectors)``:
  vectors along the output channel (contiguous in the output and in HWIO / [K, N] weights),
  rows along the next spatial axis. The reduction runs inside the block, the accumulators stay
  in registers, and the epilogue is applied to each block as it leaves registers. When the
  weights outweigh the activations, output-channel blocks are the outer loop.
- ``Gemv``: ConvMatmul for a single output row (a batch-1 dense layer) with constant weights: the
  output channels outermost, up to 4 vectors a step, the weights prepacked as panels.
- ``Columns``: a norm reduced along an outer, strided axis (an instance norm after an NHWC conv):
  channel blocks in parallel, each stage with the steps outside and the block's channels as vectors.
- ``Rows``: a softmax or norm over a dynamic dim, or along long static rows: one parallel loop
  over rows, each row's stages computed inside it.
- dlight's own CPU ``GEMV`` and ``Reduction`` (softmax, layer norm).
- ``Injective``: elementwise, transpose, reshape, pad: inlined into one loop nest, parallel
  outer loop, vectorized inner loop.
- ``Parallel``: anything else gets its outermost data-parallel loops run in parallel.

A kernel too small to split (``base.SERIAL_BELOW`` loop iterations) keeps its loops serial
under every rule of this package: a parallel region costs more than it saves there, and beside a
busy neighbour process it waits for a worker that is not running.

Tile sizes come from the target's vector width (``vector.vector_bits``: TVM's own answer is 512 on every x86 CPU): 16 floats per
AVX-512 register, 8 for AVX2, 4 for NEON.

One rule per file, each behind dlight's ``apply(func, target, tunable)``: a rule that does not
apply returns None and the next one tries; ``Parallel`` is the last resort.
"""

from __future__ import annotations

from tvm.s_tir import dlight as dl
from ...guarded import Guarded, first_schedule, report
from .rule_base import serial_if_small
from .columns import Columns
from .conv_matmul import ConvMatmul
from .gemv import Gemv
from .rows import Rows
from .injective import Injective
from .int8_dot_schedule import Int8Dot
from .parallel import Parallel
from .winograd_schedule import Winograd


def rules(failures: list | None = None, chosen: dict | None = None) -> list:
    plain = [Winograd(), Int8Dot(), Gemv(), ConvMatmul(), Columns(), Rows(), dl.cpu.GEMV(), dl.cpu.Reduction(), Injective(),
             Parallel()]
    return [Guarded(r, failures if failures is not None else [], chosen, serial_if_small) for r in plain]


def default_schedule(func, target):
    """The schedule the first applicable rule gives ``func`` (its trace can be stored as a
    tuning record), or None."""
    return first_schedule(rules(), func, target)


def apply_default_schedules(mod, target, chosen: dict | None = None):
    """Schedule every function the database left unscheduled; returns the module. ``chosen`` gets
    each kernel's rule, keyed by the PrimFunc it scheduled (the module's, before scheduling)."""
    failures: list = []
    with target:
        mod = dl.ApplyDefaultSchedule(*rules(failures, chosen))(mod)
    report(failures)
    return mod
