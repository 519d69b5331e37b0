"""How close the int8 model is to the float one: cosine, max error, top-1 agreement, the drop."""

from __future__ import annotations

import numpy as np


def accuracy(ref: list[dict], ours: list[dict]) -> dict:
    """Per output: cosine similarity, max abs error, top-1 agreement (classifier outputs); and `drop`."""
    report, drop, error = {}, 0.0, 0.0
    for name in ref[0]:
        r = np.stack([np.asarray(s[name], np.float64) for s in ref])
        o = np.stack([np.asarray(s[name], np.float64) for s in ours])
        cos = float(np.dot(r.ravel(), o.ravel()) / max(np.linalg.norm(r) * np.linalg.norm(o), 1e-30))
        entry = {"cosine": round(cos, 6), "max_abs_error": float(np.abs(r - o).max())}
        error = max(error, 1.0 - cos)
        shape = r.shape[1:]
        if len(shape) == 2 and shape[-1] > 1:  # [batch, classes]
            agree = float(np.mean(r.reshape(-1, shape[-1]).argmax(-1) == o.reshape(-1, shape[-1]).argmax(-1)))
            entry["top1_agreement"] = round(agree, 4)
            drop = max(drop, 1.0 - agree)
        else:
            drop = max(drop, 1.0 - cos)
        report[name] = entry
    # ``error``: the largest 1 - cosine, a continuous measure that ranks layers where a few samples'
    # top-1 agreement ties (most layers flip none of them)
    return {"outputs": report, "drop": round(drop, 6), "error": float(error), "samples": len(ref)}


def format_accuracy(acc: dict) -> str:
    parts = []
    for name, e in acc["outputs"].items():
        s = f"{name}: cosine {e['cosine']:.5f}, max error {e['max_abs_error']:.4g}"
        if "top1_agreement" in e:
            s += f", top-1 agreement {100 * e['top1_agreement']:.1f}%"
        parts.append(s)
    return f"on {acc['samples']} held-out sample(s): " + "; ".join(parts)
