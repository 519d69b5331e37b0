"""A zoo of architectures nobody here tuned for: deploy (untuned, or --tune) against ONNX Runtime.

    .venv/bin/python scripts/bench_zoo.py [--models resnet50,vit_b_16] [--tune 10m] [--out benchmarks/zoo.txt]

Every model is built locally with random weights (torch 2.13 CPU; transformers' configs build
models without downloading anything), exported to ONNX (TorchScript exporter, opset 17; the
*_dynamo entries with the dynamo exporter, *_opset9/*_opset7 as old files), compiled
for this CPU (the built-in check compares it with ONNX Runtime) and timed with deploy's bench:
each engine in its own process, alternating turns, batch 1, the same thread count. The table gives
ONNX Runtime's, OpenVINO's (--no-openvino leaves it out) and deploy's median latency, deploy's
ratio to each and to the faster of the two (below 1 is faster) and deploy's GFLOP/s, then the
geometric means and the models above 1.5x the faster peer. The .tflite models (tflite_*, from
tests/data/tflite) are checked and timed against LiteRT instead, in the same column ("against
LiteRT" in the notes); crnn, lstm_in_if and lstm_quantize_dynamic are recurrent cases that must
compile and verify.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402
from pipeline.run.bench import bench  # noqa: E402
from pipeline.frontend.inspect import flops  # noqa: E402


# -- hand-written architectures (what transformers has no config for)


class Fire(nn.Module):
    def __init__(self, cin, s, e):
        super().__init__()
        self.s, self.e1, self.e3 = nn.Conv2d(cin, s, 1), nn.Conv2d(s, e, 1), nn.Conv2d(s, e, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.s(x))
        return torch.cat([torch.relu(self.e1(x)), torch.relu(self.e3(x))], 1)


class SqueezeNet(nn.Module):  # SqueezeNet 1.1
    def __init__(self):
        super().__init__()
        pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
        self.f = nn.Sequential(nn.Conv2d(3, 64, 3, 2), nn.ReLU(), pool(), Fire(64, 16, 64), Fire(128, 16, 64), pool(),
                               Fire(128, 32, 128), Fire(256, 32, 128), pool(), Fire(256, 48, 192),
                               Fire(384, 48, 192), Fire(384, 64, 256), Fire(512, 64, 256))
        self.head = nn.Sequential(nn.Conv2d(512, 1000, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.head(self.f(x))


def _shuffle(x, groups=2):
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        mid = cout // 2
        bn = nn.BatchNorm2d
        if stride == 2:
            self.left = nn.Sequential(nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False), bn(cin),
                                      nn.Conv2d(cin, mid, 1, bias=False), bn(mid), nn.ReLU())
        cin_r = cin if stride == 2 else mid
        self.right = nn.Sequential(nn.Conv2d(cin_r, mid, 1, bias=False), bn(mid), nn.ReLU(),
                                   nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), bn(mid),
                                   nn.Conv2d(mid, mid, 1, bias=False), bn(mid), nn.ReLU())

    def forward(self, x):
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat([a, self.right(b)], 1)
        else:
            out = torch.cat([self.left(x), self.right(x)], 1)
        return _shuffle(out)


class ShuffleNetV2(nn.Module):  # 1.0x
    def __init__(self):
        super().__init__()
        layers = [nn.Conv2d(3, 24, 3, 2, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
        cin = 24
        for cout, n in ((116, 4), (232, 8), (464, 4)):
            layers += [ShuffleUnit(cin, cout, 2)] + [ShuffleUnit(cout, cout, 1) for _ in range(n - 1)]
            cin = cout
        layers += [nn.Conv2d(cin, 1024, 1, bias=False), nn.BatchNorm2d(1024), nn.ReLU()]
        self.f = nn.Sequential(*layers)
        self.fc = nn.Linear(1024, 1000)

    def forward(self, x):
        return self.fc(self.f(x).mean((2, 3)))


def conv_bn_silu(cin, cout, k=3, s=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class C2f(nn.Module):
    def __init__(self, c, n=1):
        super().__init__()
        self.cv1, self.cv2 = conv_bn_silu(c, c, 1), conv_bn_silu(c * (2 + n) // 2, c, 1)
        self.m = nn.ModuleList(nn.Sequential(conv_bn_silu(c // 2, c // 2), conv_bn_silu(c // 2, c // 2)) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(y[-1] + m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class YoloStyle(nn.Module):
    """A YOLOv8n-sized detector: SiLU convs, C2f blocks, a 3-scale neck and decoupled heads."""

    def __init__(self, w=(16, 32, 64, 128, 256), classes=80):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_silu(3, w[0], 3, 2), conv_bn_silu(w[0], w[1], 3, 2), C2f(w[1]))
        self.p3 = nn.Sequential(conv_bn_silu(w[1], w[2], 3, 2), C2f(w[2], 2))
        self.p4 = nn.Sequential(conv_bn_silu(w[2], w[3], 3, 2), C2f(w[3], 2))
        self.p5 = nn.Sequential(conv_bn_silu(w[3], w[4], 3, 2), C2f(w[4]))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n4, self.n3 = conv_bn_silu(w[4] + w[3], w[3], 1), conv_bn_silu(w[3] + w[2], w[2], 1)
        self.heads = nn.ModuleList(nn.Sequential(conv_bn_silu(c, 64), nn.Conv2d(64, 64 + classes, 1)) for c in (w[2], w[3], w[4]))

    def forward(self, x):
        p3 = self.p3(self.stem(x))
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        n4 = self.n4(torch.cat([self.up(p5), p4], 1))
        n3 = self.n3(torch.cat([self.up(n4), p3], 1))
        return torch.cat([h(f).flatten(2) for h, f in zip(self.heads, (n3, n4, p5))], 2)


class UNetDecoder(nn.Module):
    """A DBNet/U-Net style text detector: strided conv encoder, ConvTranspose decoder with skips."""

    def __init__(self, w=(32, 64, 128, 256)):
        super().__init__()
        blk = lambda a, b, s: nn.Sequential(nn.Conv2d(a, b, 3, s, 1), nn.BatchNorm2d(b), nn.ReLU())  # noqa: E731
        self.enc = nn.ModuleList([blk(3, w[0], 2), blk(w[0], w[1], 2), blk(w[1], w[2], 2), blk(w[2], w[3], 2)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(w[3], w[2], 2, 2), nn.ConvTranspose2d(w[2], w[1], 2, 2),
                                 nn.ConvTranspose2d(w[1], w[0], 2, 2)])
        self.fuse = nn.ModuleList([blk(2 * w[2], w[2], 1), blk(2 * w[1], w[1], 1), blk(2 * w[0], w[0], 1)])
        self.head = nn.Sequential(nn.ConvTranspose2d(w[0], 16, 2, 2), nn.ReLU(), nn.Conv2d(16, 1, 1), nn.Sigmoid())

    def forward(self, x):
        skips = []
        for e in self.enc:
            x = e(x)
            skips.append(x)
        for up, fuse, skip in zip(self.up, self.fuse, reversed(skips[:-1])):
            x = fuse(torch.cat([up(x), skip], 1))
        return self.head(x)


class Conv1dAudio(nn.Module):
    """A keyword-spotting / mel front end: 1-D convolutions over 80 mel bins x 300 frames."""

    def __init__(self):
        super().__init__()
        layers, c = [], 80
        for cout, k, s in ((128, 5, 1), (128, 3, 2), (256, 3, 1), (256, 3, 2), (256, 3, 1), (512, 3, 2)):
            layers += [nn.Conv1d(c, cout, k, s, k // 2), nn.BatchNorm1d(cout), nn.ReLU()]
            c = cout
        self.f = nn.Sequential(*layers)
        self.fc = nn.Linear(512, 35)

    def forward(self, x):
        return self.fc(self.f(x).mean(-1))


class LSTMTagger(nn.Module):
    """A speech/OCR-style sequence model: 2-layer bidirectional LSTM over 100 steps of 80 features."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(80, 128, num_layers=2, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(256, 40)

    def forward(self, x):
        return self.fc(self.lstm(x)[0])


def _crnn():
    """zoo.torch_models.CRNN at a text line's size: 32 x 128 pixels, 37 classes."""
    from zoo.torch_models import CRNN

    return CRNN(small=False)


class _LstmHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(40, 64, num_layers=2)
        self.head = nn.Linear(64, 12)

    def forward(self, x):
        return self.head(self.lstm(x)[0])


def _lstm_in_if(path: Path) -> Path:
    """An If on a bool input whose branches are a forward and a reverse LSTM (hidden 64) over 50
    steps of 40 features, each -> Squeeze (onnx.helper, as tests/test_rnn.py's)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def branch(name, direction, seed):
        rng = np.random.default_rng(seed)
        h = 64
        inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.2, f"{name}_{k}")
                 for k, s in (("W", (1, 4 * h, 40)), ("R", (1, 4 * h, h)), ("B", (1, 8 * h)))]
        inits.append(numpy_helper.from_array(np.array([1], np.int64), f"{name}_axes"))
        nodes = [helper.make_node("LSTM", ["X", f"{name}_W", f"{name}_R", f"{name}_B"], [f"{name}_Y"], hidden_size=h,
                                  direction=direction),
                 helper.make_node("Squeeze", [f"{name}_Y", f"{name}_axes"], [f"{name}_out"])]
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT,
                                                                                [50, 1, h])], inits)

    node = helper.make_node("If", ["c"], ["output"], then_branch=branch("then", "forward", 0),
                            else_branch=branch("else", "reverse", 1), name="if0")
    g = helper.make_graph([node], "lstm_in_if", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                                 helper.make_tensor_value_info("X", TensorProto.FLOAT, [50, 1, 40])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [50, 1, 64])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def _lstm_quantize_dynamic(path: Path) -> Path:
    """A 2-layer LSTM (40 -> 64, 50 steps) with a Linear head, exported from torch and quantized by
    ONNX Runtime's quantize_dynamic (DynamicQuantizeLSTM, the head as DynamicQuantizeLinear + MatMulInteger),
    with reduce_range."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = path.with_name(path.stem + "-float.onnx")
    torch.onnx.export(_LstmHead().eval(), (torch.randn(50, 1, 40),), str(src), input_names=["x"],
                      output_names=["output"], dynamo=False)
    # reduce_range (7-bit weights): ORT's uint8 x int8 kernels on CPUs without VNNI add pairs of
    # products in 16 bits, which full-range weights overflow, and ORT is then the one off
    # (tests/test_rnn.py measures it); ORT recommends reduce_range there
    quantize_dynamic(str(src), str(path), weight_type=QuantType.QInt8, reduce_range=True)
    return path


class MelFrontEnd(nn.Module):
    """An audio front end as exporters write it: an STFT as a strided wide Conv1D (400 taps, hop 160,
    real and imaginary filters), power, a mel matrix, log, then a small CNN classifier."""

    def __init__(self, n_fft=400, hop=160, mels=64, classes=35):
        super().__init__()
        self.stft = nn.Conv1d(1, 2 * (n_fft // 2 + 1), n_fft, hop, bias=False)
        self.mel = nn.Linear(n_fft // 2 + 1, mels, bias=False)
        with torch.no_grad():
            self.mel.weight.abs_()  # mel filters are non-negative: the log sees a positive energy
        self.f = nn.Sequential(nn.Conv2d(1, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU())
        self.fc = nn.Linear(64, classes)

    def forward(self, wav):  # [1, 1, 16000]
        re, im = self.stft(wav).chunk(2, 1)
        mel = torch.log(self.mel((re * re + im * im).transpose(1, 2)) + 1e-6)  # [1, frames, mels]
        return self.fc(self.f(mel.unsqueeze(1)).mean((2, 3)))


class ByteConv(nn.Module):
    """A jax2tf-style byte model: one-hot bytes [1, 256, 2048] -> a patch Conv1D (kernel = stride = 4),
    channels-last transposes around each convolution as jax2tf writes them, a pooled classifier."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv1d(256, 256, 4, 4)
        self.conv = nn.Conv1d(256, 256, 5, 1, 2)
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        y = torch.relu(self.embed(x)).transpose(1, 2)  # NWC, as jax2tf keeps it
        y = torch.relu(self.conv(y.transpose(1, 2))).transpose(1, 2)
        return self.fc(y.mean(1))


class KeywordMLP(nn.Module):
    """A wake-word classifier of a few microseconds: 49 frames x 10 MFCCs -> 2 x 64 -> 12 classes."""

    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Linear(490, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 12))

    def forward(self, x):
        return self.f(x)


class TinyVAD(nn.Module):
    """A voice-activity detector: 10 frames x 40 features -> LSTM(32) -> speech probability per frame."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(40, 32, batch_first=True)
        self.fc = nn.Linear(32, 1)

    def forward(self, x):
        return torch.sigmoid(self.fc(self.lstm(x)[0]))


# the recurrent cases that must compile and verify: name -> a writer of its ONNX file
RECURRENT = {"lstm_in_if": _lstm_in_if, "lstm_quantize_dynamic": _lstm_quantize_dynamic}
# .tflite models (scripts/make_tflite_models.py), timed against LiteRT: name -> file
TFLITE = {f"tflite_{n}": ROOT / "tests" / "data" / "tflite" / f"{n}.tflite" for n in ("cnn_float", "cnn_int8", "audio_lstm")}


# -- transformers' architectures, from configs (random weights, nothing downloaded)


def _hf(name: str):
    import transformers as T

    eager = {"attn_implementation": "eager"}
    if name == "resnet50":
        return T.ResNetModel(T.ResNetConfig()), "image"
    if name == "efficientnet_b0":
        return T.EfficientNetModel(T.EfficientNetConfig(width_coefficient=1.0, depth_coefficient=1.0,
                                                        image_size=224, hidden_dim=1280)), "image"
    if name == "mobilenet_v2":
        return T.MobileNetV2Model(T.MobileNetV2Config()), "image"
    if name == "convnext_tiny":
        return T.ConvNextModel(T.ConvNextConfig()), "image"
    if name == "regnet_y_400mf":
        return T.RegNetModel(T.RegNetConfig(hidden_sizes=[48, 104, 208, 440], depths=[1, 3, 6, 6],
                                            groups_width=8, layer_type="y")), "image"
    if name == "vit_b_16":
        return T.ViTModel(T.ViTConfig(**eager), add_pooling_layer=False), "image"
    if name == "swin_tiny":
        return T.SwinModel(T.SwinConfig(**eager)), "image"
    if name == "bert_base":
        return T.BertModel(T.BertConfig(**eager), add_pooling_layer=False), "text"
    if name == "distilbert":
        return T.DistilBertModel(T.DistilBertConfig(**eager)), "text"
    if name == "gpt2_2layer":
        return T.GPT2Model(T.GPT2Config(n_layer=2, **eager)), "text"
    if name == "wav2vec2_2layer":
        return T.Wav2Vec2Model(T.Wav2Vec2Config(num_hidden_layers=2, **eager)), "audio"
    raise KeyError(name)


HAND = {"squeezenet": (SqueezeNet, (1, 3, 224, 224)), "shufflenet_v2": (ShuffleNetV2, (1, 3, 224, 224)),
        "yolo_style": (YoloStyle, (1, 3, 320, 320)), "unet_convtranspose": (UNetDecoder, (1, 3, 256, 256)),
        "conv1d_audio": (Conv1dAudio, (1, 80, 300)), "lstm_tagger": (LSTMTagger, (1, 100, 80)),
        "crnn": (_crnn, (1, 1, 32, 128)), "mel_stft": (MelFrontEnd, (1, 1, 16000)),
        "byte_conv": (ByteConv, (1, 256, 2048)), "kws_tiny": (KeywordMLP, (1, 490)), "vad_tiny": (TinyVAD, (1, 10, 40))}
HF = ["resnet50", "efficientnet_b0", "mobilenet_v2", "convnext_tiny", "regnet_y_400mf", "vit_b_16", "swin_tiny",
      "bert_base", "distilbert", "gpt2_2layer", "wav2vec2_2layer"]
# the same networks from the dynamo exporter (opset 18), and old-opset files (TorchScript at opset 9;
# *_opset7 converted down with onnx's version converter, as model-zoo files of that era are)
DYNAMO = ["squeezenet", "shufflenet_v2", "mobilenet_v2", "conv1d_audio", "distilbert"]
OLD_OPSET = {"squeezenet_opset9": ("squeezenet", 9), "yolo_style_opset7": ("yolo_style", 7)}
ZOO = (HF[:5] + ["squeezenet", "shufflenet_v2", "yolo_style", "unet_convtranspose"] + HF[5:] + ["conv1d_audio", "lstm_tagger"]
       + ["crnn"] + list(RECURRENT) + list(TFLITE) + [f"{n}_dynamo" for n in DYNAMO] + list(OLD_OPSET)
       + ["mel_stft", "byte_conv", "kws_tiny", "vad_tiny"])


class _HFWrap(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, *a):
        out = self.m(*a)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def export(name: str, out: Path) -> Path:
    torch.manual_seed(0)
    if name in TFLITE:
        return TFLITE[name]
    path = out / f"{name}.onnx"
    if path.exists():
        return path
    if name in RECURRENT:
        return RECURRENT[name](path)
    base, opset, dynamo = name, 17, False
    if name.endswith("_dynamo"):
        base, dynamo = name[: -len("_dynamo")], True
    elif name in OLD_OPSET:
        base, opset = OLD_OPSET[name]
    m, args, names = _module(base)
    with torch.no_grad():
        if dynamo:
            prog = torch.onnx.export(m, args, input_names=names, output_names=["output"], dynamo=True)
            prog.save(str(path))
        else:
            torch.onnx.export(m, args, str(path), input_names=names, output_names=["output"],
                              opset_version=max(opset, 9), dynamo=False)
    if opset < 9:
        import onnx
        from onnx import version_converter

        onnx.save(version_converter.convert_version(onnx.load(str(path)), opset), str(path))
    return path


def _module(name: str):
    """(module, example args, input names) of a zoo architecture."""
    if name in HAND:
        cls, shape = HAND[name]
        m, args, names = cls().eval(), (torch.randn(*shape),), ["input"]
    else:
        hf, kind = _hf(name)
        m = _HFWrap(hf.eval()).eval()
        if kind == "image":
            args, names = (torch.randn(1, 3, 224, 224),), ["pixel_values"]
        elif kind == "text":
            args, names = (torch.randint(0, 1000, (1, 128)),), ["input_ids"]
        else:
            args, names = (torch.randn(1, 16000),), ["input_values"]
    return m, args, names


def _gflop(art, model) -> float:
    """GFLOP per inference: TVM's count over the compiled kernels (layers.json), else the ONNX graph's."""
    from pipeline import layers

    report = layers.read(art.path)
    total = sum(k.get("flops", 0) for k in report["kernels"]) if report else 0
    if not total and Path(model).suffix == ".onnx":
        import onnx

        total = flops(onnx.load(str(model), load_external_data=False))
    return total / 1e9


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", help="comma-separated subset of: " + ", ".join(ZOO))
    ap.add_argument("--tune", help="tune each model this long first (e.g. 10m, auto, auto:20m), records kept in --db")
    ap.add_argument("--db", type=Path, help="tuning database root [the per-user one]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per engine and model")
    ap.add_argument("--work", type=Path, default=ROOT / "artifacts" / "zoo")
    ap.add_argument("--out", type=Path, help="also write the table here")
    ap.add_argument("--no-openvino", dest="openvino", action="store_false",
                    help="time ONNX Runtime alone (OpenVINO is in the peers extra)")
    a = ap.parse_args()
    names = a.models.split(",") if a.models else ZOO
    a.work.mkdir(parents=True, exist_ok=True)

    def measure(name: str, t0: float) -> dict:
        model = export(name, a.work)
        from pipeline.tune import parse_budget

        budget, auto = parse_budget(a.tune)
        art = pipeline.compile(model, "x86-64", output=a.work / f"{name}-x86-64", force=True,
                               tune_budget=budget, tune_auto=auto, db=a.db)
        compile_s = time.perf_counter() - t0
        gflop = _gflop(art, model)
        tflite = name in TFLITE  # a .tflite's peer is LiteRT alone
        peers = ["onnxruntime"] if tflite or not a.openvino else ["onnxruntime", "openvino"]
        r = bench(art, model, threads=a.threads, repeat=10, min_seconds=a.seconds, warmup=3, peers=peers)
        peer = "litert" if "litert" in r else "onnxruntime"
        return dict(model=name, gflop=gflop, ort_ms=r[peer]["median_ms"],
                    ov_ms=r["openvino"]["median_ms"] if "openvino" in r else None,
                    vs_ov=r["ratios"].get("openvino"), vs_best=r["fastest_peer"]["ratio"],
                    deploy_ms=r["deploy"]["median_ms"], ratio=r["ratio"],
                    gflops=gflop / (r["deploy"]["median_ms"] / 1e3) if gflop else None,
                    check=art.manifest["check"]["status"] + (" against LiteRT" if peer == "litert" else ""),
                    compile_s=compile_s)

    run_rows(names, measure, _row, lambda rows: _table(rows, a), a.out)


def run_rows(names: list[str], measure, row, table, out: Path | None) -> None:
    """``measure(name, t0)`` for each model, a failure being a row of its own; each row printed as
    it comes, then the table (also written to ``out``)."""
    rows = []
    for name in names:
        t0 = time.perf_counter()
        try:
            rows.append(measure(name, t0))
        except Exception as e:  # noqa: BLE001 - one model's failure is a row, not the end of the run
            msg = e.message if isinstance(e, pipeline.DeployError) else f"{type(e).__name__}: {e}"
            rows.append(dict(model=name, error=" ".join(str(msg).split())[:160]))
            traceback.print_exc()
        print(row(rows[-1]), flush=True)
    text = table(rows)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


def _row(r: dict) -> str:
    if "error" in r:
        return f"| {r['model']} | - | - | - | - | - | - | - | - | failed: {r['error']} |"
    g = f"{r['gflops']:.1f}" if r.get("gflops") else "-"
    ov = f"{r['ov_ms']:.3f}" if r.get("ov_ms") else "-"
    vs_ov = f"{r['vs_ov']:.2f}x" if r.get("vs_ov") else "-"
    return (f"| {r['model']} | {r['gflop']:.2f} | {r['ort_ms']:.3f} | {ov} | {r['deploy_ms']:.3f} | {r['ratio']:.2f}x | "
            f"{vs_ov} | {r['vs_best']:.2f}x | {g} | {r['check']}, compiled in {r['compile_s']:.0f} s |")


def _table(rows: list[dict], a) -> str:
    sys.path.insert(0, str(ROOT / "scripts"))
    from provenance import header

    ok = [r for r in rows if "error" not in r]
    lines = [header(f"deploy model zoo: {a.threads} threads, batch 1, {'tuned ' + a.tune if a.tune else 'untuned'}",
                    "openvino", "ai-edge-litert"),
             "# each engine in its own process, alternating turns; vs ORT = deploy p50 / ONNX Runtime p50 (tflite_*: "
             "LiteRT), vs OV = deploy p50 / OpenVINO p50 (CPU plugin, f32, latency hint), vs best = against the faster "
             "peer", "",
             "| model | GFLOP | ORT ms | OpenVINO ms | deploy ms | vs ORT | vs OV | vs best | deploy GFLOP/s | notes |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(r) for r in rows]
    ratios = [r["ratio"] for r in ok]
    vs_ov = [r["vs_ov"] for r in ok if r.get("vs_ov")]
    vs_best = [r["vs_best"] for r in ok]
    lines += ["", f"over {len(ok)} models: geometric mean vs ONNX Runtime {geomean(ratios):.2f}x, vs OpenVINO "
                  f"{geomean(vs_ov):.2f}x ({len(vs_ov)} models), vs the faster peer {geomean(vs_best):.2f}x; faster than "
                  f"both on {sum(1 for x in vs_best if x < 1)}; above 1.5x the faster peer: "
                  f"{', '.join(r['model'] for r in ok if r['vs_best'] > 1.5) or 'none'}"
                  + (f"; {len(rows) - len(ok)} failed" if len(ok) < len(rows) else "")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
