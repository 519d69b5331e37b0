"""TensorCore: a float16 GEMM-shaped kernel on tensor cores (ldmatrix + mma.sync, fp32 accumulation).

One float16 GEMM-shaped reduction with ``ldmatrix`` + ``mma.sync.m16n8k16`` and float32
accumulation (sm_80 and newer).

Any kernel whose main block is a contraction ``C[s, i, j] += A[s, i, k] * B[s, j, k]`` up to a
renaming of its axes takes it: dense and matmul layers, batched matmuls (attention's QK^T and
PV), and convolutions, whose input reads ``pad[n, h + kh, w + kw, c]`` become an implicit GEMM
(M = n*h*w, N = out channels, K = kh*kw*c): the im2col indexing is folded into the loads from
global memory into shared memory, so no im2col tensor is ever written.

The schedule: each thread block computes a ``BM x BN`` tile of C with 4 warps (2 x 2), each
warp a ``BM/2 x BN/2`` tile of 16x16 fragments; K advances ``BK`` at a time through
shared memory (vectorized, padded rows against bank conflicts, double buffered by TVM's
software pipeline); fragments are loaded with ``ldmatrix`` and multiplied with
``mma.sync``; the accumulators (float32) leave through shared memory, where the kernel's
epilogue (bias, residual, activation, the cast back to float16) is applied on the way out.
Shapes not a multiple of the tile are padded (``pad_einsum``); problems too small for a tile
(a GEMV: M or N under 16) are left to the next rule.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.s_tir.dlight.gpu.matmul import (auto_inline_consumer_chain, auto_inline_producers, get_index_map,
                                         get_reduction_blocks)

MIN_SM = 80
HALF = ("float16",)


def sm_version(target) -> int:
    arch = str(target.attrs.get("arch", ""))  # "sm_90a"; a target without one gives -1
    digits = arch.replace("sm_", "").rstrip("a")
    return int(digits) if digits.isdigit() else -1


def _const(x) -> int | None:
    return int(x) if isinstance(x, tirx.IntImm) else None


class TensorCore(ScheduleRule):
    warps_m, warps_n = 2, 2
    vector = 8  # float16 per 16-byte load

    def apply(self, func, target, _tunable):
        from . import mma_intrinsics as intrinsics

        ns = intrinsics.namespace()
        shared_16x16_to_ldmatrix_32x8_layout = ns["shared_16x16_to_ldmatrix_32x8_layout"]
        if not isinstance(func, tirx.PrimFunc) or sm_version(target) < MIN_SM:
            return None
        if func.attrs is not None and "dlight.do_not_tensorize" in func.attrs.keys():
            return None
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(get_root_block(sch))
        reductions = get_reduction_blocks(sch, blocks)
        if reductions is None:
            return None
        main = reductions[0]
        stmt = sch.get(main)
        if len(stmt.reads) != 2 or len(stmt.writes) != 1:
            return None
        if any(str(r.source.dtype) not in HALF for r in stmt.reads):
            return None
        out_dtype = str(stmt.writes[0].source.dtype)
        if out_dtype not in ("float16", "float32"):
            return None
        units = [iv for iv in stmt.iter_vars if _const(iv.dom.extent) == 1]
        if units and len(units) < len(stmt.iter_vars):  # a 1x1 conv's kh, kw: reindex drops them, the maps would not
            keep = [iv.var for iv in stmt.iter_vars if _const(iv.dom.extent) != 1]
            sch.transform_block_layout(main, tirx.IndexMap([iv.var for iv in stmt.iter_vars], keep, None))
            stmt = sch.get(main)
        maps = get_index_map(stmt)
        if maps is None:
            return None
        matmul_map, a_map, b_map, c_map = maps

        # normalize to C[S, I, J] += A[S, I, K] * B[S, J, K]
        ra = sch.reindex(main, ("read", 0))
        rb = sch.reindex(main, ("read", 1))
        rc = sch.reindex(main, ("write", 0))
        sch.transform_layout(ra, ("write", 0), a_map)
        sch.transform_layout(rb, ("write", 0), b_map)
        sch.transform_layout(rc, ("read", 0), c_map)
        sch.transform_block_layout(main, matmul_map)
        # an operand whose contiguous axis in memory is M or N (a [K, N] weight, HWIO filters):
        # its shared-memory copy is loaded along that axis, so global reads stay coalesced
        strided = {0: _k_not_last(sch, ra), 1: _k_not_last(sch, rb)}
        # 16-byte loads need 8 consecutive K elements in memory (not a 3-channel image's patches)
        vector = {i: _contiguous(sch, r, self.vector) for i, r in ((0, ra), (1, rb))}
        body = sch.get(main)
        if len(body.iter_vars) != 4:
            return None
        m, n, k = (_const(iv.dom.extent) for iv in body.iter_vars[1:])
        # a GEMV (one row or column) or a tiny K gains nothing from 16x16x16 fragments
        if (m is not None and m < 16) or (n is not None and n < 16) or (k is not None and k < 16):
            return None

        bm = 128 if m is None or m >= 128 else 64 if m >= 64 else 32
        bn = 128 if n is None or n >= 128 else 64 if n >= 64 else 32
        bk = 32
        wm, wn = self.warps_m, self.warps_n
        sch.pad_einsum(main, [1, bm, bn, bk])
        batch, i, j, kk = sch.get_loops(main)
        i, i16 = sch.split(i, [None, 16])
        j, j16 = sch.split(j, [None, 16])
        kk, k16 = sch.split(kk, [None, 16])
        sch.reorder(i, j, kk, i16, j16, k16)
        inner = main
        outer = sch.blockize(i16)

        i0, i1, i2 = sch.split(i, [None, wm, bm // wm // 16])
        j0, j1, j2 = sch.split(j, [None, wn, bn // wn // 16])
        k0, k1 = sch.split(kk, [None, bk // 16])
        sch.reorder(i0, j0, i1, j1, k0, k1, i2, j2)
        bx = sch.fuse(batch, i0, j0)
        sch.bind(bx, "blockIdx.x")
        sch.bind(i1, "threadIdx.z")
        sch.bind(j1, "threadIdx.y")

        def to_shared(idx):
            blk = sch.cache_read(outer, idx, "shared.dyn")
            sch.compute_at(blk, k0)
            auto_inline_producers(sch, blk)
            x, y = sch.get_loops(blk)[-2:]
            if strided[idx]:
                sch.reorder(y, x)
                fused = sch.fuse(y, x)
                _, tz, ty, tx = sch.split(fused, [None, wm, wn, 32])
            elif vector[idx]:
                fused = sch.fuse(x, y)
                _, tz, ty, tx, vec = sch.split(fused, [None, wm, wn, 32, self.vector])
                sch.vectorize(vec)
            else:
                fused = sch.fuse(x, y)
                _, tz, ty, tx = sch.split(fused, [None, wm, wn, 32])
            sch.bind(tz, "threadIdx.z")
            sch.bind(ty, "threadIdx.y")
            sch.bind(tx, "threadIdx.x")
            sch.storage_align(blk, 0, axis=-2, factor=32, offset=8)
            return blk

        def to_warp(idx):
            blk = sch.cache_read(outer, idx, "warp")
            sch.compute_at(blk, k1)
            ldmatrix_tiles(blk, ("write", 0))
            return blk

        def ldmatrix_tiles(blk, buffer):
            """The block's last two loops in 16x16 tiles, the warp buffer in ldmatrix's 32x8 fragment layout."""
            a, b = sch.get_loops(blk)[-2:]
            a0, a1 = sch.split(a, [None, 16])
            b0, b1 = sch.split(b, [None, 16])
            sch.reorder(a0, b0, a1, b1)
            sch.transform_layout(blk, buffer, lambda s, x, y: (
                s, x // 16, y // 16, *shared_16x16_to_ldmatrix_32x8_layout(x % 16, y % 16)))

        a_s, b_s = to_shared(0), to_shared(1)
        a_w, b_w = to_warp(0), to_warp(1)

        c_s = sch.cache_write(outer, 0, "shared.dyn")
        sch.reverse_compute_at(c_s, bx)
        c_w = sch.cache_write(outer, 0, "warp")
        sch.reverse_compute_at(c_w, j1)
        ldmatrix_tiles(c_w, ("read", 0))

        init = sch.decompose_reduction(outer, k0)
        init_inner = sch.get_child_blocks(init)[0]
        group = ns["get_mma_intrin_group"](load_scope="shared.dyn", store_scope="shared.dyn", in_dtype="float16",
                                     out_dtype=out_dtype,
                                     trans_a=False, trans_b=True)
        group = {k: intrinsics.ensure(v) for k, v in group.items()}
        sch.tensorize(sch.get_loops(init_inner)[-2], group["init"])
        sch.tensorize(sch.get_loops(a_w)[-2], group["load_a"])
        sch.tensorize(sch.get_loops(b_w)[-2], group["load_b"])
        sch.tensorize(sch.get_loops(inner)[-3], group["compute"])
        sch.tensorize(sch.get_loops(c_w)[-2], group["store"])

        auto_inline_consumer_chain(sch, c_s)
        fused = sch.fuse(*sch.get_loops(c_s)[-2:])
        _, tz, ty, tx = sch.split(fused, [None, wm, wn, 32])
        sch.bind(tz, "threadIdx.z")
        sch.bind(ty, "threadIdx.y")
        sch.bind(tx, "threadIdx.x")

        sch.annotate(k0, "software_pipeline_stage", [0, 0, 1])
        sch.annotate(k0, "software_pipeline_order", [0, 1, 2])
        return sch


def _contiguous(sch, reindex_block, vector: int) -> bool:
    """Whether the operand's source rows hold a multiple of ``vector`` elements (a static last dim)."""
    src = getattr(sch.get(reindex_block).body, "value", None)
    if src is None or not hasattr(src, "buffer"):
        return False
    last = _const(src.buffer.shape[-1])
    return last is not None and last % vector == 0


def _k_not_last(sch, reindex_block) -> bool:
    """Whether the source of a reindexed operand (after its layout became [S, M|N, K]) varies
    fastest with its M/N axis rather than K: the variables of the source's last index appear in
    the written M/N index."""
    blk = sch.get(reindex_block)
    store = blk.body
    src = getattr(store, "value", None)
    if src is None or not hasattr(src, "indices") or not hasattr(store, "indices") or len(store.indices) != 3:
        return False
    used = tirx.analysis.undefined_vars(src.indices[-1])
    mn = tirx.analysis.undefined_vars(store.indices[1])
    return any(u.same_as(v) for u in used for v in mn)
