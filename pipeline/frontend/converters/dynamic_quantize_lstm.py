"""com.microsoft.DynamicQuantizeLSTM (ONNX Runtime's quantize_dynamic writes it for every LSTM).

Its W and R are int8/uint8 and transposed against ONNX's LSTM: ``[num_directions, input_size,
4*hidden]`` and ``[num_directions, hidden, 4*hidden]``, with a scale and zero point per direction
(``[num_directions]``) or per gate column (``[num_directions, 4*hidden]``). Here they are
dequantized once, at compile time, ``(w - zero_point) * scale`` in float32, transposed to ONNX's
layout, and the node converts as an LSTM (rnn.py: the fused kernel where the target has it,
every LSTM form otherwise). So deploy computes it in float32 with the quantized weights; ONNX
Runtime also quantizes X and each step's H to uint8 at run time (per tensor) and multiplies in
integers, so its outputs differ from deploy's by that activation rounding (3e-4 on outputs of
0.2 in tests/frontend/converters/test_rnn.py), and, on AVX2 CPUs without VNNI, by its uint8 x int8 kernel's 16-bit
saturation with full-range int8 weights (quantize_dynamic without reduce_range: 0.015 there).
"""

from __future__ import annotations

import numpy as np

from ...errors import DeployError
from . import rnn
from .converter_base import add_ops, constant, note

OP = "DynamicQuantizeLSTM"
DOMAIN = "com.microsoft"
NOTE = ("float32: W and R dequantized at compile time (ONNX Runtime also quantizes X and H to uint8 at run "
        "time, so outputs differ by that rounding)")


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, what: str) -> np.ndarray:
    """``[D, K, 4H]`` int8/uint8 weights with per-direction or per-column scale and zero point ->
    ``[D, 4H, K]`` float32 (ONNX LSTM's layout)."""
    if q.dtype not in (np.int8, np.uint8) or q.ndim != 3:
        raise DeployError(f"{OP}: {what} must be a 3-D int8/uint8 tensor [num_directions, K, 4*hidden], "
                          f"got {q.dtype} {list(q.shape)}")
    d, _, cols = q.shape

    def per(v, name):
        v = np.asarray(v)
        if v.size in (1, d) and v.ndim <= 1:  # per direction (a scalar for one direction)
            return np.broadcast_to(v.reshape(-1, 1, 1), (d, 1, 1))
        if v.shape == (d, cols):  # per gate column
            return v.reshape(d, 1, cols)
        raise DeployError(f"{OP}: {what}'s {name} has shape {list(v.shape)}; expected [{d}] (per direction) "
                          f"or [{d}, {cols}] (per column)")

    s = per(scale, "scale").astype(np.float32)
    z = per(zero_point, "zero point").astype(np.int32)
    w = (q.astype(np.int32) - z).astype(np.float32) * s
    return np.ascontiguousarray(w.transpose(0, 2, 1))


def _impl(cls, bb, inputs, attr, params):
    from tvm import relax

    def arg(i):
        return inputs[i] if len(inputs) > i else None

    if any(arg(i) is None for i in (0, 1, 2, 8, 9, 10, 11)):
        raise DeployError(f"{OP} needs X, W, R, W_scale, W_zero_point, R_scale and R_zero_point")
    w = dequantize(constant(arg(1), params, f"{OP}'s W"), constant(arg(8), params, f"{OP}'s W_scale"),
                   constant(arg(9), params, f"{OP}'s W_zero_point"), "W")
    r = dequantize(constant(arg(2), params, f"{OP}'s R"), constant(arg(10), params, f"{OP}'s R_scale"),
                   constant(arg(11), params, f"{OP}'s R_zero_point"), "R")
    hidden = int(attr.get("hidden_size") or r.shape[2])
    if r.shape[1] != 4 * hidden or r.shape[2] != hidden or w.shape[1] != 4 * hidden or w.shape[0] != r.shape[0]:
        raise DeployError(f"{OP}: W {list(w.shape[::-1])} and R {list(r.shape[::-1])} (transposed) do not fit "
                          f"hidden_size {hidden}")
    note(f"{DOMAIN}.{OP}", NOTE, reference="int8")
    lstm_inputs = [arg(0), relax.const(w, "float32"), relax.const(r, "float32")] + [arg(i) for i in range(3, 8)]
    return rnn.convert("LSTM", bb, lstm_inputs, attr)


def install():
    return add_ops({OP: {"_impl_v1": _impl}})
