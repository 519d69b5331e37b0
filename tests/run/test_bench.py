"""deploy bench (pipeline/run/bench.py): latency percentiles, throughput and memory beside ONNX Runtime,
and OpenVINO as a second peer."""

import json
import sys

import pytest
from conftest import needs_module

import pipeline


def test_bench_json_has_percentiles_throughput_and_memory(cli, models, tmp_path):
    art = pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path / "cnn")
    rc, out, err = cli("bench", art.path, "--model", models / "cnn.onnx", "--repeat", "3", "--seconds", "0.4",
                       "--concurrency", "2", "--json")
    assert rc == 0, err
    r = json.loads(out)
    for engine in ("deploy", "onnxruntime"):
        assert {"median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms"} <= set(r[engine])
        assert r["memory"][engine]["peak_rss_mb"] > 0
        assert r["throughput"][engine]["per_second"] > 0 and r["throughput"][engine]["concurrency"] == 2
    assert r["memory"]["deploy"]["workspace_mb"] > 0 and r["memory"]["deploy"]["params_mb"] > 0
    assert r["ratio"] == pytest.approx(r["deploy"]["median_ms"] / r["onnxruntime"]["median_ms"])
    assert r["throughput"]["ratio"] == pytest.approx(
        r["throughput"]["onnxruntime"]["per_second"] / r["throughput"]["deploy"]["per_second"])
    rc, out, err = cli("bench", art.path, "--model", models / "cnn.onnx", "--iterations", "12", "--repeat", "3",
                       "--concurrency", "2")
    assert rc == 0, err
    assert "inferences/s with 2 in flight" in out and "workspace" in out and "(12 inferences" in out


def test_bench_against_openvino_too(cli, models, tmp_path, monkeypatch):
    """--against ort,openvino times OpenVINO's CPU plugin (f32, latency hint) in a third process:
    its percentiles, memory, deploy's ratio to it and to the faster peer."""
    needs_module("openvino")
    art = pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path / "cnn")
    rc, out, err = cli("bench", art.path, "--model", models / "cnn.onnx", "--repeat", "3", "--seconds", "0.3",
                       "--against", "ort,openvino", "--concurrency", "2", "--json")
    assert rc == 0, err
    r = json.loads(out)
    for engine in ("deploy", "onnxruntime", "openvino"):
        assert r[engine]["median_ms"] > 0 and r["memory"][engine]["peak_rss_mb"] > 0
        assert r["throughput"][engine]["per_second"] > 0
    assert r["ratios"]["openvino"] == pytest.approx(r["deploy"]["median_ms"] / r["openvino"]["median_ms"])
    fastest = min(("onnxruntime", "openvino"), key=lambda p: r[p]["median_ms"])
    assert r["fastest_peer"] == {"engine": fastest, "ratio": r["ratios"][fastest]}
    rc, out, err = cli("bench", art.path, "--model", models / "cnn.onnx", "--iterations", "6", "--repeat", "2",
                       "--against", "openvino")
    assert rc == 0, err
    assert "openvino " in out and "vs openvino" in out and "vs the fastest peer (openvino)" in out
    assert "onnxruntime" not in out
    rc, _, err = cli("bench", art.path, "--model", models / "cnn.onnx", "--against", "tensorrt")
    assert rc == 2 and "unknown engine 'tensorrt'" in err
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    rc, _, err = cli("bench", art.path, "--model", models / "cnn.onnx", "--against", "ort,openvino")
    assert rc == 2 and "OpenVINO is not installed" in err and "pip install 'deploy[peers]'" in err
