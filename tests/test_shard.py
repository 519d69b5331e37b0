"""`deploy build --shard K/N`: a matrix split over CI runners."""

import random
from pathlib import Path

import onnx
import pytest

from pipeline import examples
from pipeline.ci.config import Entry, load_config
from pipeline.ci.shard import BASE_COST, assign, entry_cost, parse_shard, shard_info
from test_matrix import write_config

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
