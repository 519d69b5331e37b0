"""`deploy build --shard K/N` and `deploy build-merge`: a matrix split over CI runners, combined again."""

import json
import os
import random
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import onnx
import pytest

from pipeline import examples
from pipeline.ci import merge as merge_mod
from pipeline.ci.config import Entry, load_config
from pipeline.ci.shard import BASE_COST, assign, entry_cost, parse_shard, shard_info
from test_matrix import sums, write_config

ROOT = Path(__file__).resolve().parents[2]
MODELS = {"cnn": 'path = "cnn.onnx"\ninput_shapes = { image = [1, 3, 32, 32] }\nprecisions = ["fp32", "fp16"]',
          "mlp": 'path = "mlp.onnx"', "mlp2": 'path = "mlp2.onnx"'}
NAMES = {"cnn-x86-64", "cnn-x86-64-fp16", "mlp-x86-64", "mlp2-x86-64"}


def small_project(d: Path, models=MODELS) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    onnx.save(examples.tiny_cnn(), d / "cnn.onnx")
    onnx.save(examples.tiny_mlp(), d / "mlp.onnx")
    onnx.save(examples.tiny_mlp(features=16, seed=3), d / "mlp2.onnx")
    return write_config(d, models, targets=["x86-64"])


def test_split_is_cost_balanced_and_deterministic():
    costs = {"big": 100, **{c: 10 for c in "abcdef"}}
    assert assign(costs, 2) == [["big"], list("abcdef")]  # by cost, not by count
    assert assign(costs, 3) == [["big"], ["a", "c", "e"], ["b", "d", "f"]]
    items = list(costs.items())
    for seed in range(5):  # the order entries come in changes nothing
        random.Random(seed).shuffle(items)
        assert assign(dict(items), 3) == assign(costs, 3)
    assert assign({"a": 5, "b": 5}, 4) == [["a"], ["b"], [], []]  # more shards than entries: some empty
    rng = random.Random(0)
    costs = {f"e{i}": rng.randint(1, 300) for i in range(40)}
    shards = assign(costs, 3)
    assert sorted(n for s in shards for n in s) == sorted(costs)  # each entry in exactly one shard
    loads = [sum(costs[n] for n in s) for s in shards]
    assert max(loads) - min(loads) <= max(costs.values())  # greedy LPT's bound


def test_cost_estimate_weighs_model_precision_and_target(tmp_path):
    onnx.save(examples.tiny_cnn(), tmp_path / "cnn.onnx")
    onnx.save(examples.tiny_mlp(), tmp_path / "mlp.onnx")

    def cost(model="cnn", target="x86-64", **kw):
        return entry_cost(Entry(name="e", model_name=model, model=tmp_path / f"{model}.onnx", target=target,
                                preset=target, **kw))

    base = cost()
    assert base > cost("mlp") > BASE_COST  # more nodes
    assert cost(precision="int8") > cost(precision="fp16") > base
    assert cost(target="rpi4") > base and cost(target="cuda-sm86") > base
    assert cost(db=tmp_path / "db") > base
    assert cost("missing") == BASE_COST  # the build reports the missing file; the split still works
    assert cost() == base  # the same answer every time


def test_every_runner_computes_the_same_split(tmp_path):
    """Each shard is chosen without the others: the K's partition the entries, whatever the config's order."""
    cfg = load_config(small_project(tmp_path / "a"))
    reordered = dict(reversed(list(MODELS.items())))
    cfg2 = load_config(small_project(tmp_path / "b", reordered))
    plans = [[shard_info(c, c.entries, k, 3, None)["entries"] for k in (1, 2, 3)] for c in (cfg, cfg2)]
    assert plans[0] == plans[1]
    assert sorted(n for s in plans[0] for n in s) == sorted(NAMES) and all(plans[0])


@pytest.mark.parametrize("bad", ["0/3", "4/3", "x", "1/0", "2"])
def test_bad_shard_values_are_user_errors(tmp_path, cli, bad):
    cfg = small_project(tmp_path)
    rc, _, err = cli("build", cfg, "--shard", bad)
    assert rc == 2 and err.count("error:") == 1 and "fix:" in err and "K/N" in err and "Traceback" not in err
    assert not (tmp_path / "artifacts").exists()  # refused before anything was built
    with pytest.raises(Exception, match=r"K must be from 1 to 3"):
        parse_shard("4/3")


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """One config of 4 x86-64 entries, built once whole and once as 3 shards into 3 directories."""
    from pipeline.cli import _main

    d = tmp_path_factory.mktemp("sharded")
    cfg = small_project(d)

    def run(*args):
        try:
            return _main([str(a) for a in args])
        except SystemExit as e:
            return e.code or 0

    assert run("build", cfg, "--no-verify", "-o", d / "whole") == 0
    for k in (1, 2, 3):  # shard 1 verifies against ONNX Runtime, the others skip it for speed
        verify = [] if k == 1 else ["--no-verify"]
        assert run("build", cfg, "--shard", f"{k}/3", "-o", d / f"s{k}", "--junit", d / f"s{k}.xml", *verify) == 0
    return d, cfg


def test_shards_merge_into_the_unsharded_build(sharded, cli):
    d, cfg = sharded
    owned = []
    for k in (1, 2, 3):
        info = json.loads((d / f"s{k}/index.json").read_text())["shard"]
        assert (info["index"], info["count"], info["total"]) == (k, 3, 4) and info["entries"]  # each has work
        assert len(info["config_sha256"]) == 64 and info["versions"]["tvm"]
        assert set(json.loads((d / f"s{k}/index.json").read_text())["entries"]) == set(info["entries"])
        subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=d / f"s{k}", check=True)
        props = {p.get("name"): p.get("value") for p in ET.parse(d / f"s{k}.xml").getroot().iter("property")}
        assert props["shard"] == f"{k}/3" and props["config_sha256"] == info["config_sha256"]
        assert props["version.tvm"] == info["versions"]["tvm"]
        owned += info["entries"]
    assert sorted(owned) == sorted(NAMES)
    verified = json.loads((d / "s1/index.json").read_text())["entries"]
    assert all(e["verification"]["status"] == "passed" for e in verified.values())

    rc, stdout, err = cli("build-merge", d / "s1", d / "s2", d / "s3", "-o", d / "merged", "--json",
                          "--junit", d / "merged.xml")
    assert rc == 0, err
    out = d / "merged"
    assert (out / "SHA256SUMS").read_bytes() == (d / "whole/SHA256SUMS").read_bytes()
    assert len(sums(out)) >= 8  # library and manifest of every entry at least
    subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=out, check=True)
    index = json.loads((out / "index.json").read_text())
    assert set(index["entries"]) == NAMES and "shard" not in index
    assert index["merged"]["count"] == 3 and set(index["merged"]["shards"]) == {"1/3", "2/3", "3/3"}
    summary = json.loads(stdout)
    assert summary["counts"]["total"] == 4 and summary["counts"]["failed"] == 0 and summary["ok"]
    assert summary["merged"]["config_sha256"] == index["merged"]["config_sha256"]
    suite = ET.parse(d / "merged.xml").getroot().find("testsuite")
    assert suite.get("tests") == "4" and {c.get("name") for c in suite.iter("testcase")} == NAMES
    assert not [p for p in d.iterdir() if ".partial-" in p.name]


def _copy_shard(d: Path, k: int, name: str, edit=None) -> Path:
    dst = d / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(d / f"s{k}", dst)
    if edit:
        index = json.loads((dst / "index.json").read_text())
        edit(index)
        (dst / "index.json").write_text(json.dumps(index))
    return dst


def test_merge_refuses_shards_that_do_not_belong_together(sharded, cli, tmp_path):
    d, cfg = sharded
    s1, s2, s3 = (d / f"s{k}" for k in (1, 2, 3))
    out = tmp_path / "merged"

    def refused(*dirs, want):
        rc, stdout, err = cli("build-merge", *dirs, "-o", out)
        assert rc == 2 and want in err and "fix:" in err and "Traceback" not in err, err
        assert not out.exists() and not list(tmp_path.glob(".merged.*"))  # nothing half-written
        return err

    err = refused(s1, s3, want="shard 2/3 missing: given 1/3, 3/3")
    assert "--shard K/3" in err
    refused(s1, s2, s3, s1, want="shard 1/3 is given twice")
    # shard 2 built again from an edited config (a comment: the same entries, cached, another config)
    other = tmp_path / "deploy.toml"
    other.write_text(cfg.read_text().replace("[build]", "# edited\n[build]"))
    for p in ("cnn.onnx", "mlp.onnx", "mlp2.onnx"):
        shutil.copy(d / p, tmp_path / p)
    s2_other = _copy_shard(d, 2, "s2-other")
    rc, _, err = cli("build", other, "--shard", "2/3", "-o", s2_other, "--no-verify")
    assert rc == 0, err
    refused(s1, s2_other, s3, want=f"shard 2/3 ({s2_other}) was built from another config than shard 1/3 ({s1})")
    s3_tvm = _copy_shard(d, 3, "s3-tvm", lambda i: i["shard"]["versions"].update(tvm="0.26.0"))
    err = refused(s1, s2, s3_tvm, want="shard 3/3")
    assert "other tool versions" in err and "tvm 0.26.0 vs" in err
    s3_four = _copy_shard(d, 3, "s3-four", lambda i: i["shard"].update(index=3, count=4))
    refused(s1, s2, s3_four, want="is one of 4 shards")
    s3_bad = _copy_shard(d, 3, "s3-bad")
    name = json.loads((s3 / "index.json").read_text())["shard"]["entries"][0]
    with open(s3_bad / name / "model.so", "ab") as f:
        f.write(b"\0")
    refused(s1, s2, s3_bad, want=f"{name}/model.so does not match its index.json")
    refused(s1, s2, d / "whole", want="holds no finished shard")
    refused(s1, s2, tmp_path, want="no index.json")
    # an existing output is kept unless --force
    out.mkdir()
    rc, _, err = cli("build-merge", s1, s2, s3, "-o", out)
    assert rc == 2 and "already exists" in err and "--force" in err
    rc, _, err = cli("build-merge", s1, s2, s3, "-o", out, "--force")
    assert rc == 0, err
    assert (out / "SHA256SUMS").read_bytes() == (d / "whole/SHA256SUMS").read_bytes()


def test_merge_failing_midway_leaves_no_output(sharded, cli, tmp_path, monkeypatch):
    d, _ = sharded
    real, calls = shutil.copytree, []

    def flaky(*a, **k):
        calls.append(a)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(merge_mod.shutil, "copytree", flaky)
    rc, _, err = cli("build-merge", d / "s1", d / "s2", d / "s3", "-o", tmp_path / "merged")
    assert rc == 2 and "No space left on device" in err and len(calls) == 3
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temp dir


def test_ci_build_script_passes_the_shard_through(tmp_path):
    stub = tmp_path / "python"
    stub.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\n')
    stub.chmod(0o755)
    env = dict(os.environ, DEPLOY_SKIP_SETUP="1", PYTHON=str(stub), DEPLOY_SHARD="2/3",
               DEPLOY_REPORTS=str(tmp_path / "reports"))
    subprocess.run([ROOT / "scripts/ci-build.sh", "deploy.toml"], env=env, check=True)
    args = (tmp_path / "args").read_text().split()
    assert args[:6] == ["-m", "pipeline.cli", "build", "deploy.toml", "--shard", "2/3"] and "--json" in args
