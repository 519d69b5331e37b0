"""Precision per layer by measured cost: int8 stays only where it is faster than float on the target.

The accuracy gate chooses layers by measured error; this chooses them by measured time, on a
target that runs here. Compile builds the model twice, float32 and int8 (every layer the gate
allows), times every kernel of both (``profile.py``: the Relax VM's per-call timing, each build
in a process of its own) and charges each kernel to the quantizable layers (ONNX Conv and MatMul
nodes) it computes, through the layer report: in the int8 build that includes the kernels that
quantize a layer's input, pad it or move it to uint8, which are labelled with that layer. A
layer whose int8 kernels take longer than its float ones is kept in float, with both times as
the reason; the int8 model is rebuilt without it, and the two builds are then timed end to end
(``bench.compare``, each in its own process, in alternating turns): if int8 is not faster, the
float32 build is the artifact, and the manifest says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LayerTime:
    layer: str
    int8_ms: float | None
    float_ms: float | None

    @property
    def keep_int8(self) -> bool:
        # a layer measured in one build only (its kernels were not labelled) keeps int8: the
        # end-to-end comparison still guards the whole model
        return self.int8_ms is None or self.float_ms is None or self.int8_ms <= self.float_ms

    def why(self) -> str:
        return f"int8 {self.int8_ms:.3f} ms vs float {self.float_ms:.3f} ms"


@dataclass
class Selection:
    layers: list[LayerTime] = field(default_factory=list)

    def kept_float(self) -> dict[str, str]:
        """Layer -> why, for the layers int8 made slower."""
        return {t.layer: "slower in int8: " + t.why() for t in self.layers if not t.keep_int8}

    def to_dict(self) -> dict:
        return {t.layer: {"int8_ms": _r(t.int8_ms), "float_ms": _r(t.float_ms)} for t in self.layers}


def _r(x):
    return None if x is None else round(x, 4)


def _aliases(layers: list[str], serves: dict[str, list[str]]) -> dict[str, list[str]]:
    """Node name in a layer report -> the quantized layers it stands for: the layer itself; a
    Gemm's bias Add (a Gemm is quantized as MatMul ``name`` + Add ``name_bias``,
    qdq.gemm_to_matmul); the QuantizeLinear/DequantizeLinear nodes written for it (``serves``)."""
    out: dict[str, list[str]] = {}
    for name in layers:
        out[name] = [name]
        out.setdefault(name + "_bias", [name])
    for node, users in serves.items():
        out.setdefault(node, [u for u in users if u in layers])
    return out


def charge(kernels: list[dict], layers: list[str], serves: dict[str, list[str]] | None = None) -> dict[str, float]:
    """Each layer's ms: every kernel's time split evenly over the layers among its nodes; kernels
    of no layer (pools, softmax, norms) are left out: both builds run them alike."""
    alias = _aliases(layers, serves or {})
    out: dict[str, float] = {}
    for k in kernels:
        mine: list[str] = []
        for _, name in k.get("nodes", []):
            for layer in alias.get(name, []):
                if layer not in mine:
                    mine.append(layer)
        for layer in mine:
            out[layer] = out.get(layer, 0.0) + k["ms"] / len(mine)
    return out


def select(float_kernels: list[dict], int8_kernels: list[dict], layers: list[str],
           serves: dict[str, list[str]] | None = None) -> Selection:
    """Compare the per-layer times of the two builds' profiles (``profile.profile``'s kernels);
    ``serves``: the int8 model's QuantizeLinear/DequantizeLinear nodes -> the layers they serve."""
    f, q = charge(float_kernels, layers), charge(int8_kernels, layers, serves)
    return Selection([LayerTime(name, q.get(name), f.get(name)) for name in layers])
