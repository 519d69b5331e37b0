"""Register-blocked conv2d / matmul with the epilogue fused into each output block."""

from __future__ import annotations

from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from ..features import prepack_weights
from ..vector import vector_lanes, vector_registers
from .rule_base import REDUCE, SPATIAL, extent, fuse_epilogue, parallel, pick, plain_block, reduction_blocks, schedule_producers, start, vectorize_inner, weights_dominate


class ConvMatmul(CPUScheduleRule):
    """Register-blocked conv2d / matmul with the epilogue fused into each output block."""

    gemv_only = False  # the Gemv rule (rules/gemv.py) takes the single-row ones

    def __init__(self, max_rows: int = 8, max_accumulators: int = 16, max_vectors: int = 2):
        """``max_accumulators``: on a target with 32 vector registers; with 16 (AVX2) a tile keeps
        4 of them free (its weight vectors and the broadcast input): 12, as MLAS's 6x16 AVX2 kernel.
        A 7x2 tile spilled an accumulator to the stack in every step (1x1 convs 1.7-1.9x MLAS's
        time on a Zen CPU; 6x2: 1.1-1.3x)."""
        self.max_rows = max_rows
        self.max_vectors = max_vectors
        self.max_acc = max_accumulators

    def apply(self, func, target, _):
        sch, blocks = start(self, func, target)
        if sch is None:
            return None
        reds = reduction_blocks(sch, blocks)
        if len(reds) != 1:
            return None
        dynamic = any(extent(lp, sch) is None for lp in sch.get_loops(reds[0]))
        padded = self._pad_ragged(sch, reds[0], target)
        if padded:
            blocks = sch.get_child_blocks(sch.get_sblock("root"))
            reds = reduction_blocks(sch, blocks)
        main = reds[0]
        idx = [i for i, b in enumerate(blocks) if sch.get(b).same_as(sch.get(main))][0]
        producers, consumers = blocks[:idx], blocks[idx + 1:]
        plain = plain_block(sch, main)
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
        ext = [extent(lp, sch) for lp in loops]
        ok, epilogue = fuse_epilogue(sch, consumers)
        if not ok:
            return None
        group_axis = None
        width = group_width(sch, main, n_s)
        if width:  # a grouped conv: output channels as [group, channel in group], vectors inside a group
            g_loop, j_loop = sch.split(loops[n_s - 1], factors=[None, width])
            loops = [*loops[:n_s - 1], g_loop, j_loop, *loops[n_s:]]
            kinds = [*kinds[:n_s], SPATIAL, *kinds[n_s:]]
            ext = [*ext[:n_s - 1], ext[n_s - 1] // width, width, *ext[n_s:]]
            group_axis, n_s = n_s - 1, n_s + 1
        # tiles: vectors along the last spatial axis, rows along the previous non-unit one. A
        # dynamic dim (None) counts as large: its last block is ragged (guarded)
        big = 1 << 30
        s_ext = [big if e is None else e for e in ext[:n_s]]
        v_ext = s_ext[-1]
        # rows share the weight vector: never along the groups, whose weights differ
        row_axis = next((i for i in range(n_s - 2, -1, -1) if s_ext[i] > 1 and i != group_axis), None)
        gemv = row_axis is None and group_axis is None and not dynamic and _constant_weights(sch, main)
        if self.gemv_only != gemv:
            return None
        # a single row (a batch-1 dense layer): up to 4 vectors a tile, for independent accumulators
        max_vectors = 4 if gemv else self.max_vectors
        vec = pick(v_ext, [k * lanes for k in range(max_vectors, 0, -1)]) if v_ext >= lanes else v_ext
        if v_ext >= lanes and v_ext % lanes or ext[n_s - 1] is None:
            vec = lanes
        nvec = max(1, vec // lanes)
        max_acc = min(self.max_acc, vector_registers(target) - 4)
        max_rows = max(1, min(self.max_rows, max_acc // nvec))
        rows = pick(s_ext[row_axis], list(range(max_rows, 0, -1))) if row_axis is not None else 1
        if row_axis is not None and (rows < 3 and s_ext[row_axis] > max_rows or ext[row_axis] is None):
            rows = max_rows  # a ragged last block beats a 1-row block
            if ext[row_axis] is not None:
                # blocks of even size: 7 rows as 4 + 3, not 6 + 1, 14 as 5 + 5 + 4, not 6 + 6 + 2 (a
                # 1- or 2-row block runs at a fraction of the FMA rate: the late 7x7 and 14x14 1x1
                # convs of MobileNets took 1.6-1.7x ORT's time, 1.1-1.2x with even blocks)
                rows = -(-s_ext[row_axis] // -(-s_ext[row_axis] // max_rows))
        s_loops = list(loops[:n_s])
        r_loops = list(loops[n_s:])
        whole = divisible(sch, s_loops[-1], vec)  # no ragged vector block: safe to vectorize
        v_o, v_i = sch.split(s_loops[-1], factors=[None, vec])
        outer = s_loops[:-1]
        if row_axis is not None and rows > 1:
            r_o, r_i = sch.split(s_loops[row_axis], factors=[None, rows])
            outer = s_loops[:row_axis] + [r_o] + s_loops[row_axis + 1:-1]
            inner = [r_i, v_i]
        else:
            inner = [v_i]
        # the output channels outermost where that moves fewer bytes past the L2 (late conv layers,
        # transformer matmuls, long Conv1Ds: weights_dominate), so each weight panel is read once,
        # not once per row tile (a single row: every weight is read once, each task its own panel)
        row_tiles = 1
        for i, e in enumerate(s_ext[:-1]):
            row_tiles *= -(-e // rows) if i == row_axis else e
        panels = -(-v_ext // vec)
        first = [v_o, *outer] if gemv or weights_dominate(sch, main, row_axis, row_tiles, panels) else [*outer, v_o]
        sch.reorder(*first, *r_loops, *inner)
        if first[0] is v_o:  # weights outermost: each task streams its own panel
            pack_weights(sch, main, vec, target, padded=gemv)
        par = sch.fuse(*first) if outer else v_o
        parallel(sch, par)
        if dynamic:
            # a dynamic dim's buffers come from the workspace, which LLVM cannot tell apart: it would
            # keep the accumulators in memory. A local tile of them (a fixed size) stays in registers
            acc = sch.cache_write(main, 0, "local")
            sch.reverse_compute_at(acc, par)
            vectorize_inner(sch, acc, lanes)
        if epilogue is not None:
            sch.reverse_compute_at(epilogue, par)
            ep_loops = sch.get_loops(epilogue)[1:]
            if ep_loops:
                vectorize_inner(sch, epilogue, lanes)
        if len(inner) == 2:
            sch.unroll(inner[0])
        if whole:
            sch.vectorize(inner[-1])
        init = sch.decompose_reduction(main, r_loops[0])
        iloops = sch.get_loops(init)
        if iloops and whole:
            sch.vectorize(iloops[-1])
        taps = 1
        for e in ext[n_s:]:
            taps *= e or 1 << 30
        schedule_producers(sch, [p for p in producers
                                 if not self._into_tile(sch, p, par, lanes, taps <= 64 and _strided(sch, p, out))], lanes)
        return sch

    @staticmethod
    def _into_tile(sch, producer, par, lanes: int, window: bool) -> bool:
        """A pure copy before the main block (a 1x1 conv's identity pad) is inlined, not written
        whole to memory and read back. With ``window`` (a strided conv with few taps per output:
        a stride-2 depthwise conv), the input's zero padding too is computed inside each parallel
        task, for the tile's window only: MobileNetV2's stride-2 depthwise convs 0.44-0.84x the
        time of a padded copy of the whole input. At stride 1 the windows of neighbouring tasks
        overlap (up to 1.5x slower so), and a dense conv's padding is cheap next to its taps: both
        keep the copy. Weights padded once at build time (layout rewrites) stay where they are.
        False where the stage stays on its own."""
        b = sch.get(producer)
        if b.annotations.get("meta_schedule.layout_rewrite_preproc") is not None:
            return False
        try:
            if not _pads(b.body):
                sch.compute_inline(producer)
                return True
            if not window:
                return False
            sch.compute_at(producer, par, preserve_unit_loops=False)
        except Exception:  # noqa: BLE001 - leave it a stage of its own
            return False
        try:
            vectorize_inner(sch, producer, lanes)
        except Exception:  # noqa: BLE001 - scalar copy of a small window
            pass
        return True

    def _pad_ragged(self, sch, main, target) -> bool:
        """A matmul whose output width is not a multiple of the vector, whose rows have no divisor
        near a register block (ViT's 197 tokens), or whose rows or width are a dynamic dim, is padded to whole tiles (``pad_einsum``: padded copies
        of its inputs, the result cut back), so that its register tiles are whole and vectorize
        with no guard inside; False where it is not ragged or cannot be padded."""
        plain = plain_block(sch, main)
        if plain is None:
            return False
        loops, kinds = plain
        n_s = kinds.index(REDUCE) if REDUCE in kinds else len(kinds)
        ext = [extent(lp, sch) for lp in loops]
        if n_s < 1:
            return False
        lanes = vector_lanes(target, str(sch.get(main).writes[0].source.dtype))
        # a single row (the unit batch loop dropped): only the width can be ragged
        v_ext, r_ext = ext[n_s - 1], (ext[n_s - 2] if n_s >= 2 else 1)
        ragged_vec = v_ext is None or (v_ext >= lanes and v_ext % lanes)
        # rows with no divisor near a full register block (197 is prime): a guarded ragged block
        # ran ViT's matmuls 1.45x slower than 200 padded rows
        ragged_rows = r_ext is None or (r_ext > self.max_rows and pick(r_ext, list(range(self.max_rows, 0, -1))) < 4)
        if not ragged_vec and not ragged_rows:
            return False
        padding = [1] * len(kinds)
        if ragged_vec:
            # two vectors a tile where that costs little (1,000 classes -> 1,024): one left a
            # squeezenet head at 8 accumulators
            wide = self.max_vectors * lanes
            padding[n_s - 1] = wide if v_ext is not None and (-v_ext % wide) * 32 <= v_ext else lanes
        if n_s >= 2 and (r_ext is None or (r_ext > self.max_rows and r_ext % self.max_rows)):
            padding[n_s - 2] = self.max_rows
        try:
            sch.pad_einsum(main, padding)
        except Exception:  # noqa: BLE001 - not an einsum TVM can pad: schedule it ragged
            return False
        mark_weight_pads(sch, main)
        return True


def mark_weight_pads(sch, main) -> None:
    """The padded copies of constant weights (the function's layout-free buffers) are marked as
    layout rewrites: after scheduling, SplitLayoutRewritePreproc moves them out of the kernel and
    FoldConstant pads the weights once at build time, not on every call (a 512x1000 head copied 2 MB
    per inference)."""
    for producer in sch.get_producers(main):
        reads = sch.get(producer).reads
        if reads and all(_constant(sch, r.source) for r in reads):
            sch.annotate(producer, "meta_schedule.layout_rewrite_preproc", True)


def _weight_pad(sch, main, buf):
    """The block padding constant weights into ``buf`` at build time (``mark_weight_pads``), or None."""
    for producer in sch.get_producers(main):
        b = sch.get(producer)
        if b.annotations.get("meta_schedule.layout_rewrite_preproc") is not None and b.writes \
                and b.writes[0].source.same_as(buf):
            return producer
    return None


def _constant_weights(sch, main) -> bool:
    """Whether the block reads a constant (layout-free) buffer of 2 dims or more, or one padded
    from such at build time: a weight."""
    return any(len(r.source.shape) >= 2 and (_constant(sch, r.source) or _weight_pad(sch, main, r.source) is not None)
               for r in sch.get(main).reads)


def _constant(sch, buf) -> bool:
    """Whether ``buf`` is one of the function's layout-free parameters (constant weights, whose
    layout may change at build time: AttachAttrLayoutFreeBuffers marks them)."""
    func = sch.mod["main"]
    free = func.attrs.get("layout_free_buffers") if func.attrs else None
    params = [func.params[int(i)] for i in free or []]
    return any(buf.data.same_as(p) or buf.same_as(p) for p in params)


def divisible(sch, loop, factor: int) -> bool:
    """Whether the loop's extent (static, or a dynamic dim's expression) is a multiple of ``factor``."""
    from tvm import tirx
    from tvm.sym.analyzer import Analyzer

    ext = sch.get(loop).extent
    if isinstance(ext, tirx.IntImm):
        return int(ext) % factor == 0
    return bool(Analyzer().can_prove(tirx.floormod(ext, factor) == 0))


def group_width(sch, block, n_s: int) -> int:
    """The channels per group of a grouped conv (its input channel is ``out // width * width +
    rc``), read from the block's input indices; 0 when it is not one (or depthwise: width 1)."""
    import tvm
    from tvm import tirx

    b = sch.get(block)
    if n_s > len(b.iter_vars):
        return 0
    oc = b.iter_vars[n_s - 1]
    ext = oc.dom.extent
    if not isinstance(ext, tirx.IntImm):
        return 0
    found = []

    def visit(e):
        if isinstance(e, tirx.FloorDiv) and isinstance(e.a, tirx.Var) and e.a.same_as(oc.var) \
                and isinstance(e.b, tirx.IntImm):
            found.append(int(e.b))

    def walk(e):
        visit(e)
        for name in ("a", "b", "value", "true_value", "false_value", "condition"):
            sub = getattr(e, name, None)
            if isinstance(sub, tvm.ir.expr.Expr):
                walk(sub)
        for sub in getattr(e, "args", ()) if isinstance(e, tvm.ir.Call) else ():
            walk(sub)

    for region in b.reads:
        for r in region.region:
            walk(r.min)
    widths = set(found)
    if len(widths) != 1:
        return 0
    width = widths.pop()
    return width if 1 < width < int(ext) and int(ext) % width == 0 else 0


def _pads(stmt) -> bool:
    """Whether a block body selects (if_then_else: padding) rather than copies (TVM 0.27 has no
    Python visitor for TIR statements: its printed form tells)."""
    text = str(stmt)
    return "if_then_else" in text or "Select" in text


def _strided(sch, producer, out) -> bool:
    """Whether a 2-D (NHWC) conv's padded input has about twice or more the output's pixels."""
    src = sch.get(producer).writes[0].source
    if len(src.shape) != 4 or len(out.shape) != 4:
        return False
    try:
        pixels_in = int(src.shape[1]) * int(src.shape[2])
        pixels_out = int(out.shape[1]) * int(out.shape[2])
    except TypeError:  # a dynamic dim
        return False
    return pixels_in >= 1.9 * pixels_out


def pack_weights(sch, main, width: int, target, padded: bool = False) -> bool:
    """Constant weights read a tile of ``width`` output channels at a time are laid out as panels,
    [N / width, ..., width], so each task streams one contiguous panel instead of a ``width``-wide
    column of rows N apart (a layout rewrite, folded into the constants at build time: x86 hosts,
    where TVM runs the rewrite; elsewhere nothing changes). With ``padded``, weights padded to
    whole tiles at build time (``mark_weight_pads``) are padded straight into panels. False where
    it does not apply."""
    from tvm import tirx

    if not prepack_weights(target):
        return False
    b = sch.get(main)
    oc = b.iter_vars[-1 - sum(int(iv.iter_type) == REDUCE for iv in b.iter_vars)].var  # the last spatial var
    for idx, region in enumerate(b.reads):
        buf = region.source
        pad = _weight_pad(sch, main, buf) if padded else None
        if pad is None and not _constant(sch, buf):
            continue
        last = region.region[-1].min
        n = buf.shape[-1]
        if not (isinstance(last, tirx.Var) and last.same_as(oc)) or not isinstance(n, tirx.IntImm) \
                or int(n) % width or int(n) == width:
            continue
        ndim = len(buf.shape)
        index_map = tirx.IndexMap.from_func(lambda *i: [i[-1] // width, *i[:-1], i[-1] % width], ndim=ndim)
        if pad is not None:  # the padding block writes the panels
            sch.transform_layout(main, ("read", idx), index_map)
            return True
        cached = sch.cache_read(main, idx, "global")
        sch.transform_layout(main, ("read", idx), index_map)
        sch.annotate(cached, "meta_schedule.layout_rewrite_preproc", True)
        return True
    return False
