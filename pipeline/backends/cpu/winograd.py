"""float32 3x3 convolutions on CPUs as Winograd F(4x4, 3x3): 4x fewer multiply-adds.

A stride-1 3x3 convolution computes each 4x4 output tile from a 6x6 input tile. Winograd's
minimal filtering algorithm (Lavin & Gray, 2015) does it with 36 products per tile and channel
pair instead of 144: the tile is transformed (V = B^T d B), multiplied elementwise with the
transformed filter (U = G g G^T, computed here at compile time), and transformed back
(Y = A^T M A). Summed over input channels, the products are 36 independent matmuls:

    V[6, 6, P, CI] = pack(x)            P = tiles; padding read as zeros
    M[6, 6, P, CO] = matmul(V, U)       U[6, 6, CI, CO] constant
    y[N, H, W, CO] = unpack(M)          bias, ReLU and residual adds fuse into it

On these 2 cores the direct 3x3 convolutions of ResNet-18 already run near the FMA peak (and so
does ONNX Runtime's): only fewer multiplies make them faster. The matmuls are ordinary kernels
(tuned like any other); ``pack`` and ``unpack`` are TE computes whose 6x6 (4x4) tile loops are
unrolled by ``schedule`` so that every transform coefficient is a constant. The same schedule
serves as the default (rules/winograd_schedule.py) and as MetaSchedule's custom rule
(the ``schedule_rule`` block annotation), which also samples its vector and chunk sizes.

Only convolutions with enough output tiles are rewritten: the transformed weights are 4x larger
(36 vs 9 values per channel pair), and where there are few tiles (7x7 and 14x14 outputs,
hundreds of channels) reading them costs more than the saved multiplies (measured:
scripts/profile_layers.py). The transforms add rounding: errors stay around 1e-6 relative.
"""

from __future__ import annotations

import numpy as np

M, R = 4, 3          # F(4x4, 3x3)
ALPHA = M + R - 1    # 6x6 input tiles
PACK, UNPACK = "deploy_winograd_pack", "deploy_winograd_unpack"
MIN_TILES = 32       # rewrite convs with at least this many 4x4 output tiles (28x28 outputs: 49)
MAX_WEIGHT_BYTES = 4 << 20  # and transformed weights that stay in cache (ResNet's 256x256: 9.4 MB)


def matrices() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A [6, 4], B [6, 6], G [6, 3] for F(4, 3), from TVM's Cook-Toom construction with the
    interpolation points that minimize float error (Barabasz et al.)."""
    from tvm.topi.nn.winograd_util import _cook_toom_convolution, _interpolation_points

    return _cook_toom_convolution(_interpolation_points(M + R - 2), M, R)


def transform_weights(w_hwio: np.ndarray) -> np.ndarray:
    """U = G g G^T for every channel pair: [3, 3, CI, CO] -> [6, 6, CI, CO] float32."""
    _, _, G = matrices()
    return np.einsum("ak,bl,klio->abio", G, G, w_hwio.astype(np.float64)).astype(np.float32)


def _coef(mat: np.ndarray, row: int, var):
    """mat[row, var] for a loop variable ``var``: a select chain that folds to a constant once the
    loop over ``var`` is unrolled."""
    from tvm import tirx

    col = mat[row]
    expr = tirx.const(float(col[-1]), "float32")
    for j in range(len(col) - 2, -1, -1):
        expr = tirx.Select(var == j, tirx.const(float(col[j]), "float32"), expr)
    return expr


def _i64(v):
    from tvm import tirx

    return tirx.IntImm("int64", int(v))  # Relax shapes are int64: FuseTIR needs the same


def pack_func(x_shape, pad_tl, tiles_hw):
    """V[eps, nu, p, ci] = sum_a B[a, eps] sum_b B[b, nu] x_pad[n, 4 th + a, 4 tw + b, ci]:
    the padded tile, its rows transformed, then its columns (three blocks)."""
    from tvm import te, tirx

    _, B, _ = matrices()
    n, h, w, ci = (int(v) for v in x_shape)
    nh, nw = tiles_hw
    top, left = pad_tl
    X = te.placeholder([_i64(v) for v in x_shape], "float32", name="x")
    zero = tirx.const(0.0, "float32")
    xp = te.compute([_i64(v) for v in (n, nh * M + R - 1, nw * M + R - 1, ci)],
                    lambda b_, y, x, c: tirx.if_then_else(
                        tirx.all(y >= _i64(top), y < _i64(h + top), x >= _i64(left), x < _i64(w + left)),
                        X[b_, y - _i64(top), x - _i64(left), c], zero), name=f"{PACK}_pad")

    def tile(p):
        b_, t = p // _i64(nh * nw), p % _i64(nh * nw)
        return b_, t // _i64(nw) * _i64(M), t % _i64(nw) * _i64(M)

    def rows(a, nu, p, c):
        b_, y, x = tile(p)
        return _sum(xp[b_, y + a, x + _i64(b), c] * _coef(B, b, nu) for b in range(ALPHA))

    tmp = te.compute([_i64(v) for v in (ALPHA, ALPHA, n * nh * nw, ci)], rows, name=f"{PACK}_rows")
    out = te.compute([_i64(v) for v in (ALPHA, ALPHA, n * nh * nw, ci)],
                     lambda eps, nu, p, c: _sum(tmp[_i64(a), nu, p, c] * _coef(B, a, eps) for a in range(ALPHA)),
                     name=PACK, attrs={"schedule_rule": PACK})
    return te.create_prim_func([X, out]).without_attr("global_symbol")


def _sum(terms):
    acc = None
    for t in terms:
        acc = t if acc is None else acc + t
    return acc


def unpack_func(m_shape, out_shape, tiles_hw):
    """y[n, h, w, co] = sum_a A[a, h % 4] sum_b A[b, w % 4] M[a, b, tile(n, h, w), co]: the
    columns of each tile transformed, then its rows (two blocks)."""
    from tvm import te

    A, _, _ = matrices()
    nh, nw = tiles_hw
    Mt = te.placeholder([_i64(v) for v in m_shape], "float32", name="m")
    tmp = te.compute([_i64(v) for v in (ALPHA, M, m_shape[2], m_shape[3])],
                     lambda a, vw, p, c: _sum(Mt[a, _i64(b), p, c] * _coef(A, b, vw) for b in range(ALPHA)),
                     name=f"{UNPACK}_cols")

    def f(b_, y, x, c):
        p = b_ * _i64(nh * nw) + (y // _i64(M)) * _i64(nw) + x // _i64(M)
        return _sum(tmp[_i64(a), x % _i64(M), p, c] * _coef(A, a, y % _i64(M)) for a in range(ALPHA))

    out = te.compute([_i64(v) for v in out_shape], f, name=UNPACK, attrs={"schedule_rule": UNPACK})
    return te.create_prim_func([Mt, out]).without_attr("global_symbol")


def eligible(call) -> bool:
    """A float32 NHWC/HWIO 3x3 stride-1 undilated dense conv2d with constant weights and enough
    output tiles."""
    import tvm

    a = call.attrs
    w = call.args[1]
    if not isinstance(w, tvm.ir.expr.Constant):
        return False
    if (str(a.data_layout) != "NHWC" or str(a.kernel_layout) != "HWIO" or str(a.out_layout) != "NHWC"
            or int(a.groups) != 1 or [int(s) for s in a.strides] != [1, 1]
            or [int(d) for d in a.dilation] != [1, 1]):
        return False
    if str(w.ty.dtype) != "float32" or str(call.args[0].ty.dtype) != "float32":
        return False
    if str(a.out_dtype) not in ("", "void", "None", "float32"):
        return False
    kh, kw, ci, co = (int(v) for v in w.ty.shape)  # a constant: static
    try:
        _, oh, ow, _ = (int(v) for v in call.ty.shape)
        _ = [int(v) for v in call.args[0].ty.shape]
    except (TypeError, ValueError):  # symbolic input or output shapes
        return False
    return ((kh, kw) == (3, 3) and -(-oh // M) * -(-ow // M) >= MIN_TILES
            and ALPHA * ALPHA * ci * co * 4 <= MAX_WEIGHT_BYTES)


def winograd_rewrite(mod):
    """Rewrite the eligible conv2d calls; returns (mod, count)."""
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, wildcard
    from ...relax_helpers import rewrite_functions

    conv = is_op("relax.nn.conv2d")(wildcard(), is_const())
    bb = relax.BlockBuilder(mod)
    funcs: dict[tuple, tvm.ir.GlobalVar] = {}
    count = [0]

    def func(kind, key, make):
        if (kind, key) not in funcs:
            funcs[(kind, key)] = bb.add_func(make(), f"{kind}{len(funcs)}")
        return funcs[(kind, key)]

    def rewrite(orig, _m):
        if not eligible(orig):
            return orig
        x, w = orig.args
        top, left, _, _ = (int(p) for p in orig.attrs.padding)
        x_shape = tuple(int(v) for v in x.ty.shape)
        out_shape = tuple(int(v) for v in orig.ty.shape)
        n, oh, ow, co = out_shape
        nh, nw = -(-oh // M), -(-ow // M)
        ci = x_shape[3]
        v_shape = (ALPHA, ALPHA, n * nh * nw, ci)
        pack = func(PACK, (x_shape, top, left, nh, nw),
                    lambda: pack_func(x_shape, (top, left), (nh, nw)))
        v = relax.call_tir(pack, [x], out_ty=relax.TensorType(list(v_shape), "float32"))
        u = relax.const(transform_weights(w.value.numpy()))
        m = relax.op.matmul(v, u, out_dtype="float32")
        m_shape = (ALPHA, ALPHA, n * nh * nw, co)
        unpack = func(UNPACK, (m_shape, out_shape), lambda: unpack_func(m_shape, out_shape, (nh, nw)))
        count[0] += 1
        return relax.call_tir(unpack, [m], out_ty=relax.TensorType(list(out_shape), "float32"))

    return rewrite_functions(bb, mod, (conv, rewrite)), count[0]


def _find(sch, rule: str):
    """The top-level block annotated with ``schedule_rule`` = ``rule``, or None."""
    try:
        root = sch.get_sblock("root")
    except Exception:  # noqa: BLE001 - no root block: not a TE-made kernel
        return None
    for blk in sch.get_child_blocks(root):
        if str(sch.get(blk).annotations.get("schedule_rule", "")) == rule:
            return blk
    return None


def _ext(sch, loop) -> int:
    return int(sch.get(loop).extent)


def _vec_split(sch, loop, lanes: int, vectors: int):
    """(outer, inner) with inner ``vectors`` x ``lanes`` wide when the extent allows, else None."""
    ext = _ext(sch, loop)
    if ext % lanes:
        return None
    width = lanes * vectors if ext % (lanes * vectors) == 0 else lanes
    return sch.split(loop, factors=[None, width])


def _block(sch, name):
    try:
        return sch.get_sblock(name)
    except Exception:  # noqa: BLE001
        return None


def _local_tile(sch, block, at, lanes: int) -> None:
    """Compute ``block`` per tile under loop ``at``: its small loops unrolled, channels vectorized."""
    sch.compute_at(block, at, preserve_unit_loops=True)
    loops = sch.get_loops(block)
    depth = [i for i, lp in enumerate(loops) if sch.get(lp).same_as(sch.get(at))][0]
    *small, c = loops[depth + 1:]
    if _ext(sch, c) % lanes == 0:  # else (channels below or not a multiple of a vector): scalar
        sch.vectorize(sch.split(c, factors=[None, lanes])[1] if _ext(sch, c) > lanes else c)
    for lp in small:
        if _ext(sch, lp) > 1:
            sch.unroll(lp)


def schedule_pack(sch, block, lanes: int, vectors: int = 1) -> None:
    """Tiles x channel vectors parallel outside; per tile, the padded 6x6 window, its row and
    column transforms in registers (unrolled, so every coefficient is a constant)."""
    from .rules.rule_base import parallel
    eps, nu, p, c = sch.get_loops(block)
    split = _vec_split(sch, c, lanes, vectors)
    if split is None:
        sch.reorder(p, c, eps, nu)
        parallel(sch, p)
        at = c
    else:
        c_o, c_i = split
        sch.reorder(p, c_o, eps, nu, c_i)
        par = sch.fuse(p, c_o)
        parallel(sch, par)
        sch.vectorize(c_i)
        at = par
    sch.unroll(eps)
    sch.unroll(nu)
    rows, pad = _block(sch, f"{PACK}_rows"), _block(sch, f"{PACK}_pad")
    if rows is not None:
        _local_tile(sch, rows, at, lanes)
    if pad is not None:
        _local_tile(sch, pad, at, lanes)


def schedule_unpack(sch, block, lanes: int, vectors: int = 1) -> None:
    """Elementwise consumers (bias, ReLU, residual add) inlined into the inverse transform; each
    4x4 output tile's transform unrolled in registers, channel vectors inside, tiles parallel."""
    from .rules.rule_base import parallel
    for consumer in sch.get_consumers(block):
        try:
            sch.reverse_compute_inline(consumer)
        except Exception:  # noqa: BLE001 - not elementwise: stays a separate block
            pass
    n, y, x, c = sch.get_loops(block)
    th, vh = sch.split(y, factors=[None, M])
    tw, vw = sch.split(x, factors=[None, M])
    split = _vec_split(sch, c, lanes, vectors)
    if split is None:
        sch.reorder(n, th, tw, c, vh, vw)
        par = sch.fuse(n, th, tw)
        at = c
    else:
        c_o, c_i = split
        sch.reorder(n, th, tw, c_o, vh, vw, c_i)
        sch.vectorize(c_i)
        par = sch.fuse(n, th, tw)
        at = c_o
    parallel(sch, par)
    sch.unroll(vh)
    sch.unroll(vw)
    cols = _block(sch, f"{UNPACK}_cols")
    if cols is not None:
        _local_tile(sch, cols, at, lanes)


def schedule(sch, target, vectors: int = 1) -> bool:
    """Schedule the unpack and pack blocks of a (fused) function; False when it has neither.
    (FuseOps may put one conv's unpack and the next conv's pack in one function.)"""
    from .vector import vector_lanes

    lanes = vector_lanes(target, "float32")
    found = False
    for name, fn in ((UNPACK, schedule_unpack), (PACK, schedule_pack)):
        blk = _find(sch, name)
        if blk is not None:
            fn(sch, blk, lanes, vectors)
            found = True
    return found


def register_rules() -> None:
    """MetaSchedule's custom rules for the two blocks (``schedule_rule`` annotation, target key
    "cpu"): the default schedule, and the same with two channel vectors per step. Vectors are
    the current target's width, or 16 floats where no target is current (a wider vector than
    the CPU's is split by LLVM, still correct)."""
    import tvm
    from tvm.target import Target

    from .vector import vector_lanes

    def make(fn):
        def rule(sch, block):
            t = Target.current(allow_none=True)
            lanes = vector_lanes(t, "float32") if t is not None and str(t.kind.name) == "llvm" else 16
            out = []
            for vectors in (1, 2):
                s = sch.copy()
                fn(s, block, lanes, vectors)
                out.append(s)
            return out
        return rule

    for name, fn in ((PACK, schedule_pack), (UNPACK, schedule_unpack)):
        key = f"s_tir.meta_schedule.cpu.{name}"
        if tvm.get_global_func(key, allow_missing=True) is None:
            tvm.register_global_func(key, make(fn))
