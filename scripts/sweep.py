"""Architectures nobody tuned for: build each from a transformers config (random weights, nothing
downloaded, 2 layers), export it with torch, compile it for x86-64 with the built-in check against
ONNX Runtime, and print what happened to each: passed (max error), refused (the reason), check
failed, or an error deploy did not catch. Each model runs in its own process with a time limit.

    .venv/bin/python scripts/sweep.py [--models vit,gpt2,...] [--timeout 600] [--json out.json]

Needs the zoo extra (torch, transformers): pip install -e '.[zoo]'. Left out: what torch 2.13's
TorchScript exporter cannot export at opset 17 or 18 (MobileViTv2's fold, Funnel).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

# model_type -> config overrides (small, so a sweep of all takes minutes, not hours)
MODELS = {
    # vision
    "vit": {}, "deit": {}, "beit": {}, "dinov2": {}, "swin": {"depths": [1, 1, 2, 1]},
    "swinv2": {"depths": [1, 1, 2, 1]}, "convnext": {}, "convnextv2": {}, "mobilevit": {},
    "segformer": {}, "poolformer": {}, "levit": {}, "cvt": {}, "focalnet": {},
    "mobilenet_v1": {}, "resnet": {}, "regnet": {}, "bit": {}, "yolos": {}, "clip_vision_model": {},
    "siglip_vision_model": {}, "dpt": {}, "glpn": {}, "pvt": {}, "pvt_v2": {}, "hiera": {},
    # text
    "bert": {}, "roberta": {}, "albert": {"hidden_size": 256, "intermediate_size": 1024, "num_attention_heads": 4}, "electra": {}, "deberta-v2": {}, "mpnet": {}, "xlm-roberta": {},
    "distilbert": {"n_layers": 2}, "gpt2": {"n_layer": 2}, "gpt_neo": {"num_layers": 2, "attention_types": [[["global", "local"], 1]]},
    "opt": {}, "llama": {"hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2},
    "mistral": {"hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2},
    "qwen2": {"hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2},
    "phi": {"hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4},
    "bloom": {"n_layer": 2}, "falcon": {"hidden_size": 256, "num_attention_heads": 4}, "mobilebert": {},
    "squeezebert": {},
    # audio
    "wav2vec2": {}, "hubert": {}, "wavlm": {}, "sew": {}, "audio-spectrogram-transformer": {},
}
LAYER_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers")


def _model(model_type: str):
    import transformers as T

    overrides = dict(MODELS[model_type])
    cfg = T.AutoConfig.for_model(model_type, **overrides)
    for k in LAYER_KEYS if not hasattr(cfg, "depths") else ():  # staged models keep their stages
        if k not in overrides and isinstance(getattr(cfg, k, None), int) and getattr(cfg, k) > 2:
            setattr(cfg, k, 2)
    if hasattr(cfg, "_attn_implementation"):
        cfg._attn_implementation = "eager"
    return T.AutoModel.from_config(cfg).eval(), cfg


def export(model_type: str, path: Path) -> dict:
    import torch

    torch.manual_seed(0)
    m, cfg = _model(model_type)
    name = getattr(m, "main_input_name", "input_ids")
    if name == "pixel_values":
        size = getattr(cfg, "image_size", 224)
        size = size[0] if isinstance(size, (list, tuple)) else size
        x = torch.randn(1, getattr(cfg, "num_channels", 3), size, size)
    elif name == "input_values" and model_type == "audio-spectrogram-transformer":
        x = torch.randn(1, cfg.max_length, cfg.num_mel_bins)
    elif name == "input_values":
        x = torch.randn(1, 16000)
    else:
        x = torch.randint(0, min(getattr(cfg, "vocab_size", 1000), 1000), (1, 32))

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, x):
            out = self.m(x)
            if getattr(out, "last_hidden_state", None) is not None:
                return out.last_hidden_state
            return out[0]

    for opset in (17, 18):  # 18 where an op needs it
        try:
            with torch.no_grad():
                torch.onnx.export(Wrap().eval(), (x,), str(path), input_names=[name], output_names=["output"],
                                  opset_version=opset, dynamo=False)
            break
        except torch.onnx.errors.UnsupportedOperatorError:
            if opset == 18:
                raise
    return {"input": name, "shape": list(x.shape), "opset": opset}


def run_one(model_type: str, work: str, q) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    res: dict = {"model": model_type}
    path = Path(work) / f"{model_type}.onnx"
    try:
        t0 = time.perf_counter()
        res.update(export(model_type, path))
        res["export_s"] = round(time.perf_counter() - t0, 1)
    except Exception as e:  # noqa: BLE001 - the exporter's failure, not deploy's
        res.update(status="export failed", why=f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:200] if str(e).strip() else ''}")
        q.put(res)
        return
    import pipeline
    from pipeline import DeployError, log
    from pipeline.errors import CheckFailed

    log.console.quiet = True  # one line per model; the fallbacks come from the manifest

    t0 = time.perf_counter()
    try:
        art = pipeline.compile(path, "x86-64", output=Path(work) / f"{model_type}.art", force=True)
        chk = art.manifest.get("check", {})
        worst = max((o.get("max_abs", 0.0) for o in chk.get("outputs", {}).values()), default=None)
        res.update(status="passed" if chk.get("status") == "passed" else f"check {chk.get('status')}",
                   max_abs=worst, why=chk.get("reason", ""))
        fell = [f["stage"] + (f" of {', '.join(f['functions'])} only" if f.get("functions") else "")
                for f in art.manifest.get("fallbacks", [])]
        if fell:
            res["why"] = (res["why"] + " " if res["why"] else "") + "fell back: " + ", ".join(fell)
    except CheckFailed as e:
        res.update(status="check failed", why=e.message.replace("\n", " ")[:300])
    except DeployError as e:
        res.update(status="refused", why=e.message.replace("\n", " ")[:300])
    except Exception as e:  # noqa: BLE001 - what deploy let through: a bug to fix
        res.update(status="raw error", why=f"{type(e).__name__}: {str(e).strip()[-300:]}")
    res["compile_s"] = round(time.perf_counter() - t0, 1)
    q.put(res)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help="comma-separated model types [all]")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    names = a.models.split(",") if a.models else list(MODELS)
    ctx = multiprocessing.get_context("spawn")
    results = []
    with tempfile.TemporaryDirectory(prefix="deploy-sweep-") as work:
        for name in names:
            q = ctx.Queue()
            p = ctx.Process(target=run_one, args=(name, work, q))
            p.start()
            p.join(a.timeout)
            if p.is_alive():
                p.kill()
                res = {"model": name, "status": "timeout", "why": f"over {a.timeout:.0f} s"}
            elif q.empty():
                res = {"model": name, "status": "crashed", "why": f"exit code {p.exitcode}"}
            else:
                res = q.get()
            results.append(res)
            err = f", max abs {res['max_abs']:.2g}" if res.get("max_abs") is not None else ""
            print(f"{name}: {res['status']}{err} ({res.get('compile_s', '-')} s) {res.get('why', '')}", flush=True)
    counts: dict[str, int] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print("summary: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0 if not any(r["status"] in ("raw error", "crashed", "check failed") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
