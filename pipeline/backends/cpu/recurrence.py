"""LSTM recurrences as one CPU kernel each, instead of a few kernels per time step.

The frontend unrolls a recurrent op over its sequence (frontend/converters/rnn.py): an LSTM of
100 steps, two layers, both directions, became 400 steps of small kernels (a [1, 128] x [128, 512]
matmul, slices, gates), each a parallel region of its own: the model ran 19x slower than ONNX
Runtime, the time spent starting threads (``benchmarks/zoo.txt``, lstm_tagger). Here the whole
recurrence of one LSTM node (every step, every direction) is one kernel: the directions run in
parallel, each step's ``H R^T`` is a register-blocked, vectorized matrix-vector product (``R^T``
stays in cache across steps) and the gates are applied in the same pass, with vectorizable
polynomial sigmoid and tanh (those of ``fastmath``: TOPI's). The input projection of all steps
stays one matmul before it, as in the unrolled form.

Taken for the float32 LSTM with the default activations (Sigmoid, Tanh, Tanh), any direction,
clip, peepholes, initial states, a static batch; anything else stays unrolled.
"""

from __future__ import annotations

_TANH_ALPHA = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
               -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16)
_TANH_BETA = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)


def fast_tanh(x):
    """TOPI's ``fast_tanh`` (Eigen's rational approximation, clamped to [-9, 9]) of a PrimExpr; NaN stays NaN."""
    from tvm import tirx

    def c(v):
        return tirx.const(v, "float32")

    xc = tirx.max(tirx.min(x, c(9.0)), c(-9.0))
    x2 = xc * xc
    p = c(_TANH_ALPHA[6])
    for a in reversed(_TANH_ALPHA[:6]):
        p = x2 * p + c(a)
    p = xc * p
    q = c(_TANH_BETA[3])
    for b in reversed(_TANH_BETA[:3]):
        q = x2 * q + c(b)
    return tirx.Select(tirx.isnan(x), x, p / q)


def fast_sigmoid(x):
    from tvm import tirx

    half = tirx.const(0.5, "float32")
    return fast_tanh(x * half) * half + half


def _block(n: int, choices=(128, 64, 32, 16, 8, 4, 2, 1)) -> int:
    """The largest of ``choices`` that divides ``n`` (1 divides all: a scalar loop)."""
    return next(w for w in choices if n % w == 0)


def lstm_kernel(dirs: int, steps: int, batch: int, hidden: int, reverse: tuple, clip: float | None = None,
                peephole: bool = False):
    """The PrimFunc of an LSTM recurrence, already scheduled:

    ``(xw [D, T, B, 4H], rt [D, H, 4H], h0 [D, B, H], c0 [D, B, H], p [D, 3H])
    -> (y [D, T, B, H], hn [D, B, H], cn [D, B, H])``

    ``xw`` holds each step's input projection plus both biases, ``rt`` the recurrent weights
    transposed, gates in ONNX's order (i, o, f, c); ``p`` the peepholes (i, o, f), read only
    when ``peephole``. Direction ``d`` runs its steps backwards where ``reverse[d]``."""
    from tvm import tirx
    from tvm.script import tirx as T

    D, S, B, H, G = dirs, steps, batch, hidden, 4 * hidden
    W = _block(G)  # output columns per register block of the matrix-vector product
    V = _block(H, (16, 8, 4, 2, 1))  # lanes of the gate pass
    f32 = "float32"

    def step_of(d, s):  # the time index of step s of direction d
        rev = [bool(r) for r in reverse]
        if all(rev):
            return S - 1 - s
        if not any(rev):
            return s
        return tirx.Select(d == rev.index(True), S - 1 - s, s)

    def clipped(v):
        if clip is None:
            return v
        return tirx.max(tirx.min(v, tirx.const(clip, f32)), tirx.const(-clip, f32))

    def gate(pre, peep, c):  # an i/o/f gate's input: its pre-activation (+ peephole x cell), clipped
        return clipped(pre + peep * c if peephole else pre)

    sig, tanh = fast_sigmoid, fast_tanh

    @T.prim_func(private=True)
    def lstm(xw: T.Buffer((D, S, B, G), f32), rt: T.Buffer((D, H, G), f32), h0: T.Buffer((D, B, H), f32),
             c0: T.Buffer((D, B, H), f32), p: T.Buffer((D, 3 * H), f32), y: T.Buffer((D, S, B, H), f32),
             hn: T.Buffer((D, B, H), f32), cn: T.Buffer((D, B, H), f32)):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        g = T.alloc_buffer((D, G), f32)
        for d in T.parallel(D):
            for b, j in T.grid(B, H):
                hn[d, b, j] = h0[d, b, j]
                cn[d, b, j] = c0[d, b, j]
            for s in range(S):
                for b in range(B):
                    for jb in range(G // W):
                        acc = T.alloc_buffer((W,), f32, scope="local")
                        for jj in T.vectorized(W):
                            acc[jj] = xw[d, step_of(d, s), b, jb * W + jj]
                        for k in range(H):
                            for jj in T.vectorized(W):
                                acc[jj] = acc[jj] + hn[d, b, k] * rt[d, k, jb * W + jj]
                        for jj in T.vectorized(W):
                            g[d, jb * W + jj] = acc[jj]
                    for jo in range(H // V):
                        for ji in T.vectorized(V):
                            cn[d, b, jo * V + ji] = (
                                sig(gate(g[d, 2 * H + jo * V + ji], p[d, 2 * H + jo * V + ji], cn[d, b, jo * V + ji]))
                                * cn[d, b, jo * V + ji]
                                + sig(gate(g[d, jo * V + ji], p[d, jo * V + ji], cn[d, b, jo * V + ji]))
                                * tanh(clipped(g[d, 3 * H + jo * V + ji])))
                            hn[d, b, jo * V + ji] = (
                                sig(gate(g[d, H + jo * V + ji], p[d, H + jo * V + ji], cn[d, b, jo * V + ji]))
                                * tanh(cn[d, b, jo * V + ji]))
                            y[d, step_of(d, s), b, jo * V + ji] = hn[d, b, jo * V + ji]

    return lstm
