"""Default CPU schedules: what a kernel runs with when the tuning database has no record for it.

TVM legalizes every operator to a plain loop nest: single-threaded, scalar, with the output
written through memory on every multiply-add. These rules, in the style of TVM's dlight
(``ApplyDefaultSchedule`` runs the first rule that applies to each unscheduled function),
give every kernel a schedule that is parallel over cores and vectorized:

- ``Winograd``: winograd.py's tile transforms (pack, unpack with its epilogue), scheduled by
  winograd.py itself; their matmuls take ``ConvMatmul``.
- ``Int8Vnni``: quantize_vnni's packed int8 convolution, blocked like ConvMatmul, with each
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
"""

from __future__ import annotations

from tvm import DataType, s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target
from tvm.target.codegen import llvm_get_vector_width

SPATIAL, REDUCE = 0, 2  # tirx.IterVar kinds


def vector_lanes(target: Target, dtype: str) -> int:
    bits = llvm_get_vector_width(target)
    if bits <= 0:
        bits = 128
    return max(1, bits // DataType(dtype).bits)


def _extent(loop_sref_or_rv, sch) -> int | None:
    ext = sch.get(loop_sref_or_rv).extent
    return int(ext) if isinstance(ext, tirx.IntImm) else None


def _plain_block(sch, block) -> tuple[list, list[int]] | None:
    """The block's loops and iter kinds, when each loop binds exactly one iter var, in order."""
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    infos = normalize_prim_func(sch)
    if infos is None:
        return None
    want = sch.get(block)
    for info in infos:
        if sch.get(info.block_rv).same_as(want):
            loops = sch.get_loops(block)
            if len(loops) != len(info.iters):
                return None
            kinds = {"S": SPATIAL, "R": REDUCE}
            if any(it.kind not in kinds for it in info.iters):
                return None
            return loops, [kinds[it.kind] for it in info.iters]
    return None


def _reduction_blocks(sch, blocks) -> list:
    return [b for b in blocks if any(int(iv.iter_type) == REDUCE for iv in sch.get(b).iter_vars)]


def _pick(extent: int, choices: list[int]) -> int:
    for c in choices:
        if c <= extent and extent % c == 0:
            return c
    return 1


def _vectorize_inner(sch, block, lanes: int) -> None:
    """Vectorize the innermost loop of an elementwise block when it divides into vectors."""
    loops = sch.get_loops(block)
    if not loops:
        return
    ext = _extent(loops[-1], sch)
    if ext is None or ext <= 1:
        return
    if ext <= lanes * 4 and (ext % lanes == 0 or ext < lanes):
        sch.vectorize(loops[-1])
    elif ext % lanes == 0:
        _, inner = sch.split(loops[-1], factors=[None, lanes])
        sch.vectorize(inner)


def _parallel_outer(sch, loops: list) -> None:
    """Fuse the leading loops that have static extents and run them in parallel."""
    lead = []
    for lp in loops:
        if _extent(lp, sch) is None:
            break
        lead.append(lp)
        total = 1
        for l2 in lead:
            total *= _extent(l2, sch)
        if total >= 64:
            break
    if not lead:
        return
    fused = sch.fuse(*lead) if len(lead) > 1 else lead[0]
    if (_extent(fused, sch) or 1) > 1:
        sch.parallel(fused)


class ConvMatmul(CPUScheduleRule):
    """Register-blocked conv2d / matmul with the epilogue fused into each output block."""

    def __init__(self, max_rows: int = 8, max_accumulators: int = 16, max_vectors: int = 2):
        self.max_rows = max_rows
        self.max_vectors = max_vectors
        self.max_acc = max_accumulators

    @staticmethod
    def _weights_dominate(sch, block, row_axis) -> bool:
        """Whether the inputs not indexed by the row axis (weights) outweigh those that are."""
        from tvm.tirx.analysis import undefined_vars

        if row_axis is None:
            return False
        b = sch.get(block)
        row_var = b.iter_vars[row_axis].var
        weights = data = 0
        for region in b.reads:
            used = {v.same_as(row_var) for r in region.region for v in undefined_vars(r.min)}
            if True in used:
                data += _bytes(region.source)
            else:
                weights += _bytes(region.source)
        return weights > data

    def apply(self, func, target, _):
        sch, blocks = _start(self, func, target)
        if sch is None:
            return None
        reds = _reduction_blocks(sch, blocks)
        if len(reds) != 1:
            return None
        main = reds[0]
        idx = [i for i, b in enumerate(blocks) if sch.get(b).same_as(sch.get(main))][0]
        producers, consumers = blocks[:idx], blocks[idx + 1:]
        plain = _plain_block(sch, main)
        if plain is None:
            return None
        loops, kinds = plain
        # spatial loops first, then reductions (as legalized)
        n_s = kinds.index(REDUCE) if REDUCE in kinds else len(kinds)
        if n_s == 0 or any(k != REDUCE for k in kinds[n_s:]) or any(k != SPATIAL for k in kinds[:n_s]):
            return None
        out = sch.get(main).writes[0].source
        dtype = str(out.dtype)
        lanes = vector_lanes(target, dtype)
        ext = [_extent(lp, sch) for lp in loops]
        if any(e is None for e in ext):
            return None
        ok, epilogue = _fuse_epilogue(sch, consumers)
        if not ok:
            return None
        # tiles: vectors along the last spatial axis, rows along the previous non-unit one
        s_ext = ext[:n_s]
        v_ext = s_ext[-1]
        vec = _pick(v_ext, [k * lanes for k in range(self.max_vectors, 0, -1)]) if v_ext >= lanes else v_ext
        if v_ext >= lanes and v_ext % lanes:
            vec = lanes
        row_axis = next((i for i in range(n_s - 2, -1, -1) if s_ext[i] > 1), None)
        nvec = max(1, vec // lanes)
        max_rows = max(1, min(self.max_rows, self.max_acc // nvec))
        rows = _pick(s_ext[row_axis], list(range(max_rows, 0, -1))) if row_axis is not None else 1
        if row_axis is not None and rows < 3 and s_ext[row_axis] > max_rows:
            rows = max_rows  # a ragged last block beats a 1-row block
        s_loops = list(loops[:n_s])
        r_loops = list(loops[n_s:])
        v_o, v_i = sch.split(s_loops[-1], factors=[None, vec])
        outer = s_loops[:-1]
        if row_axis is not None and rows > 1:
            r_o, r_i = sch.split(s_loops[row_axis], factors=[None, rows])
            outer = s_loops[:row_axis] + [r_o] + s_loops[row_axis + 1:-1]
            inner = [r_i, v_i]
        else:
            inner = [v_i]
        # weights larger than the activations (late conv layers, transformer matmuls): walk the
        # output channels outermost so each weight slice is read from memory once, not once per row
        first = [v_o, *outer] if self._weights_dominate(sch, main, row_axis) else [*outer, v_o]
        sch.reorder(*first, *r_loops, *inner)
        par = sch.fuse(*first) if outer else v_o
        sch.parallel(par)
        if epilogue is not None:
            sch.reverse_compute_at(epilogue, par)
            ep_loops = sch.get_loops(epilogue)[1:]
            if ep_loops:
                _vectorize_inner(sch, epilogue, lanes)
        whole = v_ext % vec == 0 or vec == v_ext  # no ragged vector block: safe to vectorize
        if len(inner) == 2:
            sch.unroll(inner[0])
        if whole:
            sch.vectorize(inner[-1])
        init = sch.decompose_reduction(main, r_loops[0])
        iloops = sch.get_loops(init)
        if iloops and whole:
            sch.vectorize(iloops[-1])
        _schedule_producers(sch, producers, lanes)
        return sch


def _start(rule, func, target):
    """A schedule of ``func`` and its top-level blocks, or None when the rule cannot apply."""
    if not isinstance(func, tirx.PrimFunc) or not rule.is_target_available(target):
        return None, None
    sch = s_tir.Schedule(func)
    if not _has_root(sch):
        return None, None
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    return (sch, blocks) if blocks else (None, None)


def _fuse_epilogue(sch, consumers) -> tuple[bool, object]:
    """Inline an elementwise chain into its last block; (ok, that block or None)."""
    for c in consumers[:-1]:
        try:
            sch.compute_inline(c)
        except Exception:  # noqa: BLE001 - not inlinable: leave this function to other rules
            return False, None
    return True, (consumers[-1] if consumers else None)


def _schedule_producers(sch, producers, lanes: int) -> None:
    """Padding and other stages before the main block: vectorized inside, parallel outside."""
    for p in producers:
        try:
            _vectorize_inner(sch, p, lanes)
            loops = sch.get_loops(p)
            _parallel_outer(sch, loops[:-1] or loops)
        except Exception:  # noqa: BLE001 - leave that stage as it is
            pass


def _bytes(buf) -> int:
    n = DataType(str(buf.dtype)).bits // 8
    for d in buf.shape:
        n *= int(d) if isinstance(d, tirx.IntImm) else 1
    return n


def _has_root(sch) -> bool:
    try:
        sch.get_sblock("root")
        return True
    except Exception:  # noqa: BLE001
        return False


class Int8Vnni(CPUScheduleRule):
    """quantize_vnni's packed int8 conv: ConvMatmul's register blocking, with each 16 output
    channels x 4 input channels step done by one ``vpdpbusd`` (TVM's dot_16x4_vnni intrinsic)."""

    def __init__(self, max_rows: int = 8, max_accumulators: int = 16):
        self.max_rows, self.max_acc = max_rows, max_accumulators

    def apply(self, func, target, _):
        from .quantize_vnni import BLOCK, register_intrinsic

        sch, blocks = _start(self, func, target)
        if sch is None:
            return None
        names = [sch.get(b).name_hint for b in blocks]
        if names.count(BLOCK) != 1 or len(_reduction_blocks(sch, blocks)) != 1:
            return None
        idx = names.index(BLOCK)
        main, producers, consumers = blocks[idx], blocks[:idx], blocks[idx + 1:]
        loops = sch.get_loops(main)
        if len(loops) != 7:
            return None
        n, h, w, co, ry, rx, rc = loops
        ext = [_extent(lp, sch) for lp in loops]
        if any(e is None for e in ext) or ext[3] % 16 or ext[6] % 4:
            return None
        ok, epilogue = _fuse_epilogue(sch, consumers)
        if not ok:
            return None
        nvec = 2 if ext[3] % 32 == 0 else 1
        rows = _pick(ext[2], list(range(max(1, min(self.max_rows, self.max_acc // nvec)), 0, -1)))
        co_o, co_m, co_i = sch.split(co, factors=[None, nvec, 16])
        rc_o, rc_i = sch.split(rc, factors=[None, 4])
        w_o, w_i = sch.split(w, factors=[None, rows])
        first = [co_o, n, h, w_o] if ConvMatmul._weights_dominate(sch, main, 2) else [n, h, w_o, co_o]
        sch.reorder(*first, ry, rx, rc_o, w_i, co_m, co_i, rc_i)
        par = sch.fuse(*first)
        sch.parallel(par)
        if epilogue is not None:
            sch.reverse_compute_at(epilogue, par)
            _vectorize_inner(sch, epilogue, vector_lanes(target, "float32"))
        init = sch.decompose_reduction(main, ry)
        sch.tensorize(co_i, register_intrinsic())
        sch.unroll(w_i)
        sch.unroll(co_m)
        iloops = sch.get_loops(init)
        sch.vectorize(iloops[-1])
        _schedule_producers(sch, producers, 64)  # uint8 lanes
        return sch


class Winograd(CPUScheduleRule):
    """winograd.py's tile transforms: its own schedule (also MetaSchedule's custom rule)."""

    def apply(self, func, target, _):
        from . import winograd

        sch, _ = _start(self, func, target)
        if sch is None or not winograd.schedule(sch, target):
            return None
        for b in sch.get_child_blocks(sch.get_sblock("root")):  # consumers left un-inlined
            if not sch.get(b).annotations.get("schedule_rule"):
                plain = _plain_block(sch, b)
                if plain is not None and plain[1] and plain[1][0] == SPATIAL:
                    _parallel_outer(sch, plain[0][:1])
        return sch


class Injective(CPUScheduleRule):
    """Elementwise / layout ops: inline into the last block, parallel outside, vectors inside."""

    def apply(self, func, target, _):
        sch, blocks = _start(self, func, target)
        if sch is None or _reduction_blocks(sch, blocks):
            return None
        for b in blocks[:-1]:
            try:
                sch.compute_inline(b)
            except Exception:  # noqa: BLE001
                return None
        last = sch.get_child_blocks(sch.get_sblock("root"))
        if len(last) != 1:
            return None
        last = last[0]
        loops = sch.get_loops(last)
        if not loops or any(_extent(lp, sch) is None for lp in loops):
            return None
        dtype = str(sch.get(last).writes[0].source.dtype)
        lanes = vector_lanes(target, dtype)
        _vectorize_inner(sch, last, lanes)
        loops = sch.get_loops(last)
        _parallel_outer(sch, loops[:-1] if len(loops) > 1 else loops)
        return sch


class Parallel(CPUScheduleRule):
    """Last resort: run the outermost data-parallel loop of each top-level block in parallel."""

    def apply(self, func, target, _):
        sch, blocks = _start(self, func, target)
        if sch is None:
            return None
        changed = False
        for b in blocks:
            plain = _plain_block(sch, b)
            if plain is None:
                continue
            loops, kinds = plain
            lead = []
            for lp, k in zip(loops, kinds):
                if k != SPATIAL or _extent(lp, sch) is None:
                    break
                lead.append(lp)
            if lead:
                _parallel_outer(sch, lead)
                changed = True
        return sch if changed else None


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
