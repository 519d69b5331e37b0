"""Default CUDA schedules: what a kernel runs with when the tuning database has no record for it.

One rule per file, each behind dlight's ``apply(func, target, tunable)``; the first rule that
applies schedules the kernel, a rule that does not apply returns None, and a rule that raises
counts as not applying (the next one tries, and the compile says so):

- ``TensorCore`` (tensor_core.py): float16 GEMM-shaped kernels (dense, matmul, batched matmul,
  NHWC convolutions as implicit GEMM) on tensor cores with ``ldmatrix`` + ``mma.sync`` and
  float32 accumulation, sm_80 and newer; the epilogue is fused into the store.
- dlight's GPU rules, in TVM's order: ``Matmul`` (its own tiling, WMMA for float16 on sm_70+
  shapes ``TensorCore`` did not take), ``GEMV`` and ``LowBatchGEMV`` (batch-1 and small-batch
  matrix-vector products keep a GEMV schedule), ``Reduction``, ``GeneralReduction`` (softmax,
  norms), ``Transpose`` and ``Fallback`` (elementwise: one thread per output element).
"""

from __future__ import annotations

from tvm.s_tir import dlight as dl

from ...guarded import Guarded, first_schedule, report
from .tensor_core import TensorCore

FALLBACK = "Fallback"


def rules(failures: list | None = None, chosen: dict | None = None, tensor_cores: bool = True) -> list:
    g = dl.gpu
    plain = [TensorCore()] * tensor_cores + [g.Matmul(), g.GEMV(), g.LowBatchGEMV(), g.Reduction(), g.GeneralReduction(),
             g.Transpose(), g.Fallback()]
    return [Guarded(r, failures if failures is not None else [], chosen) for r in plain]


def default_schedule(func, target):
    """The schedule the first applicable rule gives ``func`` (its trace can be stored as a
    tuning record), or None."""
    return first_schedule(rules(), func, target)


def apply_default_schedules(mod, target, chosen: dict | None = None, tensor_cores: bool = True):
    failures: list = []
    with target:
        mod = dl.ApplyDefaultSchedule(*rules(failures, chosen, tensor_cores))(mod)
    report(failures)
    return mod
