"""PyTorch models for the tests and benchmarks, exported with torch's ONNX exporter (no weights downloaded)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn


class EncoderBlock(nn.Module):
    """A BERT-style encoder block: multi-head self-attention + GELU MLP, post-LayerNorm
    (``pre_norm``: LayerNorm before each half, as ViT)."""

    def __init__(self, d: int = 64, heads: int = 4, ff: int = 128, pre_norm: bool = False):
        super().__init__()
        self.heads = heads
        self.pre_norm = pre_norm
        self.scale = 1.0 / math.sqrt(d // heads)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln1 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, ff)
        self.ff2 = nn.Linear(ff, d)
        self.ln2 = nn.LayerNorm(d)

    def attention(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=-1)
        q = q.reshape(b, t, self.heads, c // self.heads).transpose(1, 2)
        k = k.reshape(b, t, self.heads, c // self.heads).transpose(1, 2)
        v = v.reshape(b, t, self.heads, c // self.heads).transpose(1, 2)
        att = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, t, c))

    def forward(self, x):
        if self.pre_norm:
            x = x + self.attention(self.ln1(x))
            return x + self.ff2(nn.functional.gelu(self.ff1(self.ln2(x))))
        x = self.ln1(x + self.attention(x))
        return self.ln2(x + self.ff2(nn.functional.gelu(self.ff1(x))))


def _shortcut(cin: int, cout: int, stride: int):
    """A residual block's projection (1x1 conv + BN) where its shape changes, else None."""
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = _shortcut(cin, cout, stride)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class Bottleneck(nn.Module):
    """ResNet-50's block (torchvision's v1.5: the stride on the 3x3 conv): 1x1 -> 3x3 -> 1x1 (x4)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.down = _shortcut(cin, cout, stride)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    """ResNet-18's architecture (torchvision's layout), width and depth configurable;
    ``bottleneck=True`` with blocks (3, 4, 6, 3) is ResNet-50."""

    def __init__(self, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), classes: int = 1000, bottleneck: bool = False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                stride = 2 if (j == 0 and i > 0) else 1
                layers.append(Bottleneck(cin, w, stride) if bottleneck else BasicBlock(cin, w, stride))
                cin = w * Bottleneck.expansion if bottleneck else w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def resnet18(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _randomize_bn(ResNet(), seed)


def resnet50(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _randomize_bn(ResNet(blocks=(3, 4, 6, 3), bottleneck=True), seed)


def small_resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _randomize_bn(ResNet(widths=(8, 16), blocks=(1, 1), classes=10), seed)


def export(model: nn.Module, example: torch.Tensor, path: Path, dynamic: dict | None = None,
           input_name: str = "input", output_name: str = "output") -> Path:
    """Export with the TorchScript-based exporter, as most deployed models were made."""
    torch.onnx.export(model.eval(), (example,), str(path), input_names=[input_name], output_names=[output_name],
                      dynamic_axes=dynamic, opset_version=17, dynamo=False)
    return path


class PositionalEmbedding(nn.Module):
    """Token features plus learned positions: torch.arange(seq) becomes Shape -> Range in ONNX."""

    def __init__(self, d: int = 32, max_len: int = 64):
        super().__init__()
        self.pos = nn.Embedding(max_len, d)
        self.lin = nn.Linear(d, d)

    def forward(self, x):
        return self.lin(x + self.pos(torch.arange(x.shape[1])))


class PadToMultiple(nn.Module):
    """Pad H and W up to a multiple of 8 (as windowed vision models do): pads computed from shapes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        h, w = x.shape[2], x.shape[3]
        return self.conv(nn.functional.pad(x, (0, (8 - w % 8) % 8, 0, (8 - h % 8) % 8)))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2's architecture (torchvision's layout, width 1.0)."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
        layers = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()]
        cin = 32
        for t, c, n, s in cfg:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers += [nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, classes)

    def forward(self, x):
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def mobilenet_v2(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _randomize_bn(MobileNetV2(), seed)


class MiniLMEncoder(nn.Module):
    """A BERT-style encoder the size of all-MiniLM-L6: 6 blocks, d=384, 12 heads, FFN 1536."""

    def __init__(self, layers: int = 6, d: int = 384, heads: int = 12, ff: int = 1536):
        super().__init__()
        self.blocks = nn.Sequential(*[EncoderBlock(d, heads, ff) for _ in range(layers)])

    def forward(self, x):
        return self.blocks(x)


def minilm_encoder(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MiniLMEncoder().eval()


class ViT(nn.Module):
    """ViT-B/16's architecture: a 16x16 patch conv, a class token and learned positions, pre-LayerNorm
    encoder blocks (12 x d=768, 12 heads, FFN 3072 over 197 tokens at 224x224), a linear head."""

    def __init__(self, image: int = 224, patch: int = 16, layers: int = 12, d: int = 768, heads: int = 12,
                 ff: int = 3072, classes: int = 1000):
        super().__init__()
        self.patch = nn.Conv2d(3, d, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, d) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(d, heads, ff, pre_norm=True) for _ in range(layers)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


def vit_b16(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ViT().eval()


def calibrate_bn(model: nn.Module, shape, seed: int = 0) -> nn.Module:
    """Set every BatchNorm's running statistics to those of one seeded random batch of ``shape``, so
    that each normalizes what reaches it: a random-init network then keeps its activations' scale
    through its depth (with random statistics a deep one's outputs barely depend on its input)."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: after one batch, that batch's statistics
    model.train()
    with torch.no_grad():
        model(torch.randn(*shape, generator=g))
    for m in bns:
        m.momentum = 0.1
    return model.eval()


class CRNN(nn.Module):
    """Text recognition's CRNN: convolutions to a [batch, channels, 1, width] map, permuted to
    [width, batch, features], a bidirectional LSTM over the width, a per-step Linear classifier
    (the classic code's ``view(T * b, h)`` -> Linear -> ``view(T, b, -1)``). ``small``: the tests'
    size (16 x W images, 11 classes); otherwise a text line's (32 x W, 37 classes)."""

    def __init__(self, small: bool = True):
        super().__init__()
        if small:
            classes, hidden, feat = 11, 8, 16
            self.cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2, 2),
                                     nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d((2, 1), (2, 1)),
                                     nn.Conv2d(16, 16, (2, 1)), nn.ReLU())
        else:
            classes, hidden, feat = 37, 64, 128
            self.cnn = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2, 2),
                                     nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
                                     nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
                                     nn.MaxPool2d((2, 1), (2, 1)), nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(),
                                     nn.MaxPool2d((2, 1), (2, 1)), nn.Conv2d(128, 128, (2, 1)), nn.ReLU())
        self.rnn = nn.LSTM(feat, hidden, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, x):
        f = self.cnn(x).squeeze(2).permute(2, 0, 1)  # [W, B, C]
        y, _ = self.rnn(f)
        t, b, h = y.size()
        return self.fc(y.view(t * b, h)).view(t, b, -1)
