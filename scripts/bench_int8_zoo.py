"""int8 against float32 over the model zoo's CNNs, in one run: latency, weight bytes, accuracy.

    .venv/bin/python scripts/bench_int8_zoo.py [--models mobilenet_v2,squeezenet] [--out benchmarks/int8_zoo.txt]

Each CNN of scripts/bench_zoo.py is exported with weights that give real activations: Kaiming
initialised convolutions and batch-norm statistics gathered from a few random batches
(transformers' configs initialise with std 0.02: MobileNetV2's features shrink to 1e-21 by the
last layer, where any accuracy number means nothing); transformers' backbones get an ImageNet
head (global average, 1,000 logits). A random network has no decision to keep:
its 1,000 logits are nearly equal, and any rounding reorders them. So each classifier is then
trained for 150 steps (at up to 96x96) on a synthetic 10-class task, each class a fixed
random colour and texture plus noise (``_task``); its head is then fitted again at the export size
on 512 samples, the body frozen (``_fit_head``: a body trained at 96x96 does not carry its
decision to 224x224 unaided). It is calibrated and measured on that task's samples, as a deployed
model is on its own data. Detectors and decoders keep their initialised
weights and random-normal inputs. Both precisions are compiled untuned by the same deploy:
float32, and ``--quantize int8`` (minmax calibration on 32 samples; int8 is kept only for layers
it makes faster, and the float32 build is written if int8 does not pay: quantize/select.py).
They are timed each in its own process, in alternating turns. Accuracy: the int8 artifact
against the float model in ONNX Runtime on 200 fresh samples: cosine of the outputs and top-1
agreement of the class axis (for feature maps, of their global average: the class a linear head
would pick; a single-channel output has none).

Encoders (BERT-base, DistilBERT; sequence 128, transformers' own initialisation) take dynamic
int8 (``--quantize int8 --dynamic``: no calibration) and are compared with ONNX Runtime too:
float32 and its ``quantize_dynamic`` model (default settings), all four engines each in its own
process, in alternating turns. Their output is the pooled one (BERT's pooler, DistilBERT's first
token); accuracy is its cosine against ONNX Runtime float32 on fresh token ids.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import pipeline  # noqa: E402
from bench_zoo import HAND, _HFWrap, _hf, run_rows  # noqa: E402
from pipeline.run.bench import compare  # noqa: E402
from pipeline.run.check import cosine  # noqa: E402
from pipeline.run.reference import ort_session  # noqa: E402
from pipeline.run.runtime import random_inputs  # noqa: E402

CNNS = ["resnet50", "efficientnet_b0", "mobilenet_v2", "convnext_tiny", "regnet_y_400mf", "squeezenet",
        "shufflenet_v2", "yolo_style", "unet_convtranspose", "conv1d_audio"]
ENCODERS = ["bert_base", "distilbert"]
SEQ = 128


class _Pooled(nn.Module):
    """An encoder's pooled output: BERT's pooler, else the first token's hidden state."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, ids):
        out = self.m(ids)
        return out.pooler_output if getattr(out, "pooler_output", None) is not None else out.last_hidden_state[:, 0]


def export_encoder(name: str, out: Path) -> Path:
    import transformers as T

    path = out / f"{name}.onnx"
    if path.exists():
        return path
    torch.manual_seed(0)
    eager = {"attn_implementation": "eager"}
    hf = (T.BertModel(T.BertConfig(**eager)) if name == "bert_base"
          else T.DistilBertModel(T.DistilBertConfig(**eager)))
    with torch.no_grad():
        torch.onnx.export(_Pooled(hf.eval()).eval(), (torch.randint(1000, 30000, (1, SEQ)),), str(path),
                          input_names=["input_ids"], output_names=["output"], opset_version=17, dynamo=False)
    return path


def _token_ids(i: int) -> dict:
    return {"input_ids": np.random.default_rng(1000 + i).integers(1000, 30000, (1, SEQ)).astype(np.int64)}


def _layer_counts(quant: dict) -> dict:
    """How many quantizable layers there are and how many compute in int8 (quantization.layers)."""
    layers = quant.get("layers", {})
    return {"layers": len(layers), "int8_layers": sum(v.get("precision") == "int8" for v in layers.values())}


def measure_encoder(name: str, work: Path, samples: int, t0: float) -> dict:
    from onnxruntime.quantization import quantize_dynamic

    from pipeline.run.bench import time_engines

    model = export_encoder(name, work)
    f = pipeline.compile(model, "x86-64", output=work / f"{name}-fp32", force=True, db=work / "no-db")
    q = pipeline.compile(model, "x86-64", output=work / f"{name}-int8", force=True, db=work / "no-db",
                         quantize="int8", dynamic=True)
    ort_q = work / f"{name}-ort-dynamic.onnx"
    quantize_dynamic(str(model), str(ort_q))
    ms = time_engines({"float32": ("deploy", f.path), "int8": ("deploy", q.path), "ort": ("onnxruntime", model),
                       "ort_int8": ("onnxruntime", ort_q)}, _token_ids(0), min_seconds=3.0)
    ref, ort8 = ort_session(model, 2), ort_session(ort_q, 2)
    cos, cos_ort = [], []
    for i in range(samples):
        x = _token_ids(i)
        r = ref.run(None, x)[0]
        cos.append(cosine(r, q.run(x)["output"]))
        cos_ort.append(cosine(r, ort8.run(None, x)[0]))
    sel = q.manifest["precision"].get("selection", {})
    quant = q.manifest.get("quantization") or q.manifest["precision"].get("int8_candidate", {})
    return dict(model=name + " (dynamic)", fp32_ms=ms["float32"], int8_ms=ms["int8"], speedup=ms["float32"] / ms["int8"],
                ort_ms=ms["ort"], ort_int8_ms=ms["ort_int8"],
                fp32_mb=f.manifest["memory"]["params_bytes"] / 1e6, int8_mb=q.manifest["memory"]["params_bytes"] / 1e6,
                chosen=sel.get("chosen", "int8"), **_layer_counts(quant), seconds=time.perf_counter() - t0,
                cosine_min=min(cos), cosine_ort_int8=min(cos_ort), top1=None)


def _realistic(m: nn.Module, shape) -> nn.Module:
    """Kaiming weights and batch-norm statistics of random batches: activations keep their scale."""
    torch.manual_seed(0)
    for mod in m.modules():
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(mod.weight, mode="fan_in", nonlinearity="relu")
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
        elif isinstance(mod, nn.Linear):
            nn.init.normal_(mod.weight, std=1 / math.sqrt(mod.in_features))
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
    return _batch_norm_stats(m, (torch.randn(8, *shape[1:]) for _ in range(4)))


def _batch_norm_stats(m: nn.Module, batches) -> nn.Module:
    """Batch-norm running statistics set to the plain average over ``batches`` (made as they are
    used: the same random stream as before); the model in eval mode."""
    for mod in m.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            mod.reset_running_stats()
            mod.momentum = None  # a plain average, not a running one
    m.train()
    with torch.no_grad():
        for x in batches:
            m(x)
    return m.eval()


class _WithHead(nn.Module):
    """An HF backbone (a feature map) with an ImageNet classifier head: global average, 1,000 logits."""

    def __init__(self, backbone: nn.Module, shape):
        super().__init__()
        self.m = backbone
        with torch.no_grad():
            channels = backbone.eval()(torch.randn(*shape)).shape[1]
        self.fc = nn.Linear(channels, 1000)

    def forward(self, x):
        return self.fc(self.m(x).mean((2, 3)))


CLASSES = 10  # the synthetic task's classes
TRAIN_STEPS, TRAIN_BATCH, TRAIN_SIZE = 150, 16, 96


def _task(shape, seed: int = 0) -> torch.Tensor:
    """The task's classes: each a random colour (a mean per channel) and texture (a tile of
    [C, 8, 8], or [C, 16] for 1-D inputs, repeated over the input). Both look the same at any input
    size, so a network trained at 96x96 classifies them at 224x224."""
    g = torch.Generator().manual_seed(seed)
    tile = [8, 8] if len(shape) == 4 else [16]
    colour = torch.randn(CLASSES, shape[1], *[1] * len(tile), generator=g)
    return colour + 0.5 * torch.randn(CLASSES, shape[1], *tile, generator=g)


def task_samples(templates: torch.Tensor, shape, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples of the task at ``shape``: a class's colour and texture, shifted at random, plus
    noise; and the classes."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    tile = templates.shape[2:]
    reps = [-(-int(d) // t) + 1 for d, t in zip(shape[2:], tile)]
    out = []
    for k in y.tolist():
        t = templates[k].repeat(1, *reps)
        shift = [int(torch.randint(0, s, (1,), generator=g)) for s in tile]
        idx = tuple(slice(o, o + int(d)) for o, d in zip(shift, shape[2:]))
        out.append(t[(slice(None), *idx)])
    return torch.stack(out) + 0.5 * torch.randn(n, *shape[1:], generator=g), y


def _adam(m: nn.Module, batches, **options) -> float:
    """One Adam step of ``m``'s cross entropy per (inputs, classes) batch, in training mode; the
    last loss."""
    import torch.nn.functional as F

    opt = torch.optim.Adam(m.parameters(), **options)
    m.train()
    for x, y in batches:
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def _train(m: nn.Module, shape, templates: torch.Tensor) -> nn.Module:
    """TRAIN_STEPS Adam steps on the task (at up to 96x96: conv nets pool globally), then batch-norm
    statistics gathered again at the export size."""
    small = tuple(shape[:2]) + tuple(min(d, TRAIN_SIZE) for d in shape[2:]) if len(shape) == 4 else tuple(shape)
    loss = _adam(m, (task_samples(templates, (TRAIN_BATCH, *small[1:]), TRAIN_BATCH, seed=10_000 + step)
                     for step in range(TRAIN_STEPS)), lr=1e-3)
    print(f"  trained on the {CLASSES}-class task: last loss {loss:.3f}", flush=True)
    m = _batch_norm_stats(m, (task_samples(templates, (8, *shape[1:]), 8, seed=20_000 + i)[0] for i in range(4)))
    return _fit_head(m, shape, templates)


HEAD_SAMPLES, HEAD_STEPS, HEAD_BATCH = 512, 500, 32


def _fit_head(m: nn.Module, shape, templates: torch.Tensor) -> nn.Module:
    """The classifier head (``m.head``, else ``m.fc``) fitted again at the export size, the body
    frozen: a body trained at 96x96 need not carry its decision to 224x224, but its features still
    tell the classes apart. HEAD_SAMPLES samples' head inputs are gathered once, then HEAD_STEPS
    Adam steps on batches of HEAD_BATCH (SqueezeNet's head is a 1x1 conv over 13x13 maps: full
    batches took minutes a step); the accuracy printed is on samples the fit did not see."""
    head = getattr(m, "head", None) or m.fc
    feats: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _mod, args: feats.append(args[0].detach()))
    ys = []
    with torch.no_grad():
        for i in range(HEAD_SAMPLES // 32):
            x, y = task_samples(templates, (32, *shape[1:]), 32, seed=30_000 + i)
            m(x)
            ys.append(y)
    hook.remove()
    x, y = torch.cat(feats), torch.cat(ys)
    g = torch.Generator().manual_seed(0)
    picks = (torch.randint(0, len(x), (HEAD_BATCH,), generator=g) for _ in range(HEAD_STEPS))
    loss = _adam(head, ((x[b], y[b]) for b in picks), lr=1e-2, weight_decay=1e-4)
    m.eval()
    with torch.no_grad():
        xt, yt = task_samples(templates, (64, *shape[1:]), 64, seed=40_000)
        acc = (m(xt).argmax(1) == yt).float().mean().item()
    print(f"  head fitted at {tuple(shape[2:])}: loss {loss:.3f}, held-out accuracy {100 * acc:.0f}%", flush=True)
    return m


def _is_classifier(m: nn.Module, shape) -> bool:
    with torch.no_grad():
        y = m.eval()(torch.randn(*shape))
    return y.ndim == 2 and y.shape[1] >= CLASSES


def export(name: str, out: Path) -> Path:
    path = out / f"{name}.onnx"
    if path.exists():
        return path
    torch.manual_seed(0)
    if name in HAND:
        cls, shape = HAND[name]
        m = cls()
    else:
        hf, kind = _hf(name)
        assert kind == "image", name
        m, shape = _WithHead(_HFWrap(hf), shape=(1, 3, 224, 224)), (1, 3, 224, 224)
    m = quiet_residuals(_realistic(m, shape), shape)
    if _is_classifier(m, shape):
        templates = _task(shape)
        m = _train(m, shape, templates)
        np.save(out / f"{name}-task.npy", templates.numpy())
    with torch.no_grad():
        torch.onnx.export(m, (torch.randn(*shape),), str(path), input_names=["input"], output_names=["output"],
                          opset_version=17, dynamo=False)
    return path


def residual_branch_convs(model) -> list[str]:
    """The names of the ONNX Conv nodes that end a residual branch: each Add of two computed
    tensors whose producer is a Conv; of two such, the branch's (its input is read by nothing
    else; a projection shortcut reads the block's input, which the branch reads too)."""
    inits = {i.name for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    uses: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    found: list[str] = []
    for n in model.graph.node:
        if n.op_type != "Add" or any(i in inits for i in n.input):
            continue
        convs = [producer[i] for i in n.input if i in producer and producer[i].op_type == "Conv"]
        convs.sort(key=lambda c: uses.get(c.input[0], 0))
        if convs and convs[0].name not in found:
            found.append(convs[0].name)
    return found


def _module_at(m: nn.Module, node: str) -> nn.Module:
    """The module an ONNX node's scope names ("/m/encoder/stages.0/layer/layer.2/convolution/Conv"):
    a segment is a child's name, or a dotted path below it, which may repeat the name of the module
    it is in ("layer/layer.2" is child 2 of the Sequential "layer")."""
    cur, name = m, ""
    for seg in node.strip("/").split("/")[:-1]:
        parts = seg.split(".")
        if parts[0] == name and len(parts) > 1 and not hasattr(cur, parts[0]):
            parts = parts[1:]
        for p in parts:
            cur, name = getattr(cur, p), p
    return cur


def quiet_residuals(m: nn.Module, shape, scale: float = 0.2) -> nn.Module:
    """Each residual branch's output scaled by ``scale``, before any training: the batch norm after
    the branch's last conv (else the conv itself) has its weight and bias scaled.

    With Kaiming weights every block adds a unit-variance branch to its input, and a deep residual
    network is chaotic: int8's rounding grows from block to block (MobileNetV2: ONNX Runtime's own
    QDQ simulation reached cosine 0.67 against float32), which trained networks are not. Small
    residual branches are where training starts from (zero-initialised last batch-norm gammas), so
    the accuracy column measures int8 and not the chaos of random weights. The branches are found
    in the model's ONNX export (``residual_branch_convs``: its node names are the modules' paths);
    done in torch, so that training and the head fit see the network that is exported."""
    import io

    import onnx

    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(m.eval(), (torch.randn(*shape),), buf, opset_version=17, dynamo=False)
    convs = [_module_at(m, n) for n in residual_branch_convs(onnx.load_from_string(buf.getvalue()))]
    # the batch norm that reads each conv's output, seen in one forward pass
    outputs: dict[int, nn.Module] = {}
    norm_of: dict[nn.Module, nn.Module] = {}

    def conv_out(mod, _args, out):
        outputs[id(out)] = mod

    def norm_in(mod, args):
        if id(args[0]) in outputs:
            norm_of.setdefault(outputs[id(args[0])], mod)

    hooks = [c.register_forward_hook(conv_out) for c in convs]
    hooks += [b.register_forward_pre_hook(norm_in) for b in m.modules() if isinstance(b, (nn.BatchNorm1d, nn.BatchNorm2d))]
    with torch.no_grad():
        m(torch.randn(*shape))
        for h in hooks:
            h.remove()
        for c in convs:
            target = norm_of.get(c, c)
            target.weight.mul_(scale)
            if target.bias is not None:
                target.bias.mul_(scale)
    print(f"  {len(convs)} residual branches scaled by {scale} ({len(norm_of)} through their batch norm)", flush=True)
    return m


def _top1(y: np.ndarray):
    """The class a head would pick: argmax over axis 1 (of the spatial mean for feature maps)."""
    if y.ndim < 2 or y.shape[1] < 2:
        return None
    return int(np.argmax(y.reshape(y.shape[0], y.shape[1], -1).mean(-1)[0]))


def _inputs(art, templates, i: int) -> tuple[dict, int | None]:
    """Sample ``i`` and its class: the task's (a trained classifier) or random-normal inputs."""
    if templates is None:
        return random_inputs(art.inputs, seed=1000 + i), None
    (spec,) = art.inputs
    x, y = task_samples(templates, spec["shape"], 1, seed=1000 + i)
    return {spec["name"]: x.numpy()}, int(y[0])


def accuracy(art, model: Path, samples: int, templates=None) -> dict:
    """Cosine and top-1 agreement of int8 against float32; for a trained classifier also each one's
    accuracy on the task (an agreement means something only where float32 tells the classes apart)."""
    sess = ort_session(model, 2)
    cos, agree, n_top, right = [], 0, 0, {"float32": 0, "int8": 0}
    for i in range(samples):
        x, y = _inputs(art, templates, i)
        ref = sess.run(None, {k.name: x[k.name] for k in sess.get_inputs()})[0]
        ours = art.run(x)["output"]
        cos.append(cosine(ours, ref))
        t = _top1(ref)
        if t is not None:
            n_top += 1
            agree += t == _top1(ours)
            right["float32"] += t == y
            right["int8"] += _top1(ours) == y
    return {"cosine_min": min(cos), "top1": agree / n_top if n_top else None,
            "task_acc": {k: v / samples for k, v in right.items()} if templates is not None else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", help="comma-separated subset of: " + ", ".join(CNNS + ENCODERS))
    ap.add_argument("--work", type=Path, default=ROOT / "artifacts" / "zoo_int8")
    ap.add_argument("--samples", type=int, default=200, help="inputs for the accuracy comparison")
    ap.add_argument("--calibration-samples", type=int, default=32,
                    help="calibration samples (a quarter of them held out for the int8 accuracy gate)")
    ap.add_argument("--max-accuracy-drop", type=float, help="compile int8 with this accuracy gate")
    ap.add_argument("--out", type=Path, help="also write the table here")
    a = ap.parse_args()
    names = a.models.split(",") if a.models else CNNS + ENCODERS
    a.work.mkdir(parents=True, exist_ok=True)

    def measure(name: str, t0: float) -> dict:
        import onnx

        if name in ENCODERS:
            return measure_encoder(name, a.work, a.samples, t0)
        model = export(name, a.work)
        f = pipeline.compile(model, "x86-64", output=a.work / f"{name}-fp32", force=True, db=a.work / "no-db")
        dims = onnx.load(str(model), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        calib = a.work / f"{name}-calib.npz"
        shape = [d.dim_value for d in dims]
        task = a.work / f"{name}-task.npy"
        templates = torch.from_numpy(np.load(task)) if task.exists() else None
        n = a.calibration_samples
        np.savez(calib, input=(task_samples(templates, [n, *shape[1:]], n, seed=1)[0].numpy()[:, None]
                               if templates is not None else
                               np.random.default_rng(0).standard_normal((n, *shape)).astype(np.float32)))
        q = pipeline.compile(model, "x86-64", output=a.work / f"{name}-int8", force=True, db=a.work / "no-db",
                             quantize="int8", calibration=calib, max_accuracy_drop=a.max_accuracy_drop)
        sel = q.manifest["precision"].get("selection", {})
        ms = compare({"float32": f.path, "int8": q.path}, min_seconds=3.0)
        quant = q.manifest.get("quantization") or q.manifest["precision"].get("int8_candidate", {})
        return dict(model=name, fp32_ms=ms["float32"], int8_ms=ms["int8"], speedup=ms["float32"] / ms["int8"],
                    fp32_mb=f.manifest["memory"]["params_bytes"] / 1e6, int8_mb=q.manifest["memory"]["params_bytes"] / 1e6,
                    chosen=sel.get("chosen", "int8"), **_layer_counts(quant), seconds=time.perf_counter() - t0,
                    **accuracy(q, model, a.samples, templates))

    run_rows(names, measure, _row, _table, a.out)


def _row(r: dict) -> str:
    if "error" in r:
        return f"| {r['model']} | - | - | - | - | - | - | - | - | failed: {r['error']} |"
    top = f"{100 * r['top1']:.1f}%" if r["top1"] is not None else "-"
    if r.get("task_acc"):
        top += f" (task: float32 {100 * r['task_acc']['float32']:.0f}%, int8 {100 * r['task_acc']['int8']:.0f}%)"
    ort = (f"{r['ort_ms']:.2f} / {r['ort_int8_ms']:.2f} (cosine {r['cosine_ort_int8']:.5f})" if "ort_ms" in r else "-")
    return (f"| {r['model']} | {r['fp32_ms']:.2f} | {r['int8_ms']:.2f} | {r['speedup']:.2f}x | {ort} | "
            f"{r['fp32_mb']:.1f} / {r['int8_mb']:.1f} | {r['chosen']}: {r['int8_layers']} of {r['layers']} "
            f"layers int8 | {r['cosine_min']:.5f} | {top} | {r['seconds']:.0f} s |")


def _table(rows: list[dict]) -> str:
    import platform

    import tvm

    ok = [r for r in rows if "error" not in r and "ort_ms" not in r]  # the CNNs
    sp = [r["speedup"] for r in ok]
    geo = math.exp(sum(math.log(x) for x in sp) / len(sp)) if sp else float("nan")
    lines = [f"# deploy int8 vs float32 over the zoo's CNNs and encoders, {time.strftime('%Y-%m-%d')}: "
             f"{platform.processor() or platform.machine()}, 2 threads, batch 1, untuned",
             f"# deploy {pipeline.__version__} (TVM {tvm.__version__}); each build in its own process, alternating turns; "
             "speed-up = float32 p50 / int8 p50; accuracy: int8 artifact vs ONNX Runtime float32 on fresh samples "
             "(classifiers: of the synthetic task they were trained on; others: random normal)", "",
             "| model | float32 ms | int8 ms | speed-up | ONNX Runtime fp32 / quantize_dynamic ms | weights MB fp32 / int8 "
             "| precision chosen | cosine (min) | top-1 agreement (task accuracy) | compile + bench |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(r) for r in rows]
    failed = sum("error" in r for r in rows)
    if ok or failed:
        lines += ["", f"CNNs: geometric mean speed-up over {len(ok)} models: {geo:.2f}x; slowest {min(sp, default=float('nan')):.2f}x"
                  + (f"; {failed} model(s) failed" if failed else "")]
    for r in rows:
        if "ort_ms" in r:
            lines.append(f"{r['model']}: int8 {r['speedup']:.2f}x its float32 build; "
                         f"{r['ort_int8_ms'] / r['int8_ms']:.2f}x ONNX Runtime's quantize_dynamic (above 1: deploy faster)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
