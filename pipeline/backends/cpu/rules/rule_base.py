"""What the default CPU rules share: loop and block queries, the rule's start, epilogue fusion."""

from __future__ import annotations

import contextlib
import contextvars

from tvm import DataType, s_tir, tirx

SPATIAL, REDUCE = 0, 2  # tirx.IterVar kinds

# A kernel with fewer loop iterations than this (summed over its blocks: output elements times
# reduction steps) runs on one thread. Splitting it saves microseconds at best, and every parallel
# region waits for all of the pool's workers: beside another busy process on the same cores a
# worker that is not scheduled stalls the whole call (the example CNN went from 0.08 ms to
# several ms beside a second deploy process; benchmarks/neighbours.txt).
SERIAL_BELOW = 16384
_serial = contextvars.ContextVar("serial", default=False)
_last_work: list = [None, None]  # (func, work(func)) of the kernel the rules last tried


def work(func) -> int | None:
    """Loop iterations of ``func``'s blocks (spatial x reduction extents), None when a dim is symbolic."""
    total = 0
    sch = s_tir.Schedule(func)
    stack = [sch.get_sblock("root")] if has_root(sch) else []
    while stack:
        for b in sch.get_child_blocks(stack.pop()):
            n = 1
            for iv in sch.get(b).iter_vars:
                ext = iv.dom.extent
                if not isinstance(ext, tirx.IntImm):
                    return None
                n *= int(ext)
            total += n
            stack.append(b)
    return total


@contextlib.contextmanager
def serial_if_small(func):
    """Within it, ``parallel`` leaves the loops of a kernel below SERIAL_BELOW iterations serial."""
    if _last_work[0] is func:  # the rules try one kernel after another: estimate each kernel once
        n = _last_work[1]
    else:
        try:
            n = work(func)
        except Exception:  # noqa: BLE001 - no estimate: schedule as before
            n = None
        _last_work[:] = [func, n]
    token = _serial.set(n is not None and n < SERIAL_BELOW)
    try:
        yield
    finally:
        _serial.reset(token)


def parallel(sch, loop) -> None:
    """``sch.parallel(loop)``, unless the kernel is too small to split (``serial_if_small``)."""
    if not _serial.get():
        sch.parallel(loop)


def extent(loop_sref_or_rv, sch) -> int | None:
    ext = sch.get(loop_sref_or_rv).extent
    return int(ext) if isinstance(ext, tirx.IntImm) else None


def plain_block(sch, block) -> tuple[list, list[int]] | None:
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


def reduction_blocks(sch, blocks) -> list:
    return [b for b in blocks if any(int(iv.iter_type) == REDUCE for iv in sch.get(b).iter_vars)]


def pick(extent: int, choices: list[int]) -> int:
    for c in choices:
        if c <= extent and extent % c == 0:
            return c
    return 1


def vectorize_inner(sch, block, lanes: int) -> None:
    """Vectorize the innermost loop of an elementwise block when it divides into vectors."""
    loops = sch.get_loops(block)
    if not loops:
        return
    ext = extent(loops[-1], sch)
    if ext is None:  # a dynamic dim innermost: lanes-wide chunks (the last one guarded), unrolled
        _, inner = sch.split(loops[-1], factors=[None, lanes])
        sch.unroll(inner)
        return
    if ext <= 1:
        return
    if ext <= lanes * 4 and (ext % lanes == 0 or ext < lanes):
        sch.vectorize(loops[-1])
    elif ext % lanes == 0:
        _, inner = sch.split(loops[-1], factors=[None, lanes])
        sch.vectorize(inner)


def parallel_outer(sch, loops: list) -> None:
    """Fuse the leading loops until there are 64 iterations or more and run them in parallel. A
    loop of symbolic extent (a dynamic dim, maybe a batch of 1) counts as one iteration."""
    lead = []
    total = 1
    if len(loops) > 1 and any(extent(lp, sch) is None for lp in loops):
        loops = loops[:-1]  # leave each thread an inner loop to run, whatever the sizes
    for lp in loops:
        lead.append(lp)
        total *= extent(lp, sch) or 1
        if total >= 64:
            break
    if not lead:
        return
    fused = sch.fuse(*lead) if len(lead) > 1 else lead[0]
    if (extent(fused, sch) or 2) > 1:
        parallel(sch, fused)


def start(rule, func, target):
    """A schedule of ``func`` and its top-level blocks, or None when the rule cannot apply."""
    if not isinstance(func, tirx.PrimFunc) or not rule.is_target_available(target):
        return None, None
    sch = s_tir.Schedule(func)
    if not has_root(sch):
        return None, None
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    return (sch, blocks) if blocks else (None, None)


def fuse_epilogue(sch, consumers) -> tuple[bool, object]:
    """Inline an elementwise chain into its last block; (ok, that block or None)."""
    for c in consumers[:-1]:
        try:
            sch.compute_inline(c)
        except Exception:  # noqa: BLE001 - not inlinable: leave this function to other rules
            return False, None
    return True, (consumers[-1] if consumers else None)


def schedule_producers(sch, producers, lanes: int) -> None:
    """Padding and other stages before the main block: vectorized inside, parallel outside."""
    for p in producers:
        try:
            vectorize_inner(sch, p, lanes)
            loops = sch.get_loops(p)
            parallel_outer(sch, loops[:-1] or loops)
        except Exception:  # noqa: BLE001 - leave that stage as it is
            pass


def bytes(buf) -> int:
    n = DataType(str(buf.dtype)).bits // 8
    for d in buf.shape:
        n *= int(d) if isinstance(d, tirx.IntImm) else 1
    return n


def has_root(sch) -> bool:
    try:
        sch.get_sblock("root")
        return True
    except Exception:  # noqa: BLE001
        return False


L2_SHARE = 256 << 10  # bytes of a core's L2 a tile loop can count on keeping (Zen: 512 KB, Intel: 256 KB-2 MB)


def weights_dominate(sch, block, row_axis, row_tiles: int = 1, panels: int = 1) -> bool:
    """Whether the output-channel panels should be the outer loop (each weight panel read once,
    the activations once per panel) rather than the row tiles (the activations read once, every
    weight once per row tile): the order that moves fewer bytes past the L2. An operand that fits
    in ``L2_SHARE`` is re-read from the L2 for free; one that does not is re-read from the L3 or
    memory on every pass. A long Conv1D (wav2vec2's 512 -> 512, stride 2, 3,199 steps in: 3 MB of
    weights, 6.5 MB of activations) streamed its weights once per 3-row tile, 533 times, with the
    rows outer: 1.7 GB, against 213 MB with the panels outer. Where neither order moves half the bytes of the other, the
    larger operand goes outer."""
    from tvm.tirx.analysis import undefined_vars

    if row_axis is None:
        return False
    b = sch.get(block)
    row_var = b.iter_vars[row_axis].var
    weights = data = 0
    for region in b.reads:
        used = {v.same_as(row_var) for r in region.region for v in undefined_vars(r.min)}
        if True in used:
            data += bytes(region.source)
        else:
            weights += bytes(region.source)
    rows_outer = data + (weights if weights <= L2_SHARE else weights * max(1, row_tiles))
    panels_outer = weights + (data if data <= L2_SHARE else data * max(1, panels))
    if max(rows_outer, panels_outer) >= 2 * min(rows_outer, panels_outer):
        return panels_outer < rows_outer
    return weights > data  # close: the caches blur the difference


def reduces_inner_axis(sch, block) -> bool | None:
    """Whether a reduction block's largest input is reduced along its innermost, contiguous axis
    (a row of a softmax or layer norm) rather than along an outer one (a channel's steps in NHWC);
    None where its innermost index is neither (a constant, or both kinds of var)."""
    from tvm.tirx.analysis import undefined_vars

    b = sch.get(block)
    reduce_vars = [iv.var for iv in b.iter_vars if int(iv.iter_type) == REDUCE]
    spatial_vars = [iv.var for iv in b.iter_vars if int(iv.iter_type) == SPATIAL]
    if not b.reads:
        return None
    big = max(b.reads, key=lambda r: bytes(r.source))
    used = undefined_vars(big.region[-1].min)
    red = any(v.same_as(r) for v in used for r in reduce_vars)
    spa = any(v.same_as(s) for v in used for s in spatial_vars)
    if red == spa:
        return None
    return red


def inline_into_last(sch, blocks) -> tuple[list, list | None]:
    """Inline every elementwise stage with one consumer (reductions stay); returns the root's
    blocks after it and the last block's loops, or None where that block is not one plain,
    all-spatial loop nest (the norms' and softmax's rules start from it)."""
    for b in blocks[:-1]:
        if not reduction_blocks(sch, [b]) and len(sch.get_consumers(b)) == 1:
            try:
                sch.compute_inline(b)
            except Exception:  # noqa: BLE001 - keep the stage
                pass
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    plain = plain_block(sch, blocks[-1])
    if plain is None or any(k != SPATIAL for k in plain[1]):
        return blocks, None
    return blocks, plain[0]
