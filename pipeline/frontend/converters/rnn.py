"""LSTM, GRU and RNN (TVM's ONNX frontend has none), unrolled over the sequence.

The sequence length is static once input shapes are bound, so each step is a few Relax ops:
the input projection of all steps is one matmul up front (``X W^T + Wb + Rb``), then every step
adds ``H R^T`` and applies the gates. Forward, reverse and bidirectional; ``layout`` 0
(sequence first) and 1 (batch first, as torch's ``batch_first``); initial states; peepholes;
``clip``; the activations Sigmoid, Tanh, Relu, HardSigmoid, LeakyRelu, ThresholdedRelu, Affine,
ScaledTanh, Elu, Softsign, Softplus (their alphas and betas read as ONNX Runtime reads them);
GRU's ``linear_before_reset``; ``sequence_lens`` (constant or fed at run time: as in ONNX Runtime,
a sequence past its length keeps its state and outputs zeros, and one of length 0 ends in zero
states). LSTM's ``input_forget`` is
refused by name.
"""

from __future__ import annotations

import numpy as np

from . import converter_base
from .converter_base import add_ops, text

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}


class Unsupported(NotImplementedError):
    pass


def _const_array(expr):
    import tvm

    if isinstance(expr, tvm.ir.GenericConst):
        return expr.value.numpy()
    return None


# Activations that take an alpha and/or a beta, and the value ONNX Runtime uses where the node
# gives none: the ONNX op's default where the op still exists (HardSigmoid, LeakyRelu, Elu), 0
# for Affine, ScaledTanh and ThresholdedRelu (measured against onnxruntime 1.32).
_PARAMS = {"hardsigmoid": ((0.2,), (0.5,)), "leakyrelu": ((0.01,), ()), "elu": ((1.0,), ()),
           "affine": ((0.0,), (0.0,)), "scaledtanh": ((0.0,), (0.0,)), "thresholdedrelu": ((0.0,), ())}


def _activation(name: str, alpha, beta):
    """The ONNX RNN activation ``name`` as a function of a Relax expression."""
    from tvm import relax

    op = relax.op
    name_l = name.lower()

    def c(v):
        return relax.const(np.float32(v), "float32")

    if name_l == "sigmoid":
        return op.sigmoid
    if name_l == "tanh":
        return op.tanh
    if name_l == "relu":
        return op.nn.relu
    if name_l == "hardsigmoid":
        return lambda x: op.clip(op.add(op.multiply(x, c(alpha)), c(beta)), 0.0, 1.0)
    if name_l == "leakyrelu":
        return lambda x: op.nn.leakyrelu(x, alpha)
    if name_l == "thresholdedrelu":
        return lambda x: op.where(op.greater(x, c(alpha)), x, c(0))
    if name_l == "affine":
        return lambda x: op.add(op.multiply(x, c(alpha)), c(beta))
    if name_l == "scaledtanh":
        return lambda x: op.multiply(op.tanh(op.multiply(x, c(beta))), c(alpha))
    if name_l == "elu":
        return lambda x: op.where(op.greater(x, c(0)), x, op.multiply(op.subtract(op.exp(x), c(1)), c(alpha)))
    if name_l == "softsign":
        return lambda x: op.divide(x, op.add(op.abs(x), c(1)))
    if name_l == "softplus":
        return lambda x: op.log(op.add(op.exp(x), c(1)))
    raise Unsupported(f"activation '{name}' of a recurrent op is not supported")


def _activation_names(attr: dict) -> list[str]:
    return [a.decode() if isinstance(a, bytes) else str(a) for a in attr.get("activations", ())]


def _activations(kind: str, attr: dict, num_dir: int) -> list[list]:
    """Each direction's activation functions. ``activation_alpha``/``_beta`` are consumed in order
    by the activations that take one (HardSigmoid, Elu, ...; not by position in the list), as
    ONNX Runtime reads them; one direction's list given for both serves both, parameters too."""
    names = _activation_names(attr)
    per = len(DEFAULT_ACTS[kind])
    alphas = list(attr.get("activation_alpha", ()))
    betas = list(attr.get("activation_beta", ()))
    if not names:
        names = DEFAULT_ACTS[kind] * num_dir
    if len(names) == per and num_dir == 2:
        names, alphas, betas = names * 2, alphas * 2, betas * 2
    out = []
    for d in range(num_dir):
        fs = []
        for name in names[d * per:(d + 1) * per]:
            a_default, b_default = _PARAMS.get(name.lower(), ((), ()))
            alpha = (alphas.pop(0) if alphas else a_default[0]) if a_default else None
            beta = (betas.pop(0) if betas else b_default[0]) if b_default else None
            fs.append(_activation(name, alpha, beta))
        out.append(fs)
    return out


def convert(kind: str, bb, inputs, attr):
    from tvm import relax, tirx

    op = relax.op
    x, w, r = inputs[0], inputs[1], inputs[2]
    b = inputs[3] if len(inputs) > 3 else None
    seq_lens = inputs[4] if len(inputs) > 4 else None
    h0 = inputs[5] if len(inputs) > 5 else None
    c0 = inputs[6] if len(inputs) > 6 and kind == "LSTM" else None
    peep = inputs[7] if len(inputs) > 7 and kind == "LSTM" else None
    layout = int(attr.get("layout", 0))
    direction = text(attr, "direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise Unsupported(f"direction '{direction}'")
    num_dir = 2 if direction == "bidirectional" else 1
    if kind == "LSTM" and int(attr.get("input_forget", 0)):
        raise Unsupported("LSTM with input_forget=1 (coupled input and forget gates) is not supported")
    clip = attr.get("clip")
    gates = GATES[kind]

    xs = [int(v) if isinstance(v, tirx.IntImm) else v for v in x.ty.shape]  # a dynamic batch stays symbolic
    if layout == 1:
        x = bb.normalize(op.permute_dims(x, [1, 0, 2]))
        xs = [xs[1], xs[0], xs[2]]
    steps, batch = xs[0], xs[1]
    if not isinstance(steps, int):
        raise Unsupported(f"{kind} over a dynamic sequence length ({steps}): the recurrence is unrolled step by "
                          "step, so the length needs a size (--input-shape; the batch may stay dynamic)")
    hidden = int(attr.get("hidden_size") or int(w.ty.shape[1]) // gates)
    dtype = str(x.ty.dtype)

    lens = None  # [B, 1]: each sequence's length, where some may be shorter than the input
    if seq_lens is not None:
        given = _const_array(seq_lens)
        if given is not None and np.any((given < 0) | (given > steps)):
            raise Unsupported(f"{kind} with sequence_lens {given.tolist()} outside 0..{steps}, the input's length")
        if given is None or not np.all(given == steps):
            lens = bb.normalize(op.expand_dims(op.astype(seq_lens, "int64"), [1]))

    def part(t, d):  # t[d] of a [num_dir, ...] tensor
        return bb.normalize(op.squeeze(op.strided_slice(t, [0], [d], [d + 1]), [0]))

    def state(s, d):
        if s is None:
            return bb.normalize(op.zeros((batch, hidden), dtype))
        if layout == 1:  # [batch, num_dir, hidden]
            return bb.normalize(op.squeeze(op.strided_slice(s, [1], [d], [d + 1]), [1]))
        return part(s, d)

    def gate(t, j):  # the j-th gate's columns of a [B, gates * hidden] tensor
        return op.strided_slice(t, [1], [j * hidden], [(j + 1) * hidden])

    acts = _activations(kind, attr, num_dir)
    fused = None if lens is not None else _fused_lstm(bb, kind, attr, x, w, r, b, h0, c0, peep, layout, direction,
                                                       num_dir, steps, batch, hidden, dtype, clip)
    if fused is not None:
        return fused
    ys, hs, cs = [], [], []
    for d in range(num_dir):
        wd = bb.normalize(op.permute_dims(part(w, d), [1, 0]))  # [I, gates*H]
        rd = bb.normalize(op.permute_dims(part(r, d), [1, 0]))  # [H, gates*H]
        xw = bb.normalize(op.matmul(x, wd))  # [T, B, gates*H]
        rb = None
        if b is not None:
            bd = part(b, d)  # [2 * gates * H]: Wb then Rb
            wb = bb.normalize(op.strided_slice(bd, [0], [0], [gates * hidden]))
            rb = bb.normalize(op.strided_slice(bd, [0], [gates * hidden], [2 * gates * hidden]))
            if kind == "GRU" and int(attr.get("linear_before_reset", 0)):
                # Rb of the h gate stays inside r * (H Rh + Rbh); the others add up front
                rb_zr = bb.normalize(op.concat([op.strided_slice(rb, [0], [0], [2 * hidden]),
                                                op.zeros((hidden,), dtype)], axis=0))
                xw = bb.normalize(op.add(xw, op.add(wb, rb_zr)))
            else:
                xw = bb.normalize(op.add(xw, op.add(wb, rb)))
                rb = None
        xt_all = bb.normalize(op.split(xw, steps, axis=0)) if steps > 1 else None
        h = state(h0, d)
        c = state(c0, d) if kind == "LSTM" else None
        pd = part(peep, d) if peep is not None else None
        f = acts[d]
        order = range(steps - 1, -1, -1) if (direction == "reverse" or d == 1) else range(steps)
        out_t = [None] * steps

        def clipped(v):
            return op.clip(v, -float(clip), float(clip)) if clip is not None else v

        zero = h0 is None  # the state is zeros until the first step: its matmuls are skipped

        def plus_h(v, mat):  # v + H mat, where H is not all zeros
            return v if zero else op.add(v, op.matmul(h, mat))

        for t in order:
            h_prev, c_prev = h, c
            xt = bb.normalize(op.squeeze(relax.TupleGetItem(xt_all, t) if xt_all is not None else xw, [0]))  # [B, gates*H]
            if kind == "LSTM":
                g = bb.normalize(plus_h(xt, rd))
                gi, go, gf, gc = (bb.normalize(gate(g, j)) for j in range(4))
                if pd is not None:
                    gi = op.add(gi, op.multiply(op.strided_slice(pd, [0], [0], [hidden]), c))
                    gf = op.add(gf, op.multiply(op.strided_slice(pd, [0], [2 * hidden], [3 * hidden]), c))
                i_t = f[0](clipped(gi))
                f_t = f[0](clipped(gf))
                c_t = f[1](clipped(gc))
                c = bb.normalize(op.add(op.multiply(f_t, c), op.multiply(i_t, c_t)))
                if pd is not None:
                    go = op.add(go, op.multiply(op.strided_slice(pd, [0], [hidden], [2 * hidden]), c))
                o_t = f[0](clipped(go))
                h = bb.normalize(op.multiply(o_t, f[2](c)))
            elif kind == "GRU":
                zg, rg = gate(xt, 0), gate(xt, 1)
                if not zero:
                    rz = bb.normalize(op.matmul(h, op.strided_slice(rd, [1], [0], [2 * hidden])))
                    zg = op.add(zg, op.strided_slice(rz, [1], [0], [hidden]))
                    rg = op.add(rg, op.strided_slice(rz, [1], [hidden], [2 * hidden]))
                z = bb.normalize(f[0](clipped(zg)))
                rr = bb.normalize(f[0](clipped(rg)))
                rh = op.strided_slice(rd, [1], [2 * hidden], [3 * hidden])
                if int(attr.get("linear_before_reset", 0)):
                    hr = None if zero else op.matmul(h, rh)
                    if rb is not None:
                        rbh = op.strided_slice(rb, [0], [2 * hidden], [3 * hidden])
                        hr = rbh if hr is None else op.add(hr, rbh)
                    cand = gate(xt, 2) if hr is None else op.add(gate(xt, 2), op.multiply(rr, hr))
                else:
                    cand = gate(xt, 2) if zero else op.add(gate(xt, 2), op.matmul(op.multiply(rr, h), rh))
                n = f[1](clipped(cand))
                one = relax.const(np.ones((), dtype=dtype), dtype)
                h = bb.normalize(op.add(op.multiply(op.subtract(one, z), n), op.multiply(z, h)))
            else:
                h = bb.normalize(f[0](clipped(plus_h(xt, rd))))
            out_t[t] = h
            if lens is not None:  # past its length a sequence keeps its state, and its Y is 0
                valid = bb.normalize(op.less(relax.const(t, "int64"), lens))
                out_t[t] = bb.normalize(op.where(valid, h, relax.const(np.zeros((), dtype), dtype)))
                h = bb.normalize(op.where(valid, h, h_prev))
                c = bb.normalize(op.where(valid, c, c_prev)) if c is not None else None
            zero = False
        if lens is not None:  # a sequence of length 0 ends in zero states (ONNX Runtime)
            some = bb.normalize(op.greater(lens, relax.const(0, "int64")))
            zeros = relax.const(np.zeros((), dtype), dtype)
            h = bb.normalize(op.where(some, h, zeros))
            c = bb.normalize(op.where(some, c, zeros)) if c is not None else None
        ys.append(out_t)
        hs.append(h)
        cs.append(c)

    # Y: [T, num_dir, B, H]; Y_h, Y_c: [num_dir, B, H] (layout 1: batch first)
    y = bb.normalize(op.stack([op.stack([ys[d][t] for d in range(num_dir)], axis=0) for t in range(steps)], axis=0))
    y_h = bb.normalize(op.stack(hs, axis=0))
    if layout == 1:
        y = bb.normalize(op.permute_dims(y, [2, 0, 1, 3]))
        y_h = bb.normalize(op.permute_dims(y_h, [1, 0, 2]))
    outs = [y, y_h]
    if kind == "LSTM":
        y_c = bb.normalize(op.stack(cs, axis=0))
        if layout == 1:
            y_c = bb.normalize(op.permute_dims(y_c, [1, 0, 2]))
        outs.append(y_c)
    return relax.Tuple(outs)


def _fused_lstm(bb, kind, attr, x, w, r, b, h0, c0, peep, layout, direction, num_dir, steps, batch, hidden, dtype,
                clip):
    """The LSTM as the target family's fused recurrence kernel (backends/cpu/recurrence.py), or
    None where the family has none or the node is not the case it covers (default activations,
    float32, a static batch): the caller unrolls it then."""
    from tvm import relax

    kernels = converter_base.KERNELS[0]
    names = [n.lower() for n in _activation_names(attr)]
    if (kernels is None or kind != "LSTM" or dtype != "float32" or not isinstance(batch, int)
            or (names and names != ["sigmoid", "tanh", "tanh"] * (len(names) // 3))
            or attr.get("activation_alpha") or attr.get("activation_beta")):
        return None
    op = relax.op
    gates = 4
    reverse = tuple(direction == "reverse" or d == 1 for d in range(num_dir))
    xw = bb.normalize(op.matmul(op.expand_dims(x, 0), op.expand_dims(op.permute_dims(w, [0, 2, 1]), 1)))  # [D, T, B, 4H]
    if b is not None:  # Wb + Rb, per direction
        bias = op.add(op.strided_slice(b, [1], [0], [gates * hidden]),
                      op.strided_slice(b, [1], [gates * hidden], [2 * gates * hidden]))
        xw = bb.normalize(op.add(xw, op.reshape(bias, (num_dir, 1, 1, gates * hidden))))
    rt = bb.normalize(op.permute_dims(r, [0, 2, 1]))  # [D, H, 4H]

    def state(s):  # [D, B, H]
        if s is None:
            return relax.const(np.zeros((num_dir, batch, hidden), "float32"), "float32")
        return bb.normalize(op.permute_dims(s, [1, 0, 2])) if layout == 1 else s

    p = peep if peep is not None else relax.const(np.zeros((num_dir, 3 * hidden), "float32"), "float32")
    func = kernels.lstm_kernel(num_dir, steps, batch, hidden, reverse, None if clip is None else float(clip),
                               peep is not None)
    gv = bb.add_func(func, "lstm_recurrence")
    t = relax.TensorType
    out = bb.emit(relax.call_tir(gv, relax.Tuple([xw, rt, state(h0), state(c0), p]),
                                 out_ty=[t((num_dir, steps, batch, hidden), "float32"),
                                            t((num_dir, batch, hidden), "float32"),
                                            t((num_dir, batch, hidden), "float32")]))
    y = bb.normalize(op.permute_dims(relax.TupleGetItem(out, 0), [2, 1, 0, 3] if layout == 1 else [1, 0, 2, 3]))
    states = [bb.normalize(relax.TupleGetItem(out, i)) for i in (1, 2)]
    if layout == 1:
        states = [bb.normalize(op.permute_dims(s, [1, 0, 2])) for s in states]
    return relax.Tuple([y, *states])


def install():
    """Add LSTM, GRU and RNN to TVM's converter map; returns the undo."""

    def make(kind):
        def impl(cls, bb, inputs, attr, params):
            return convert(kind, bb, inputs, attr)

        return {"_impl_v7": impl, "_impl_v14": impl}

    return add_ops({kind: make(kind) for kind in GATES})
