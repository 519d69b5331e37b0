"""Where the time goes: each kernel of an artifact timed, next to ONNX Runtime's time for its nodes.

deploy: the Relax VM's instrument hook times every call of ``main`` (kernels and VM built-ins);
each kernel call is named by the artifact's ``layers.json`` (the ONNX nodes it computes, its
schedule, layout and FLOPs). ONNX Runtime: its own profiler, per node. Each engine runs in a
process of its own (their thread pools slow each other in one), with the same inputs and
thread count; times are medians over ``runs`` inferences after a warm-up.
``profile_report.py`` turns the result into report.html and a PNG.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import layers, log
from ..backends import for_family
from ..frontend import provenance
from .bench import set_threads
from ..errors import DeployError
from ..procs import sigint_ignored_by_children
from .runtime import Artifact, inputs_for, read_npz

# the op a fused kernel is counted under in the per-op-type summary: the first of these it covers
ANCHORS = ("Conv", "ConvTranspose", "QLinearConv", "MatMul", "Gemm", "QLinearMatMul", "MatMulInteger",
           "ConvInteger", "Attention", "LSTM", "GRU", "RNN", "MaxPool", "AveragePool", "GlobalAveragePool",
           "LayerNormalization", "Softmax", "Resize", "Gather", "Einsum", "Gelu", "Erf")
# what an anchor is called in the per-op-type summary (erf is how exporters spell GELU)
ANCHOR_NAMES = {"Erf": "Gelu"}
# OpenVINO layer types under the ONNX op they compute, for layers not named after an ONNX node
OPENVINO_TYPES = {"Convolution": "Conv", "GroupConvolution": "Conv", "ConvolutionBackpropData": "ConvTranspose",
                  "FullyConnected": "MatMul"}
# ONNX Runtime's fused node types, counted under the ONNX op they start from
ORT_FUSED = {"FusedConv": "Conv", "FusedGemm": "Gemm", "FusedMatMul": "MatMul", "NhwcFusedConv": "Conv",
             "QuickGelu": "Gelu", "BiasGelu": "Gelu", "FastGelu": "Gelu", "SkipLayerNormalization": "LayerNormalization",
             "SimplifiedLayerNormalization": "LayerNormalization", "BiasSoftmax": "Softmax"}


def _deploy_child(path: str, threads: int, inputs_file: str, runs: int, warmup: int) -> dict:
    set_threads(threads)
    inputs = read_npz(inputs_file)
    art = Artifact(path)
    run = art.bind(inputs)
    for _ in range(warmup):
        run()
    calls: list[tuple[str, float]] = []
    start = [0.0]

    def instrument(func, symbol, before, ret, *args):
        now = time.perf_counter()
        if before:
            start[0] = now
        else:
            calls.append((str(symbol), now - start[0]))
        return 0

    # plain and instrumented inferences alternate, so that both see the same machine
    e2e = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run()
        e2e.append(time.perf_counter() - t0)
        art.set_instrument(instrument)
        run()
        art.set_instrument(None)
    n = len(calls) // runs
    seq = [(calls[j][0], float(np.median([calls[r * n + j][1] for r in range(runs)]))) for j in range(n)]
    # each instrumented run's calls summed, then the median: a sum of per-call medians reads low
    # where the machine is busy in bursts (each call's median picks its quiet runs)
    per_run = [sum(t for _, t in calls[r * n:(r + 1) * n]) for r in range(runs)]
    return {"e2e_ms": float(np.median(e2e)) * 1e3, "calls": [(s, t * 1e3) for s, t in seq],
            "run_calls_ms": float(np.median(per_run)) * 1e3}


def _ort_child(model: str, threads: int, inputs_file: str, runs: int, warmup: int) -> dict:
    import onnxruntime as ort

    from .reference import ort_session

    inputs = read_npz(inputs_file)
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.gettempdir()) / f"deploy-ort-profile-{os.getpid()}")
    sess = ort_session(Path(model), threads, options=so)
    feed = {i.name: inputs[i.name] for i in sess.get_inputs()}
    for _ in range(warmup):
        sess.run(None, feed)
    e2e = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        e2e.append(time.perf_counter() - t0)
    path = Path(sess.end_profiling())
    events = json.loads(path.read_text())
    path.unlink(missing_ok=True)
    times: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            times.setdefault(name, []).append(e["dur"] / 1e3)
            ops[name] = e.get("args", {}).get("op_name", "?")
    nodes = [{"name": k, "op_type": ops[k], "ms": float(np.median(v[-runs:]))} for k, v in times.items()]
    return {"e2e_ms": float(np.median(e2e)) * 1e3, "nodes": nodes}


def _openvino_child(model: str, threads: int, inputs_file: str, runs: int, warmup: int) -> dict:
    """OpenVINO's CPU plugin on the model (f32, latency hint, as ``deploy bench --against``) with its
    per-layer performance counters: each executed layer's median time and the type it ran as."""
    import openvino as ov

    from .bench import OPENVINO_CONFIG

    inputs = read_npz(inputs_file)
    core = ov.Core()
    m = core.read_model(model)
    m.reshape({i.get_any_name(): list(inputs[i.get_any_name()].shape) for i in m.inputs if i.get_any_name() in inputs})
    compiled = core.compile_model(m, "CPU", {**OPENVINO_CONFIG, "INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True})
    req = compiled.create_infer_request()
    feed = {i.get_any_name(): inputs[i.get_any_name()] for i in m.inputs if i.get_any_name() in inputs}
    for _ in range(warmup):
        req.infer(feed)
    e2e, times, types = [], {}, {}
    for _ in range(runs):
        t0 = time.perf_counter()
        req.infer(feed)
        e2e.append(time.perf_counter() - t0)
        for p in req.profiling_info:
            if str(p.status).endswith("EXECUTED"):
                times.setdefault(p.node_name, []).append(p.real_time.total_seconds() * 1e3)
                types[p.node_name] = p.node_type
    nodes = [{"name": k, "op_type": types[k], "ms": float(np.median(v))} for k, v in times.items()]
    return {"e2e_ms": float(np.median(e2e)) * 1e3, "nodes": nodes}


def _in_process(fn, *args):
    """Run ``fn(*args)`` in a fresh process (spawned: TVM in a forked process is not safe)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with sigint_ignored_by_children():  # Ctrl-C: this process ends the pool (procs.py)
        pool = ctx.Pool(1)
    with pool:
        try:
            return pool.apply(fn, args)
        except DeployError:
            raise
        except Exception as e:  # noqa: BLE001 - the child's error, as one message
            raise DeployError(f"profiling failed in {fn.__name__.strip('_').replace('_child', '')}: "
                              f"{type(e).__name__}: {str(e)[:300]}", hint="run with -v") from e


def check_profilable(art: Artifact) -> None:
    t = art.manifest["target"]
    if art.emulated or not for_family(t["family"]).host_timed or not for_family(t["family"]).runs_here(t):
        raise DeployError(
            f"deploy profile times kernels on this machine's CPU; '{t['preset']}' artifacts do not run natively here",
            hint="profile an x86-64 build of the model here, or run the bundle's runner on the board "
                 "(`deploy package`)")


def anchor(nodes: list) -> str:
    """The op a kernel is counted under: the first of ANCHORS it computes, else its first op that
    is not a reshape or transpose."""
    ops = [op for op, _ in nodes]
    for a in ANCHORS:
        if a in ops:
            return ANCHOR_NAMES.get(a, a)
    rest = [op for op in ops if op not in layers.SHAPE_OPS]
    return (rest or ops or ["?"])[0]


def profile(art: Artifact, model: Path | None = None, threads: int = 2, runs: int = 20, warmup: int = 5,
            inputs: dict[str, np.ndarray] | None = None, peers: tuple[str, ...] = ("onnxruntime",)) -> dict:
    """Per-kernel times of ``art`` (and, given ``model``, ONNX Runtime's per-node times, and
    OpenVINO's per-layer times where ``peers`` names it), joined on the ONNX nodes each kernel
    computes. Each engine runs in its own process."""
    check_profilable(art)
    art.check_integrity()
    if model is not None and not Path(model).is_file():
        raise DeployError(f"model {model} does not exist", hint="pass the .onnx file the artifact was compiled from")
    from ..frontend.tflite import is_tflite

    if model is not None and is_tflite(model):  # the peer's per-node times are ONNX Runtime's profiler's
        log.warn(f"{model}: a .tflite has no ONNX Runtime profile to set beside the kernels; deploy's kernels alone "
                 "(`deploy bench --model` times LiteRT end to end)")
        model = None
    inputs = inputs_for(art.inputs, inputs, art.dims, art.unused_inputs)
    layer_report = layers.read(art.path)
    with tempfile.TemporaryDirectory(prefix="deploy-profile-") as td:
        f = Path(td) / "inputs.npz"
        np.savez(f, **inputs)
        ours = _in_process(_deploy_child, str(art.path), threads, str(f), runs, warmup)
        theirs = _in_process(_ort_child, str(model), threads, str(f), runs, warmup) \
            if model and "onnxruntime" in peers else None
        ov = _in_process(_openvino_child, str(model), threads, str(f), runs, warmup) \
            if model and "openvino" in peers else None
    out = join(art, ours, theirs, layer_report, threads, runs, model)
    if ov is not None:
        add_openvino(out, ov, model)
    return out


def add_openvino(out: dict, ov: dict, model: Path) -> None:
    """OpenVINO's layers in the per-op-type summary: a layer named after an ONNX node counts under
    that node's op type, any other (layers its optimizer made) under OpenVINO's own type name."""
    names, onnx_ops = _onnx_names(model)
    by_op: dict[str, float] = {}
    matched = 0
    for n in ov["nodes"]:
        onnx_name = provenance.original_node(n["name"], names)
        op = onnx_ops.get(onnx_name) if onnx_name else None
        matched += op is not None
        op = ANCHOR_NAMES.get(op, op) if op else OPENVINO_TYPES.get(n["op_type"], n["op_type"])
        by_op[op] = by_op.get(op, 0.0) + n["ms"]
    types = {t["op_type"]: t for t in out["op_types"]}
    for op, ms in by_op.items():
        types.setdefault(op, {"op_type": op, "deploy_ms": 0.0, "onnxruntime_ms": 0.0, "deploy_kernels": 0})
        types[op]["openvino_ms"] = ms
    out["op_types"] = sorted(types.values(), key=lambda s: -max(s["deploy_ms"], s["onnxruntime_ms"],
                                                                s.get("openvino_ms", 0.0)))
    out["openvino"] = {"e2e_ms": ov["e2e_ms"], "layers_ms": sum(n["ms"] for n in ov["nodes"]), "layers": ov["nodes"],
                       "matched_layers": matched, "total_layers": len(ov["nodes"])}


def join(art: Artifact, ours: dict, theirs: dict | None, layer_report: dict | None, threads: int, runs: int,
         model: Path | None) -> dict:
    sites: dict[str, list[dict]] = {}
    for k in (layer_report or {}).get("kernels", []):
        sites.setdefault(k["kernel"], []).append(k)
    seen: dict[str, int] = {}
    rows, builtins_ms = [], 0.0
    for symbol, ms in ours["calls"]:
        if symbol not in sites and (symbol.startswith("vm.") or layer_report is not None):
            builtins_ms += ms
            continue
        i = seen.get(symbol, 0)
        seen[symbol] = i + 1
        info = sites.get(symbol, [{}])
        site = info[i] if i < len(info) else info[-1]
        row = {"kernel": symbol, "call": i, "ms": ms, "nodes": site.get("nodes", []),
               "schedule": site.get("schedule"), "layouts": site.get("layouts", []), "flops": site.get("flops")}
        if row["flops"]:
            row["gflops_per_s"] = row["flops"] / (ms * 1e-3) / 1e9 if ms > 0 else None
        rows.append(row)
    kernels_ms = sum(r["ms"] for r in rows)
    for r in rows:
        r["share"] = r["ms"] / kernels_ms if kernels_ms else 0.0
        r["op_type"] = anchor(r["nodes"])
    out = {"artifact": str(art.path), "target": art.target, "threads": threads, "runs": runs,
           "model": str(model) if model else None,
           "deploy": {"e2e_ms": ours["e2e_ms"], "kernels_ms": kernels_ms, "builtins_ms": builtins_ms,
                      "run_calls_ms": ours.get("run_calls_ms"),
                      "kernel_calls": len(rows), "kernels": rows},
           "node_names": layer_report is not None}
    summary: dict[str, dict] = {}

    def op_entry(op: str) -> dict:
        return summary.setdefault(op, {"op_type": op, "deploy_ms": 0.0, "onnxruntime_ms": 0.0, "deploy_kernels": 0})

    for r in rows:
        op_entry(r["op_type"])["deploy_ms"] += r["ms"]
        op_entry(r["op_type"])["deploy_kernels"] += 1
    if theirs is not None:
        names, onnx_ops = _onnx_names(model)
        ort_ms: dict[str, float] = {}  # ONNX node -> ORT's time for it
        for n in theirs["nodes"]:
            onnx_name = provenance.original_node(n["name"], names)
            if onnx_name is not None:
                n["onnx_node"] = onnx_name
                ort_ms[onnx_name] = ort_ms.get(onnx_name, 0.0) + n["ms"]
        # an ONNX node's ORT time goes to the slowest deploy kernel computing it, preferring one
        # that computes the node itself over one that reshapes around it
        owner: dict[str, dict] = {}
        rank: dict[str, tuple] = {}
        for r in rows:
            for op, name in r["nodes"]:
                key = (op not in layers.SHAPE_OPS, r["ms"])
                if name in ort_ms and (name not in owner or rank[name] < key):
                    owner[name], rank[name] = r, key
        for r in rows:
            r["onnxruntime_ms"] = 0.0
        for name, r in owner.items():
            r["onnxruntime_ms"] += ort_ms[name]
        for n in theirs["nodes"]:
            # counted under the op of the model's node it stands for (ORT's Gemm from MatMul + Add is a MatMul)
            op = onnx_ops.get(n.get("onnx_node")) or ORT_FUSED.get(n["op_type"], n["op_type"])
            op_entry(ANCHOR_NAMES.get(op, op))["onnxruntime_ms"] += n["ms"]
        out["onnxruntime"] = {"e2e_ms": theirs["e2e_ms"], "nodes_ms": sum(n["ms"] for n in theirs["nodes"]),
                              "nodes": theirs["nodes"],
                              "matched_nodes": sum(1 for n in theirs["nodes"] if n.get("onnx_node") in owner),
                              "matched_ms": sum(n["ms"] for n in theirs["nodes"] if n.get("onnx_node") in owner),
                              "total_nodes": len(theirs["nodes"])}
    out["op_types"] = sorted(summary.values(), key=lambda s: -max(s["deploy_ms"], s["onnxruntime_ms"]))
    return out


def _onnx_names(model: Path | None) -> tuple[dict[str, str], dict[str, str]]:
    """The model's name index (provenance.name_index) and each node's op type."""
    import onnx

    if model is None:
        return {}, {}
    graph = onnx.load(str(model), load_external_data=False).graph
    return provenance.name_index(graph), provenance.node_ops(graph)


# -- terminal output


def _console():
    from rich.console import Console

    return Console(highlight=False, width=200)


def print_profile(result: dict, top: int = 15) -> None:
    from rich.markup import escape
    from rich.table import Table

    d = result["deploy"]
    o = result.get("onnxruntime")
    rows = sorted(d["kernels"], key=lambda r: -r["ms"])
    t = Table(title=f"top {min(top, len(rows))} of {len(rows)} kernel calls ({result['threads']} threads, "
                    f"medians of {result['runs']} runs)", title_justify="left")
    for col, just in (("#", "right"), ("kernel", "left"), ("ms", "right"), ("share", "right"),
                      ("GFLOP/s", "right"), ("ONNX nodes", "left"), ("schedule", "left")):
        t.add_column(col, justify=just)
    if o:
        t.add_column("ORT ms", justify="right")
    for i, r in enumerate(rows[:top], 1):
        g = r.get("gflops_per_s")
        cells = [str(i), escape(r["kernel"]), f"{r['ms']:.3f}", f"{100 * r['share']:.1f}%",
                 f"{g:.1f}" if g else "-", escape(layers.node_text(r["nodes"])), escape(r.get("schedule") or "-")]
        if o:
            cells.append(f"{r['onnxruntime_ms']:.3f}" if r.get("onnxruntime_ms") else "-")
        t.add_row(*cells)
    con = _console()
    con.print(t)
    s = Table(title="by op type (a fused kernel counts under its main op)", title_justify="left")
    v = result.get("openvino")
    for col in ("op type", "deploy ms", "kernels") + (("ORT ms", "ratio") if o else ()) + (("OpenVINO ms", "ratio ") if v else ()):
        s.add_column(col, justify="left" if col == "op type" else "right")
    for r in result["op_types"][:top]:
        cells = [escape(r["op_type"]), f"{r['deploy_ms']:.3f}", str(r["deploy_kernels"])]
        if o:
            ratio = r["deploy_ms"] / r["onnxruntime_ms"] if r["onnxruntime_ms"] else None
            cells += [f"{r['onnxruntime_ms']:.3f}", f"{ratio:.2f}x" if ratio else "-"]
        if v:
            ov_ms = r.get("openvino_ms")
            cells += [f"{ov_ms:.3f}" if ov_ms else "-", f"{r['deploy_ms'] / ov_ms:.2f}x" if ov_ms and r["deploy_ms"] else "-"]
        s.add_row(*cells)
    con.print(s)
    cover = d["kernels_ms"] / d["e2e_ms"] if d["e2e_ms"] else 0
    con.print(f"deploy: kernels {d['kernels_ms']:.3f} ms + VM built-ins {d['builtins_ms']:.3f} ms; end to end "
              f"{d['e2e_ms']:.3f} ms (kernels {100 * cover:.0f}% of it)")
    if o:
        con.print(f"onnxruntime: nodes {o['nodes_ms']:.3f} ms; end to end {o['e2e_ms']:.3f} ms; "
                  f"{o['matched_nodes']} of {o['total_nodes']} of its nodes ({o['matched_ms']:.3f} ms) matched to deploy "
                  "kernels by name (the others are nodes its optimizer made, counted by op type)")
    if v:
        con.print(f"openvino: layers {v['layers_ms']:.3f} ms; end to end {v['e2e_ms']:.3f} ms; {v['matched_layers']} of "
                  f"{v['total_layers']} executed layers named after an ONNX node (the others counted by OpenVINO's type)")
    if not result["node_names"]:
        con.print("note: this artifact has no layers.json (built by an older deploy): recompile it to see the "
                  "ONNX nodes of each kernel")


def print_layers(artifact: Path) -> None:
    """The layer report of an artifact: each kernel call, its ONNX nodes, schedule, layout, GFLOP."""
    from rich.markup import escape
    from rich.table import Table

    report = layers.read(artifact)
    if report is None:
        raise DeployError(f"{artifact} has no {layers.LAYERS}", hint="recompile it with this version of deploy")
    kernels = report["kernels"]
    t = Table(title=f"{len(kernels)} kernel calls in {artifact}", title_justify="left")
    for col in ("#", "kernel", "ONNX nodes", "schedule", "layout", "GFLOP"):
        t.add_column(col, justify="right" if col in ("#", "GFLOP") else "left")
    for i, k in enumerate(kernels, 1):
        t.add_row(str(i), escape(k["kernel"]), escape(layers.node_text(k["nodes"], limit=4)), escape(k["schedule"]),
                  escape(",".join(k.get("layouts") or []) or "-"),
                  f"{k['flops'] / 1e9:.3f}" if k.get("flops") else "-")
    con = _console()
    con.print(t)
    by: dict[str, int] = {}
    for k in kernels:
        by[k["schedule"]] = by.get(k["schedule"], 0) + 1
    con.print("schedules: " + ", ".join(f"{v} {escape(k)}" for k, v in sorted(by.items(), key=lambda x: -x[1])))
