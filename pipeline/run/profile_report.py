"""The profile as files: report.html, profile.png and profile.json.

report.html is one self-contained page (charts as inline SVG, the kernel and op-type tables);
profile.png holds the same charts, for CI logs.

The charts are drawn with matplotlib (Agg, no display needed): a sorted bar chart of the
slowest kernels, deploy next to ONNX Runtime's time for the same nodes, and deploy against ONNX
Runtime per op type.
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path

from .. import layers
from ..files import write_text

DEPLOY_COLOR = "#1f77b4"
ORT_COLOR = "#ff7f0e"
FILES = ("report.html", "profile.png", "profile.json")


def _figure(result: dict, top: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(result["deploy"]["kernels"], key=lambda r: -r["ms"])[:top]
    ort = "onnxruntime" in result
    types = result["op_types"][:top]
    fig, (a, b) = plt.subplots(2, 1, figsize=(11, 0.32 * (len(rows) + len(types)) + 3.2),
                               gridspec_kw={"height_ratios": [max(len(rows), 1), max(len(types), 1)]})
    def label(r):
        main = [n for n in r["nodes"] if n[0] == r["op_type"]] or r["nodes"]
        more = f" +{len(r['nodes']) - 1}" if len(r["nodes"]) > 1 else ""
        node = f"{main[0][0]} {main[0][1]}"[:44] if main else "-"
        return f"{r['kernel'][:36]}  ({node}{more})"

    labels = [label(r) for r in rows][::-1]
    y = list(range(len(rows)))
    h = 0.4 if ort else 0.7
    a.barh([i + (h / 2 if ort else 0) for i in y], [r["ms"] for r in rows][::-1], height=h, color=DEPLOY_COLOR,
           label="deploy", gid="deploy-kernels")
    if ort:
        a.barh([i - h / 2 for i in y], [r.get("onnxruntime_ms", 0.0) for r in rows][::-1], height=h,
               color=ORT_COLOR, label="ONNX Runtime (same nodes)", gid="ort-kernels")
    a.set_yticks(y, labels, fontsize=8)
    a.set_xlabel("ms per inference (median)")
    a.set_title(f"slowest {len(rows)} of {result['deploy']['kernel_calls']} kernel calls: {result['target']}, "
                f"{result['threads']} threads", fontsize=10)
    a.legend(loc="lower right", fontsize=8)
    ty = list(range(len(types)))
    b.barh([i + (h / 2 if ort else 0) for i in ty], [t["deploy_ms"] for t in types][::-1], height=h,
           color=DEPLOY_COLOR, label="deploy", gid="deploy-ops")
    if ort:
        b.barh([i - h / 2 for i in ty], [t["onnxruntime_ms"] for t in types][::-1], height=h, color=ORT_COLOR,
               label="ONNX Runtime", gid="ort-ops")
    b.set_yticks(ty, [t["op_type"] for t in types][::-1], fontsize=8)
    b.set_xlabel("ms per inference, by op type")
    b.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig, plt


def _table(head: list[str], rows: list[list]) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def render_html(result: dict, svg: str) -> str:
    d = result["deploy"]
    o = result.get("onnxruntime")
    kernels = sorted(d["kernels"], key=lambda r: -r["ms"])
    head = ["#", "kernel", "ms", "share", "GFLOP/s", "ONNX nodes", "schedule", "layout"] + (["ORT ms"] if o else [])
    rows = []
    for i, r in enumerate(kernels, 1):
        g = r.get("gflops_per_s")
        row = [i, r["kernel"], f"{r['ms']:.4f}", f"{100 * r['share']:.1f}%", f"{g:.1f}" if g else "-",
               layers.node_text(r["nodes"], limit=8), r.get("schedule") or "-", ",".join(r.get("layouts") or []) or "-"]
        if o:
            row.append(f"{r['onnxruntime_ms']:.4f}" if r.get("onnxruntime_ms") else "-")
        rows.append(row)
    op_head = ["op type", "deploy ms", "deploy kernels"] + (["ORT ms", "ratio"] if o else [])
    op_rows = []
    for t in result["op_types"]:
        row = [t["op_type"], f"{t['deploy_ms']:.4f}", t["deploy_kernels"]]
        if o:
            row += [f"{t['onnxruntime_ms']:.4f}",
                    f"{t['deploy_ms'] / t['onnxruntime_ms']:.2f}x" if t["onnxruntime_ms"] else "-"]
        op_rows.append(row)
    summary = (f"deploy: kernels {d['kernels_ms']:.3f} ms + VM built-ins {d['builtins_ms']:.3f} ms; end to end "
               f"{d['e2e_ms']:.3f} ms")
    if o:
        summary += (f". ONNX Runtime: end to end {o['e2e_ms']:.3f} ms, its nodes {o['nodes_ms']:.3f} ms "
                    f"({o['matched_nodes']} of {o['total_nodes']} nodes matched by name)")
    title = f"deploy profile: {Path(result['artifact']).name}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; font-size: 12px; margin-bottom: 2em; }}
th, td {{ border: 1px solid #ccc; padding: 2px 6px; text-align: left; }}
th {{ background: #f0f0f0; }}
#chart svg {{ max-width: 100%; height: auto; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(result['target'])}, {result['threads']} threads, medians of {result['runs']} inferences.
{html.escape(summary)}.</p>
<div id="chart">{svg}</div>
<h2>Kernels</h2>
{_table(head, rows)}
<h2>By op type</h2>
<p>A fused kernel counts under its main op (convolution, matmul, ...); ONNX Runtime's fused nodes under the op they start from.</p>
{_table(op_head, op_rows)}
</body></html>
"""


def write_report(result: dict, out: Path, top: int = 15) -> list[Path]:
    """report.html, profile.png and profile.json in ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig, plt = _figure(result, top)
    try:
        buf = io.StringIO()
        fig.savefig(buf, format="svg")
        svg = buf.getvalue()
        svg = svg[svg.index("<svg"):]
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=100)
    finally:
        plt.close(fig)
    paths = [out / f for f in FILES]
    write_text(paths[0], render_html(result, svg))
    tmp = paths[1].with_name(f".{paths[1].name}.tmp")
    tmp.write_bytes(png.getvalue())
    tmp.replace(paths[1])
    write_text(paths[2], json.dumps(result, indent=2))
    return paths
