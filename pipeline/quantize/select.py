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

import dataclasses
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import log
from ..run.bench import compare
from ..files import write_json
from ..manifest import MANIFEST
from ..package import atomic_dir
from ..run.profile import profile
from ..run.runtime import Artifact
from .options import QuantOptions


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


def by_measured_speed(args, out: Path, build) -> None:
    """int8 only where it pays: build int8 and float32, keep the layers int8 makes slower in float,
    rebuild, and write whichever build is faster end to end into ``out``. ``args``: the compile's
    (compile.CompileArgs); ``build(args)``: a candidate built into ``args.output``."""
    t0 = time.perf_counter()
    plain = dict(force=True, report=False)
    hook = args.quant.hook()
    with atomic_dir(out, args.force) as tmp:
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.candidates-", dir=tmp.parent))
        try:
            def candidate(name: str, **changes) -> Artifact:
                return build(dataclasses.replace(args, output=work / name, **plain, **changes))

            q = candidate("int8")
            layers_q = list(hook.result.info["quantized_layers"])
            # the layer report names kernels after the user's nodes; clean-up may have renamed them
            user = {name: hook.user_name(name) for name in layers_q}
            serves = {k: [user.get(u, u) for u in v] for k, v in hook.result.serves.items()}
            log.info("[bold]int8 where it pays[/bold]: the float32 build, to time both layer by layer")
            f = candidate("fp32", precision="fp32", quant=QuantOptions(), tune_budget=None, dump_ir=None)
            kern = {n: profile(a, None, runs=10, warmup=3)["deploy"]["kernels"] for n, a in (("fp32", f), ("int8", q))}
            sel = select(kern["fp32"], kern["int8"], [user[n] for n in layers_q], serves)
            kept = sel.kept_float()  # the user's names
            slow = dict(zip(hook.user_names(list(kept)), kept.values()))  # the cleaned-up model's
            for name, why in kept.items():
                log.info(f"  {name}: kept in float32 ({why})")
            candidates = {"float32": f.path, "int8": q.path}
            if slow and len(slow) < len(layers_q):
                log.info(f"  rebuilding int8 with {len(slow)} of {len(layers_q)} layer(s) in float32")
                hook.keep_float(slow)
                chosen = candidate("int8-chosen", tune_budget=None)
                # per-kernel times are noisy: the all-int8 build stays a candidate, end to end decides
                candidates = {"float32": f.path, "int8": chosen.path, "int8 (all layers)": q.path}
            ms = compare(candidates)
            if "int8 (all layers)" in ms:
                if ms["int8 (all layers)"] < ms["int8"]:
                    log.info(f"  all layers in int8 are faster end to end ({ms['int8 (all layers)']:.3f} vs "
                             f"{ms['int8']:.3f} ms): the per-layer choice is dropped")
                    kept, slow = {}, {}
                    ms["int8 (layers kept float)"] = ms.pop("int8")
                    ms["int8"] = ms.pop("int8 (all layers)")
                else:
                    q = chosen
            pays = bool(layers_q) and len(slow) < len(layers_q) and ms["int8"] < ms["float32"]
            why = (f"int8 {ms['int8']:.3f} ms vs float32 {ms['float32']:.3f} ms end to end, both built here "
                   "and timed in alternating turns")
            if pays:
                log.info(f"  [green]int8 pays[/green]: {why} ({ms['float32'] / ms['int8']:.2f}x)")
            else:
                log.warn("int8 does not pay on this target: " + ("no layer is faster in int8" if len(slow) == len(layers_q)
                                                                 else why) + "; the artifact is the float32 build")
            win = q if pays else f
            layer_times = sel.to_dict()
            manifest = dict(win.manifest)
            manifest["precision"] = dict(manifest["precision"], requested="int8", selection={
                "chosen": "int8" if pays else "fp32", "why": why, "end_to_end_ms": {k: round(v, 4) for k, v in ms.items()},
                # named as quantization.layers names them (the cleaned-up model's nodes)
                "layers": dict(zip(hook.user_names(list(layer_times)), layer_times.values())),
                "kept_float_for_speed": slow})
            if not pays:
                manifest["precision"]["int8_candidate"] = hook.result.info
            manifest["build"]["seconds"] = dict(manifest["build"]["seconds"], total=round(time.perf_counter() - t0, 3))
            write_json(win.path / MANIFEST, manifest)
            for p in win.path.iterdir():
                os.rename(p, tmp / p.name)
        finally:
            shutil.rmtree(work, ignore_errors=True)
