"""Where the time goes: the layer report (layers.json, compile --report), deploy profile (per-kernel
times named by ONNX nodes, next to ONNX Runtime's), its HTML report rendered in headless Chromium."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_module, needs_program
import torch

import pipeline
from zoo import torch_models as tm
from pipeline import layers
from pipeline.run.profile import print_profile, profile
from pipeline.run.profile_report import DEPLOY_COLOR, ORT_COLOR, write_report


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A torch-exported resnet18 and a BERT-style encoder (2 blocks, d=256, seq 128), compiled for this CPU."""
    d = tmp_path_factory.mktemp("profile")
    out = {}
    r18 = tm.export(tm.resnet18(), torch.randn(1, 3, 224, 224), d / "resnet18.onnx")
    out["resnet18"] = (pipeline.compile(r18, "x86-64", output=d / "resnet18-x86"), r18)
    torch.manual_seed(0)
    enc = tm.export(tm.MiniLMEncoder(layers=2, d=256, heads=4, ff=1024).eval(), torch.randn(1, 128, 256),
                    d / "encoder.onnx")
    out["encoder"] = (pipeline.compile(enc, "x86-64", output=d / "encoder-x86"), enc)
    return out


def test_layer_report_names_nodes_schedules_and_layouts(built):
    art, model = built["resnet18"]
    report = layers.read(art.path)
    kernels = report["kernels"]
    assert kernels and all(k["nodes"] for k in kernels), [k for k in kernels if not k["nodes"]]
    import onnx

    names = {n.name for n in onnx.load(str(model)).graph.node}
    covered = {name for k in kernels for _, name in k["nodes"]}
    assert covered <= names
    convs = {n.name for n in onnx.load(str(model)).graph.node if n.op_type == "Conv"}
    assert convs <= covered, convs - covered  # every convolution is named by the kernel computing it
    # repeated blocks share a kernel but each call names its own block's nodes
    by_kernel: dict[str, list] = {}
    for k in kernels:
        by_kernel.setdefault(k["kernel"], []).append(tuple(map(tuple, k["nodes"])))
    assert any(len(v) > 1 and len(set(v)) == len(v) for v in by_kernel.values())
    assert {k["schedule"] for k in kernels} <= {"default: ConvMatmul", "default: Winograd", "default: Injective",
                                                "default: Reduction", "default: Parallel", "default: GEMV", "default: Gemv"}
    assert any("NHWC" in k["layouts"] for k in kernels)
    assert any(k.get("flops", 0) > 1e8 for k in kernels)
    mem = art.manifest["memory"]
    assert 40e6 < mem["params_bytes"] < 60e6  # resnet18: 11.7 M float32 weights
    assert mem["workspace_bytes"] > 0


def test_compile_report_prints_the_layer_table(cli, models, tmp_path):
    rc, out, err = cli("compile", models / "cnn.onnx", "-t", "x86-64", "-o", tmp_path / "a", "--report")
    assert rc == 0, err
    assert "kernel calls in" in out and "Conv" in out and "default: ConvMatmul" in out and "schedules:" in out


@pytest.mark.parametrize("name", ["resnet18", "encoder"])
def test_profile_kernels_sum_to_latency_and_name_nodes(built, name, tmp_path, capsys):
    art, model = built[name]
    result = profile(art, model, threads=2, runs=20)
    d = result["deploy"]
    assert d["kernels"] and all(r["nodes"] for r in d["kernels"]), [r["kernel"] for r in d["kernels"] if not r["nodes"]]
    # an inference's calls (kernels and VM built-ins, summed per run) account for its latency; the
    # per-kernel medians never add up to more (a kernel counted twice would)
    assert abs(d["run_calls_ms"] - d["e2e_ms"]) <= 0.10 * d["e2e_ms"], (d["run_calls_ms"], d["e2e_ms"])
    assert d["kernels_ms"] <= 1.05 * d["run_calls_ms"], (d["kernels_ms"], d["run_calls_ms"])
    assert abs(sum(r["share"] for r in d["kernels"]) - 1) < 1e-6
    o = result["onnxruntime"]
    assert o["e2e_ms"] > 0 and o["matched_ms"] >= 0.5 * o["nodes_ms"], o  # most of ORT's time is joined by node
    assert any(r.get("onnxruntime_ms") for r in d["kernels"])
    top = {t["op_type"] for t in result["op_types"][:2]}
    assert top & {"Conv", "MatMul", "Gemm"}
    assert any(r.get("gflops_per_s") for r in d["kernels"])
    print_profile(result, top=10)
    out = capsys.readouterr().out
    assert "kernel calls" in out and "by op type" in out and "ORT ms" in out
    files = write_report(result, tmp_path / "report")
    assert [f.name for f in files] == ["report.html", "profile.png", "profile.json"]
    assert json.loads(files[2].read_text())["deploy"]["kernel_calls"] == d["kernel_calls"]
    html = files[0].read_text()
    assert "<svg" in html and "Kernels" in html and "by op type" in html.lower()
    assert 'id="deploy-kernels' in html and 'id="ort-kernels' in html
    if name == "resnet18":
        built["profile_html"] = files[0]


def _bar_pixels(png: Path, color: str) -> int:
    import matplotlib.image as mpimg

    img = mpimg.imread(str(png))[..., :3]
    rgb = np.array([int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(img - rgb).max(axis=-1) < 0.03).sum())


def test_profile_png_has_both_engines_bars(built, tmp_path):
    art, model = built["encoder"]
    files = write_report(profile(art, model, runs=5), tmp_path)
    assert _bar_pixels(files[1], DEPLOY_COLOR) > 1000 and _bar_pixels(files[1], ORT_COLOR) > 1000


@needs_program("chromium")
def test_html_report_renders_in_headless_chromium(built, tmp_path):
    html = built.get("profile_html")
    if html is None:
        art, model = built["resnet18"]
        html = write_report(profile(art, model, runs=5), tmp_path / "r")[0]
    shot = tmp_path / "shot.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}",
           "--window-size=1200,1400", html.resolve().as_uri()]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    # the chart is drawn: the page shows both engines' bar colors over many pixels
    assert _bar_pixels(shot, DEPLOY_COLOR) > 2000 and _bar_pixels(shot, ORT_COLOR) > 2000
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", html.resolve().as_uri()],
                         check=True, timeout=120, capture_output=True, text=True).stdout
    assert "<svg" in dom and "deploy-kernels" in dom


def test_profile_cli_writes_the_report(cli, models, tmp_path):
    art = pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path / "cnn")
    rc, out, err = cli("profile", art.path, "--model", models / "cnn.onnx", "--runs", "5", "-o", tmp_path / "rep")
    assert rc == 0, err
    assert "kernel calls" in out and "wrote" in out
    assert (tmp_path / "rep" / "report.html").is_file() and (tmp_path / "rep" / "profile.png").stat().st_size > 1000


def test_profile_names_a_missing_model(cli, models, tmp_path):
    art = pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path / "cnn")
    rc, _, err = cli("profile", art.path, "--model", tmp_path / "gone.onnx")
    assert rc == 2 and "gone.onnx does not exist" in err and "Traceback" not in err


def test_profile_refuses_an_arm_artifact(cli, models, tmp_path):
    art = pipeline.compile(models / "cnn.onnx", "rpi4", output=tmp_path / "rpi4")
    rc, out, err = cli("profile", art.path)
    assert rc == 2 and "do not run natively here" in err


def test_profile_against_openvino_adds_its_layers_per_op_type(cli, models, tmp_path):
    """--against ort,openvino: OpenVINO's CPU plugin profiled in its own process, its executed layers'
    times summed per ONNX op type beside deploy's kernels and ONNX Runtime's nodes."""
    needs_module("openvino")
    art = pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path / "cnn")
    rc, out, err = cli("profile", art.path, "--model", models / "cnn.onnx", "--runs", "3", "--against", "ort,openvino",
                       "-o", tmp_path / "rep", "--json")
    assert rc == 0, err
    r = json.loads(out[out.index("{"):])
    ov = r["openvino"]
    assert ov["e2e_ms"] > 0 and ov["total_layers"] > 0 and ov["layers_ms"] == pytest.approx(
        sum(n["ms"] for n in ov["layers"]))
    conv = next(t for t in r["op_types"] if t["op_type"] == "Conv")
    assert conv["deploy_ms"] > 0 and conv["openvino_ms"] > 0  # OpenVINO's Convolution layers counted as Conv
    assert r["onnxruntime"]["e2e_ms"] > 0
    rc, out, err = cli("profile", art.path, "--model", models / "cnn.onnx", "--runs", "2", "--against", "openvino",
                       "-o", tmp_path / "rep2")
    assert rc == 0, err
    assert "openvino: layers" in out and "onnxruntime:" not in out
    rc, _, err = cli("profile", art.path, "--against", "openvino")
    assert rc == 2 and "--model" in err
