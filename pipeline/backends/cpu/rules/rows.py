"""Row-wise reductions: softmax, layer/instance/group norm, over a dynamic dim or long static rows."""

from __future__ import annotations

from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from .rule_base import REDUCE, extent, inline_into_last, parallel, plain_block, reduces_inner_axis, reduction_blocks, start


class Rows(CPUScheduleRule):
    """Softmax, layer norm and the like: one parallel loop over the rows, every stage of a row
    computed inside it, row by row.

    dlight's Reduction splits the row into vectors guarded lane by lane, and keeps every stage's
    full-size intermediate; here each row's stages are plain loops of the row's length (LLVM
    vectorizes them with a scalar tail) over intermediates of one row. Taken where a loop has a
    symbolic extent, and for static shapes whose every reduction runs along the innermost,
    contiguous axis over a row of 16 or more: ViT's softmax over 197 scores ran 9x slower than
    ONNX Runtime's under dlight's Reduction, wav2vec2's group norm over 3199 steps 7x."""

    min_row = 16

    def apply(self, func, target, _):
        sch, blocks = start(self, func, target)
        if sch is None or len(blocks) < 2 or not reduction_blocks(sch, blocks):
            return None
        if all(extent(lp, sch) is not None for b in blocks for lp in sch.get_loops(b)) \
                and not self._long_rows(sch, reduction_blocks(sch, blocks)):
            return None
        blocks, loops = inline_into_last(sch, blocks)
        if loops is None:
            return None
        # the last stage is one value per row (a norm's mean or deviation): its loop is the rows
        row = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
        parallel(sch, row)
        for b in reversed(blocks[:-1]):
            sch.compute_at(b, row, preserve_unit_loops=False)
            if reduction_blocks(sch, [b]):
                # the row's max / sum: a local scalar (in a register), not a workspace word
                # that LLVM must store at every step
                sch.set_scope(b, 0, "local")
        return sch

    def _long_rows(self, sch, reds) -> bool:
        """Whether every reduction reduces only its innermost loop, over min_row or more, along
        the contiguous axis of its input."""
        for b in reds:
            plain = plain_block(sch, b)
            if plain is None:
                return False
            loops, kinds = plain
            if kinds[-1] != REDUCE or REDUCE in kinds[:-1] or (extent(loops[-1], sch) or 0) < self.min_row:
                return False
            if reduces_inner_axis(sch, b) is False:  # strided steps (NHWC channels): rules/columns.py
                return False
        return True
