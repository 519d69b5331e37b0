"""Forms of common ops TVM's converters reject though ONNX allows them.

The forms, and how each is computed:

- Pad with its constant_value fed at run time (TVM reads only a constant): padded with 0, then
  the value put where the padding is (``pad(x) + v * (1 - pad(ones))``);
- Pow with an exponent of another type than the base: a float base takes the exponent in its
  type; an int base to a float power is computed in the float type and cast back (ONNX's result
  has the base's type);
- ConvTranspose with ``output_shape`` (TVM's converter ignores it): the pads it implies;
- SpaceToDepth in mode CRD (TVM's knows DCR only);
- EyeLike with a ``dtype`` other than the input's (TVM's converter refuses it, and its
  legalization ignores the type): a constant of the static shape, in that type.
"""

from __future__ import annotations

import numpy as np

from .converter_base import replace, runtime_input, text


def _pad(original):
    def impl(cls, bb, inputs, attr, params):
        from tvm import relax

        mode = text(attr, "mode", "constant")
        if len(inputs) < 3 or not runtime_input(inputs[2], params) or mode != "constant":
            return original(cls, bb, inputs, attr, params)
        x, value = inputs[0], inputs[2]
        rest = list(inputs)
        rest[2] = None
        padded = bb.normalize(original(cls, bb, rest, attr, params))
        ones = list(rest)
        ones[0] = bb.normalize(relax.op.ones_like(x))
        mask = bb.normalize(original(cls, bb, ones, attr, params))  # 1 inside, 0 in the padding
        dtype = str(x.ty.dtype)
        v = bb.normalize(relax.op.astype(relax.op.reshape(value, ()), dtype))
        border = relax.op.multiply(v, relax.op.subtract(relax.const(1, dtype), mask))
        return relax.op.add(padded, border)

    return impl


def _pow(original):
    def impl(cls, bb, inputs, attr, params):
        from tvm import relax

        base, exp = inputs[0], inputs[1]
        bt, et = str(getattr(base.ty, "dtype", "")), str(getattr(exp.ty, "dtype", ""))
        if not bt or not et or bt == et:
            return original(cls, bb, inputs, attr, params)
        if bt.startswith(("float", "bfloat")):
            return original(cls, bb, [base, bb.normalize(relax.op.astype(exp, bt))], attr, params)
        # an int base to a float power: computed in the exponent's type, the result in the base's
        wide = bb.normalize(relax.op.astype(base, et))
        return relax.op.astype(bb.normalize(original(cls, bb, [wide, exp], attr, params)), bt)

    return impl


def _eye_like(original):
    def impl(cls, bb, inputs, attr, params):
        from onnx import helper
        from tvm import relax

        x = inputs[0]
        to = str(np.dtype(helper.tensor_dtype_to_np_dtype(int(attr["dtype"])))) if "dtype" in attr else str(x.ty.dtype)
        shape = getattr(x.ty, "shape", None)
        try:
            n, m = (int(d) for d in shape)
        except (TypeError, ValueError):
            return original(cls, bb, inputs, attr, params)
        # a constant (TVM's eye_like legalizes in the input's type, whatever dtype says)
        return relax.const(np.eye(n, m, int(attr.get("k", 0)), dtype=to), to)

    return impl


def install():
    from tvm.relax.frontend.onnx import onnx_frontend as of

    undo = []
    for v in ("_impl_v11", "_impl_v18", "_impl_v19"):
        if v in of.Pad.__dict__:
            undo.append(replace(of.Pad, v, _pad(of.Pad.__dict__[v].__func__))[1])
    undo.append(replace(of.Pow, "_impl_v7", _pow(of.Pow.__dict__["_impl_v7"].__func__))[1])
    undo.append(replace(of.EyeLike, "_impl_v9", _eye_like(of.EyeLike.__dict__["_impl_v9"].__func__))[1])
    undo.append(replace(of.ConvTranspose, "_impl_v1", _conv_transpose(of.ConvTranspose.__dict__["_impl_v1"].__func__))[1])
    undo.append(replace(of.SpaceToDepth, "_impl_v1", _space_to_depth(of.SpaceToDepth.__dict__["_impl_v1"].__func__))[1])

    def undo_all():
        for u in reversed(undo):
            u()

    return undo_all


def _conv_transpose(original):
    """ConvTranspose with ``output_shape``: TVM's converter ignores it; the pads (and, for an
    output longer than the natural one, output_padding) it implies, as ONNX defines them."""

    def impl(cls, bb, inputs, attr, params):
        from ...errors import DeployError

        if "output_shape" not in attr:
            return original(cls, bb, inputs, attr, params)
        x, w = inputs[0], inputs[1]
        try:
            in_shape = [int(d) for d in x.ty.shape][2:]
            kernel = [int(d) for d in w.ty.shape][2:]
        except (TypeError, ValueError):
            raise DeployError("ConvTranspose with output_shape needs static input and weight shapes",
                              hint="bind the input shapes (--input-shape), or give pads instead of output_shape")
        n = len(in_shape)
        out_shape = list(attr["output_shape"])[-n:]
        strides = list(attr.get("strides", [1] * n))
        dil = list(attr.get("dilations", [1] * n))
        out_pad = list(attr.get("output_padding", [0] * n))
        kernel = list(attr.get("kernel_shape", kernel))
        auto_pad = text(attr, "auto_pad", "NOTSET")
        begin, end = [], []
        for i in range(n):
            total = strides[i] * (in_shape[i] - 1) + out_pad[i] + (kernel[i] - 1) * dil[i] + 1 - out_shape[i]
            b = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            e = total - b
            if e < 0:  # longer than the natural output: the extra at the end
                out_pad[i] -= e
                e = 0
            if b < 0 or out_pad[i] >= max(strides[i], dil[i]):
                raise DeployError(f"ConvTranspose output_shape {out_shape} cannot be reached from input {in_shape} "
                                  f"with strides {strides}", hint="check the model's output_shape, or give pads")
            begin.append(b)
            end.append(e)
        new = {k: v for k, v in attr.items() if k not in ("output_shape", "auto_pad")}
        new.update(pads=begin + end, output_padding=out_pad)
        return original(cls, bb, inputs, new, params)

    return impl


def _space_to_depth(original):
    """SpaceToDepth mode CRD (opset 28; TVM's converter knows DCR only)."""

    def impl(cls, bb, inputs, attr, params):
        from tvm import relax

        mode = text(attr, "mode", "DCR")
        if mode != "CRD":
            return original(cls, bb, inputs, attr, params)
        bs = int(attr["blocksize"])
        b, c, h, w = inputs[0].ty.shape
        x = relax.op.reshape(inputs[0], (b, c, h // bs, bs, w // bs, bs))
        x = relax.op.permute_dims(x, [0, 1, 3, 5, 2, 4])
        return relax.op.reshape(x, (b, c * bs * bs, h // bs, w // bs))

    return impl
