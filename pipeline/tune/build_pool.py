"""A MetaSchedule builder whose worker processes outlive a batch (TVM's LocalBuilder starts new ones per batch)."""

from __future__ import annotations

RECYCLE = 40  # batches a pool serves before fresh workers replace it (TVM's note: its workers leak)


def _build_one(f_build, mod, target, params):
    """In a worker: build ``mod`` and export it as LocalBuilder does (MetaSchedule's
    ``default_export``: a temporary .tar), whose path comes back."""
    from tvm.runtime import load_param_dict
    from tvm.s_tir.meta_schedule.builder.local_builder import default_export

    return default_export(f_build(mod, target, load_param_dict(params) if params is not None else None))


def pool_builder(f_build, max_workers: int, timeout_sec: float):
    """A builder that keeps ``max_workers`` processes across batches: each importing TVM costs
    6-7 s here, which TVM's LocalBuilder paid for every batch of candidates, longer than the
    batch's builds and runs together on a small model. ``close()`` ends the workers."""
    from tvm.ir.utils import derived_object
    from tvm.runtime import save_param_dict
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    @derived_object
    class PoolBuilder(PyBuilder):
        def __init__(self):
            super().__init__()
            self._pool = None
            self._batches = 0

        def build(self, build_inputs):
            if self._pool is None or self._batches >= RECYCLE:
                self.close()
                self._pool = PopenPoolExecutor(max_workers=max_workers, timeout=timeout_sec)
            self._batches += 1
            jobs = [(f_build, b.mod, b.target, None if b.params is None else save_param_dict(b.params))
                    for b in build_inputs]
            results = []
            for r in self._pool.map_with_error_catching(lambda x: _build_one(*x), jobs):
                if r.status == StatusKind.COMPLETE:
                    results.append(BuilderResult(r.value, None))
                elif r.status == StatusKind.TIMEOUT:
                    results.append(BuilderResult(None, f"build timed out after {timeout_sec} s"))
                else:
                    results.append(BuilderResult(None, f"build failed\n{r.value}"))
            return results

        def close(self):
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
                self._batches = 0

    return PoolBuilder()
