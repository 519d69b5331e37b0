"""TFLite models: load, describe, list the ops TVM lacks, import into Relax; LiteRT as their reference.

Loads a .tflite flatbuffer, describes it, lists the ops TVM's TFLite frontend lacks, and imports it
into Relax (``tvm.relax.frontend.tflite``). LiteRT (``ai-edge-litert``) is the
reference a TFLite artifact is checked against, as ONNX Runtime is for an ONNX model
(``LiteRTSession``: the few calls of an ONNX Runtime session ``check.judge`` and ``bench`` make).

``is_tflite`` is the one place the file type is decided; ``prepare``, the manifest, the reference,
``deploy inspect`` and the bench peer ask it.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import log
from .. import errors
from ..errors import DeployError
from ..files import sha256_file
from .specs import TensorSpec

FORMAT = "tflite"
MAGIC = b"TFL3"  # the flatbuffer's file identifier, bytes 4..8


def is_tflite(path) -> bool:
    """Whether ``path`` names a TFLite flatbuffer (by its identifier, else its suffix)."""
    if not isinstance(path, (str, Path)):
        return False
    p = Path(path)
    if p.is_file():
        with open(p, "rb") as f:
            head = f.read(8)
        if head[4:8] == MAGIC:
            return True
    return p.suffix.lower() == ".tflite"


def source_format(path) -> str:
    """"tflite" or "onnx": what the manifest records as the model's format."""
    return FORMAT if is_tflite(path) else "onnx"


@dataclass
class LoadedTFLite:
    path: Path
    model: object     # tflite.Model.Model
    sha256: str
    format: str = FORMAT
    imported_outputs: list | None = None  # the outputs' specs as the import bound them (import_tflite)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def subgraph(self):
        return self.model.Subgraphs(0)


def _tflite_package():
    try:
        import tflite  # noqa: F401 - the flatbuffer schema TVM's frontend reads
    except ImportError:
        raise DeployError("reading a .tflite model needs the 'tflite' package",
                          hint="pip install tflite (scripts/setup.sh installs it)")
    return tflite


def load_tflite(path: str | Path) -> LoadedTFLite:
    path = Path(path)
    if not path.exists():
        raise DeployError(f"model file not found: {path}", hint="check the path")
    if path.is_dir():
        raise DeployError(f"{path} is a directory, not a .tflite file", hint="pass the .tflite file itself")
    data = path.read_bytes()
    if data[4:8] != MAGIC:
        raise DeployError(f"{path} is not a TFLite flatbuffer (no '{MAGIC.decode()}' identifier)",
                          hint="the file may be truncated; re-convert it with TensorFlow's TFLiteConverter")
    tflite = _tflite_package()
    try:
        model = tflite.Model.GetRootAsModel(data, 0)
        n = model.SubgraphsLength()
        if n < 1:
            raise ValueError("no subgraph")
        model.Subgraphs(0).OperatorsLength()
    except Exception as e:  # noqa: BLE001 - a corrupt flatbuffer raises anything
        raise DeployError(f"{path} is not a readable TFLite model ({type(e).__name__}: {str(e)[:200]})",
                          hint="the file may be truncated; re-convert it")
    return LoadedTFLite(path, model, sha256_file(path))


# TFLite's TensorType enum -> numpy dtype names
_DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16",
           9: "int8", 10: "float64", 12: "uint64", 15: "uint32", 16: "uint16"}


def tensor_name(subgraph, index: int) -> str:
    return subgraph.Tensors(index).Name().decode("utf-8")


def tensor_spec(subgraph, index: int, signature: bool = True) -> TensorSpec:
    t = subgraph.Tensors(index)
    shape = [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []
    sig = [int(d) for d in t.ShapeSignatureAsNumpy()] if signature and t.ShapeSignatureLength() else []
    # a -1 in the shape signature is a dynamic axis (the batch of a Keras model, mostly)
    shape = [("?" if s == -1 else d) for d, s in zip(shape, sig)] if len(sig) == len(shape) else shape
    shape = [d if d != "?" else None for d in shape]
    return TensorSpec(tensor_name(subgraph, index), _DTYPES.get(t.Type(), f"tflite type {t.Type()}"), shape)


def inputs(loaded: LoadedTFLite) -> list[TensorSpec]:
    g = loaded.subgraph
    return [tensor_spec(g, int(i)) for i in g.InputsAsNumpy()]


def outputs(loaded: LoadedTFLite) -> list[TensorSpec]:
    g = loaded.subgraph
    return [tensor_spec(g, int(i)) for i in g.OutputsAsNumpy()]


def bind_inputs(loaded: LoadedTFLite, input_shapes: dict) -> list[TensorSpec]:
    """The inputs with ``--input-shape`` sizes bound; a dynamic axis left unbound is an error
    naming it (TFLite's batch axis: 1, as the converter wrote its shape, unless given)."""
    given = dict(input_shapes or {})
    names = [s.name for s in inputs(loaded)]
    for k in given:
        if k not in names:
            raise DeployError(f"--input-shape names '{k}', which is not an input of the model",
                              hint="inputs: " + ", ".join(names))
    out = []
    g = loaded.subgraph
    for i in g.InputsAsNumpy():
        s = tensor_spec(g, int(i), signature=False)  # the converter's sizes (1 for a dynamic batch)
        if s.name in given:
            shape = [int(d) for d in given[s.name]]
            if len(shape) != len(s.shape):
                raise DeployError(f"--input-shape {s.name}: {len(shape)} dims, the model's input has {len(s.shape)}",
                                  hint=f"give {len(s.shape)} sizes, as in {'x'.join(str(d) for d in s.shape)}")
            s = TensorSpec(s.name, s.dtype, shape)
        out.append(s)
    return out


def op_name(model, op) -> str:
    """The builtin name of a TFLite operator (CONV_2D, ...), or CUSTOM:<code> for a custom op."""
    from tflite.BuiltinOperator import BuiltinOperator

    code = model.OperatorCodes(op.OpcodeIndex())
    try:
        opc = max(code.DeprecatedBuiltinCode(), code.BuiltinCode())
    except AttributeError:
        opc = code.BuiltinCode()
    names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    name = names.get(opc, f"BUILTIN_{opc}")
    if name == "CUSTOM":
        custom = code.CustomCode()
        name = f"CUSTOM:{custom.decode() if custom else '?'}"
    return name


def _op_label(subgraph, op, i: int) -> str:
    """An operator's name for messages: its first output tensor's name, with its index."""
    outs = op.OutputsAsNumpy() if op.OutputsLength() else []
    return f"#{i} {tensor_name(subgraph, int(outs[0]))}" if len(outs) else f"#{i}"


def op_counts(loaded: LoadedTFLite) -> dict[str, int]:
    g = loaded.subgraph
    return dict(Counter(op_name(loaded.model, g.Operators(i)) for i in range(g.OperatorsLength())).most_common())


def _converter(loaded: LoadedTFLite, subgraph=None):
    from tvm.relax.frontend.tflite import tflite_frontend

    return tflite_frontend.OperatorConverter(loaded.model, subgraph if subgraph is not None else loaded.subgraph,
                                             tflite_frontend.ExprTable(), None)


# ops whose converter reads some inputs as constants (get_tensor_value): input index -> what it is.
# Fed at run time (a SLICE inside the WHILE loop Keras 3 converts an LSTM to), the converter fails
# with a TypeError; listed here, they are refused with the others before the import.
_CONSTANT_INPUTS = {"SLICE": "begin and size"}


def unsupported_ops(loaded: LoadedTFLite) -> dict[str, list[str]]:
    """Every op TVM's TFLite frontend cannot convert, mapped to its operators: ops with no
    converter, quantized ops it converts only in float, and dynamic-range quantized ones (float
    activations with int8 weights), as its own check_unsupported_ops decides, but all listed, in
    every subgraph (a WHILE's body and condition too); and ops whose constant inputs are computed
    at run time."""
    found: dict[str, list[str]] = {}
    for si in range(loaded.model.SubgraphsLength()):
        g = loaded.model.Subgraphs(si)
        conv = _converter(loaded, g)
        for i in range(g.OperatorsLength()):
            op = g.Operators(i)
            name = op_name(loaded.model, op)
            label = _op_label(g, op, i) + (f" in subgraph {si}" if si else "")
            if name not in conv.convert_map:
                found.setdefault(name, []).append(label)
                continue
            ins, outs = conv.get_input_tensors(op), conv.get_output_tensors(op)
            if name in _CONSTANT_INPUTS and any(t.buffer is None or t.buffer.DataLength() == 0 for t in ins[1:]):
                found.setdefault(f"{name} with its {_CONSTANT_INPUTS[name]} computed at run time (TVM's TFLite "
                                 "frontend takes them as constants only)", []).append(label)
                continue
            q_in = sum(t.qnn_params is not None for t in ins[:1])
            q_w = sum(t.qnn_params is not None for t in ins[1:])
            q_out = sum(t.qnn_params is not None for t in outs)
            if q_in == 0 and q_out == 0 and q_w > 0:
                found.setdefault(f"{name} with dynamic-range quantization (int8 weights, float activations)",
                                 []).append(label)
            elif q_in + q_w + q_out > 0 and name not in conv._SUPPORTED_QUANTIZED_OPS:
                found.setdefault(f"{name} quantized (TVM's TFLite frontend takes it in float only)", []).append(label)
    return found


def check_supported(loaded: LoadedTFLite) -> None:
    missing = unsupported_ops(loaded)
    if missing:
        raise errors.unsupported_ops(
            missing, "this TFLite model",
            hint="convert the model without these ops (TFLITE_BUILTINS only, no SELECT_TF_OPS or custom ops; "
                 "full-integer or float quantization, not dynamic-range; Keras recurrent layers with unroll=True), "
                 "or export it to ONNX instead")


def import_tflite(loaded: LoadedTFLite, input_shapes: dict):
    """The TFLite model as a Relax IRModule with every input shape bound."""
    from tvm.relax.frontend.tflite import from_tflite

    check_supported(loaded)
    specs = bind_inputs(loaded, input_shapes)
    for s in specs:
        if any(not isinstance(d, int) or d < 0 for d in s.shape):
            raise DeployError(f"input '{s.name}' has a dynamic shape {s.shape}",
                              hint=f"pass --input-shape {s.name}=DIMxDIM...")
    printed = io.StringIO()
    try:
        with log.tvm_quiet(), contextlib.redirect_stdout(printed if not log.verbose() else sys.stdout):
            mod = from_tflite(loaded.model, shape_dict={s.name: tuple(s.shape) for s in specs},
                              dtype_dict={s.name: s.dtype for s in specs})
    except DeployError:
        raise
    except Exception as e:  # noqa: BLE001 - no raw TVM error reaches the user
        msg = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        raise DeployError(f"TVM's TFLite importer failed: {type(e).__name__}: {msg[-1] if msg else ''}"[:600],
                          hint="run with -v for the full trace; convert the model with TFLITE_BUILTINS ops only, "
                               "or export it to ONNX instead") from (e if log.verbose() else None)
    from tvm import relax

    # the frontend keeps weights as the function's "params" attribute: bind them as constants
    main = mod["main"]
    params = main.attrs["params"] if main.attrs is not None and "params" in main.attrs else None
    if params is not None and len(params):
        n = int(main.attrs["num_input"])
        mod = relax.transform.BindParams("main", {p: v for p, v in zip(list(main.params)[n:], params)})(mod)
        main = mod["main"]
    mod["main"] = main.without_attr("params")
    loaded.imported_outputs = _output_specs(loaded, mod["main"])
    return mod


def _output_specs(loaded: LoadedTFLite, main) -> list[TensorSpec]:
    """The outputs' specs with the shapes the import gives them (a bound batch of 2 included)."""
    from tvm import relax

    ret = main.ret_ty
    fields = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    out = []
    for spec, sinfo in zip(outputs(loaded), fields):
        shape = spec.shape
        if isinstance(sinfo, relax.TensorType) and sinfo.shape is not None:
            try:
                shape = [int(d) for d in sinfo.shape.values]
            except (TypeError, AttributeError):
                pass
        out.append(TensorSpec(spec.name, spec.dtype, shape))
    return out


def params(loaded: LoadedTFLite) -> tuple[int, int]:
    """(elements, bytes) of the model's constant tensors (those with data in a buffer)."""
    g, count, size = loaded.subgraph, 0, 0
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        buf = loaded.model.Buffers(t.Buffer()) if t.Buffer() < loaded.model.BuffersLength() else None
        n = buf.DataLength() if buf is not None else 0
        if n:
            shape = t.ShapeAsNumpy() if t.ShapeLength() else []
            count += int(np.prod(shape)) if len(shape) else 1
            size += n
    return count, size


def model_info(loaded: LoadedTFLite) -> dict:
    """The fields of `deploy inspect`'s report (frontend.inspect.ModelInfo) of a TFLite model."""
    count, size = params(loaded)
    desc = loaded.model.Description()
    return dict(opset=None, producer=(desc.decode() if desc else ""), inputs=inputs(loaded), outputs=outputs(loaded),
                op_counts=op_counts(loaded), param_count=count, param_bytes=size,
                unsupported=unsupported_ops(loaded), gflop=None, format=f"tflite (schema {int(loaded.model.Version())})")


def refuse(what: str, hint: str) -> None:
    raise DeployError(f"{what} is not available for a TFLite model", hint=hint)


def quantized(loaded: LoadedTFLite) -> bool:
    """Whether the model computes with int8/uint8 quantized tensors (its check takes int8's tolerance)."""
    g = loaded.subgraph
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        q = t.Quantization()
        if q is not None and q.ScaleLength() > 0 and t.Type() in (3, 9, 7):
            return True
    return False


def manifest_model(loaded: LoadedTFLite, input_shapes: dict) -> dict:
    """The manifest's ``model`` section for a TFLite model."""
    return {
        "name": loaded.name,
        "file": loaded.path.name,
        "format": FORMAT,
        "sha256": loaded.sha256,
        "tflite_version": int(loaded.model.Version()),
        "inputs": [s.to_dict() for s in bind_inputs(loaded, input_shapes)],
        "outputs": [s.to_dict() for s in (loaded.imported_outputs or outputs(loaded))],
    }


# --- LiteRT, the reference -------------------------------------------------------------------


@dataclass
class _Named:
    name: str


class LiteRTSession:
    """A LiteRT interpreter with the calls of an ONNX Runtime session that the check and the bench
    make: ``get_inputs()``, ``get_outputs()`` (objects with ``.name``), ``run(names, feed)``."""

    def __init__(self, path, threads: int = 0):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise DeployError("checking a TFLite model needs LiteRT (the 'ai-edge-litert' package)",
                              hint="pip install ai-edge-litert (scripts/setup.sh installs it with the test extra)")
        try:
            self.interp = Interpreter(model_path=str(path), num_threads=threads or None)
            self.interp.allocate_tensors()
        except Exception as e:  # noqa: BLE001
            raise DeployError(f"LiteRT cannot load {path}: {str(e)[:300]}",
                              hint="pass the .tflite file the artifact was compiled from")
        self._in = self.interp.get_input_details()
        self._out = self.interp.get_output_details()

    def get_inputs(self):
        return [_Named(d["name"]) for d in self._in]

    def get_outputs(self):
        return [_Named(d["name"]) for d in self._out]

    def run(self, names, feed: dict):
        for d in self._in:
            x = np.asarray(feed[d["name"]])
            if list(x.shape) != list(d["shape"]):
                self.interp.resize_tensor_input(d["index"], list(x.shape))
                self.interp.allocate_tensors()
            self.interp.set_tensor(d["index"], x.astype(d["dtype"], copy=False))
        self.interp.invoke()
        got = {d["name"]: self.interp.get_tensor(d["index"]).copy() for d in self._out}
        return [got[n] for n in (names or list(got))]


def litert_outputs(path, feed: dict, threads: int = 0) -> dict[str, np.ndarray]:
    sess = LiteRTSession(path, threads)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feed)))
