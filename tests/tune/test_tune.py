"""Tuning: records applied at compile, kept across kills, shared across models, per target, over RPC."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

import pipeline
from conftest import assert_matches_ort
from pipeline import DeployError, examples
from pipeline.tune import database as tuning_db
from pipeline.targets import get_preset
from pipeline.tune import TuneArgs, tune_model


def _lines(db_root: Path, preset="x86-64") -> list[str]:
    path = tuning_db.for_target(get_preset(preset), db_root).path / tuning_db.RECORDS
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, models):
    """tiny_cnn tuned briefly into a fresh database."""
    db = tmp_path_factory.mktemp("db")
    s = tune_model(TuneArgs(model=models / "cnn.onnx", target="x86-64", trials=24, trials_per_task=4, db=db), show=False)
    return db, s


def test_tune_then_compile_applies_records_and_stays_correct(tuned, models, tmp_path):
    db, s = tuned
    # every kernel is searched but one whose default MetaSchedule cannot time (the padded 10-class head on AVX2)
    assert s.tasks >= 5 and s.tasks_tuned >= s.tasks - 1 and s.trials >= 20
    assert tuning_db.list_dbs(db)[0].stats()["valid_records"] >= 20
    art = pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path / "a", db=db)
    assert art.manifest["tuning"]["tuned_kernels"] >= 3
    assert_matches_ort(art, models / "cnn.onnx")
    # the layer report says which kernels run a tuning record
    from pipeline import layers

    sources = [k["schedule"] for k in layers.read(art.path)["kernels"]]
    assert sum(1 for s in sources if s == "tuning record") >= 3, sources


@pytest.mark.slow  # ~1.5 min of tuning; -m slow
def test_second_model_reuses_shared_workloads(tuned, tmp_path):
    db, first = tuned
    # same convolutions, a different classifier head: only the new kernels are tuned
    onnx.save(examples.tiny_cnn(classes=7, seed=3), tmp_path / "cnn7.onnx")
    s = tune_model(TuneArgs(model=tmp_path / "cnn7.onnx", target="x86-64", trials=24, trials_per_task=4, db=db), show=False)
    assert s.tasks_reused >= 2 and s.tasks_tuned < s.tasks
    assert s.trials <= 4 * s.tasks_tuned + 4


def test_records_are_kept_per_target(tuned, models, tmp_path):
    db, _ = tuned
    art = pipeline.compile(models / "cnn.onnx", "x86-64-v3", output=tmp_path / "a", db=db)
    assert art.manifest["tuning"]["tuned_kernels"] == 0  # tuned for this host's CPU, not for v3
    assert tuning_db.target_key(get_preset("x86-64")) != tuning_db.target_key(get_preset("x86-64-v3"))


def test_db_cli_stats_export_import_merge(tuned, cli, tmp_path):
    db, _ = tuned
    rc, out, _ = cli("db", "stats", "--db", db, "--json")
    stats = json.loads(out)
    assert rc == 0 and stats[0]["preset"] == "x86-64" and stats[0]["valid_records"] > 0
    rc, _, err = cli("db", "export", "--db", db, "-o", tmp_path / "db.tar.gz")
    assert rc == 0, err
    rc, out, _ = cli("db", "import", tmp_path / "db.tar.gz", "--db", tmp_path / "copy")
    assert rc == 0 and f"{stats[0]['records']} records added" in out
    rc, out, _ = cli("db", "merge", db, "--into", tmp_path / "copy")
    assert rc == 0 and "0 records added" in out  # nothing new: merging is idempotent
    assert tuning_db.list_dbs(tmp_path / "copy")[0].stats()["records"] == stats[0]["records"]


def _per_workload(lines: list[str]) -> dict[int, int]:
    """Records per workload (a record line is ``[workload index, [trace, run secs, ...]]``)."""
    counts: dict[int, int] = {}
    for ln in lines:
        w = json.loads(ln)[0]
        counts[w] = counts.get(w, 0) + 1
    return counts


@pytest.mark.slow  # ~1.5 min of tuning; -m slow
def test_kill_9_loses_no_record_and_rerun_resumes(tmp_path):
    """kill -9 once the first kernel has all its trials: no measured record is lost, and the
    re-run tunes only the kernel left. tiny_mlp: two kernels, 4 trials each, one search batch each
    (1 default + 4 searched records make a kernel finished)."""
    onnx.save(examples.tiny_mlp(), tmp_path / "mlp.onnx")
    db, per_task = tmp_path / "db", 4
    cmd = [sys.executable, "-m", "pipeline.cli", "tune", str(tmp_path / "mlp.onnx"), "--target", "x86-64",
           "--trials", "64", "--trials-per-task", str(per_task), "--db", str(db), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and max(_per_workload(_lines(db)).values(), default=0) <= per_task \
            and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "tuning ended before the kill"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _lines(db)
    done = {w for w, n in _per_workload(before).items() if n > per_task}
    assert len(done) == 1 and len(_per_workload(before)) == 2, "not killed with one kernel tuned and one to go"
    s = tune_model(TuneArgs(model=tmp_path / "mlp.onnx", target="x86-64", trials=64, trials_per_task=per_task, db=db),
                   show=False)
    after = _lines(db)
    assert after[: len(before)] == before                   # every measured record survived
    assert s.tasks == 2 and s.tasks_reused == 1              # the finished kernel is not measured again
    new = _per_workload(after[len(before):])
    assert not done & set(new) and len(after) - len(before) == s.trials == sum(new.values()) >= 1


def test_gpu_and_board_targets_need_a_device_to_measure(models):
    import tvm

    if not tvm.cuda(0).exist:
        with pytest.raises(DeployError, match="needs an NVIDIA GPU"):
            tune_model(TuneArgs(model=models / "cnn.onnx", target="cuda-sm86"), show=False)
    with pytest.raises(DeployError, match="needs its board") as e:
        tune_model(TuneArgs(model=models / "cnn.onnx", target="rpi4"), show=False)
    assert "--rpc-tracker" in e.value.hint
    with pytest.raises(DeployError, match="cannot reach the RPC tracker"):
        tune_model(TuneArgs(model=models / "cnn.onnx", target="x86-64", rpc_tracker="127.0.0.1:1", rpc_key="k"), show=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # ~3 min: a tracker, a server and a tuning run; -m slow
def test_rpc_tuning_on_loopback(models, tmp_path):
    port = _free_port()
    env = dict(os.environ, TMPDIR=str(tmp_path))
    tracker = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
                                "--port-end", str(port + 1)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    server = None
    try:
        deadline = time.time() + 120  # the tracker imports TVM first: slow on a loaded machine
        from tvm import rpc

        while time.time() < deadline:  # a bare TCP probe would upset the tracker: ask like a client
            try:
                rpc.connect_tracker("127.0.0.1", port).summary()
                break
            except Exception:
                time.sleep(1)
        sport = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}",
                                   "--key", "loopback-x86", "--host", "127.0.0.1", "--port", str(sport), "--port-end", str(sport + 1)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if "loopback-x86" in json.dumps(rpc.connect_tracker("127.0.0.1", port).summary()):
                    break
            except Exception:
                pass
            time.sleep(1)
        s = tune_model(TuneArgs(model=models / "cnn.onnx", target="x86-64", trials=8, trials_per_task=2,
                                db=tmp_path / "db", rpc_tracker=f"127.0.0.1:{port}", rpc_key="loopback-x86"), show=False)
        assert s.trials >= 8
        assert tuning_db.list_dbs(tmp_path / "db")[0].stats()["valid_records"] >= 6  # measured on the server
    finally:
        for p in (server, tracker):
            if p is not None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


@pytest.mark.slow  # ~1.5 min of tuning; -m slow
def test_compile_tune_flag_tunes_then_builds_with_the_records(models, tmp_path, cli, monkeypatch):
    """`compile --tune` tunes the module it builds: load, clean-up, import and optimize run once."""
    from pipeline import prepare

    calls = []
    real = prepare.prepare_module
    monkeypatch.setattr(prepare, "prepare_module", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    rc, _, err = cli("compile", models / "cnn.onnx", "--target", "x86-64", "-o", tmp_path / "a", "--db", tmp_path / "db",
                     "--tune", "3s")
    assert rc == 0, err
    assert len(calls) == 1
    steps = [ln[2:].strip() for ln in err.splitlines() if ln.startswith("> ")]
    for name in ("load", "clean-up", "import", "extract tasks", "tune", "apply tuning", "build"):
        assert steps.count(name) == 1, (name, steps)
    optimize = [s for s in steps if s.startswith("optimize: ")]
    assert optimize and len(optimize) == len(set(optimize))
    assert steps.index("extract tasks") > max(steps.index(s) for s in optimize)  # tuned after the front half
    assert err.count("deploy compile") == 1 and "deploy tune" not in err  # one request, shown once
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["tuning"]["tuned_kernels"] >= 1 and _lines(tmp_path / "db")
    assert_matches_ort(pipeline.load(tmp_path / "a"), models / "cnn.onnx")


def test_default_schedules_are_measured_and_recorded_as_baselines(tuned, models):
    """Every CPU task's default schedule is stored as a measured record next to the searched
    ones, so compile's pick of the fastest record can never be slower than the default."""
    from tvm.s_tir import meta_schedule as ms

    from pipeline.prepare import prepare_module
    from pipeline.backends.cpu.rules import default_schedule
    from pipeline.backends.cpu.intrinsics import light_tensor_intrinsics

    db, _ = tuned
    preset = get_preset("x86-64")
    target = preset.tvm_target()
    light_tensor_intrinsics()
    tasks = ms.relax_integration.extract_tasks(prepare_module(models / "cnn.onnx", preset, {}, 3).mod, target)
    database = tuning_db.for_target(preset, db).open()
    found = 0
    for t in tasks:
        mod = t.dispatched[0]
        sch = default_schedule(mod["main"], target)
        records = database.get_top_k(database.commit_workload(mod), 10**6)
        try:
            ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)
        except Exception:  # noqa: BLE001
            # weights padded to whole vectors at build time (the 10-class head on AVX2): MetaSchedule
            # cannot time that default, so the kernel is not searched either: no record at all
            assert records == [], t.task_name
            continue
        base = [r for r in records if str(r.trace) == str(sch.trace)]
        assert len(base) == 1 and min(float(x) for x in base[0].run_secs) < tuning_db.FAILED_RUN, t.task_name
        found += 1
    assert found >= 5 and found >= len(tasks) - 1


@pytest.mark.slow  # ~1 min of tuning; -m slow
def test_tune_quantize_int8_tunes_the_kernels_compile_builds(models, tmp_path, cli):
    """Quantization composes with tuning: `deploy tune --quantize int8` calibrates like compile
    does and tunes the int8 kernels, so the int8 compile finds a record for every kernel."""
    db = tmp_path / "db"
    rc, out, err = cli("tune", models / "cnn.onnx", "--target", "x86-64", "--quantize", "int8", "--random-calibration",
                       "--trials", "16", "--trials-per-task", "2", "--db", db, "--json")
    assert rc == 0, err
    assert json.loads(out[out.index("{"):])["tasks_tuned"] >= 3
    art = pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path / "a", db=db, quantize="int8",
                           random_calibration=True, speed_check=False)
    assert art.manifest["precision"]["compute"] == "int8"
    tuning = art.manifest["tuning"]
    # every kernel but the classifier head, whose weights are padded to whole vectors at build time
    # on AVX2: MetaSchedule cannot time that default, so it is not searched and keeps it
    assert tuning["kernels"] - 1 <= tuning["tuned_kernels"] and tuning["tuned_kernels"] >= 3, tuning
    from pipeline import layers

    schedules = [k["schedule"] for k in layers.read(art.path)["kernels"]]
    if tuning["tuned_kernels"] < tuning["kernels"]:
        assert "default: Gemv" in schedules, schedules
    # the float model's kernels are different workloads: its compile finds none of them
    fp32 = pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path / "b", db=db)
    assert fp32.manifest["tuning"]["tuned_kernels"] < fp32.manifest["tuning"]["kernels"]


@pytest.mark.slow  # ~2.5 min of tuning; -m slow
def test_time_budget_counts_the_whole_command(models, tmp_path):
    """--time-budget includes import, task extraction and the default schedules' measurements:
    a budget those alone use up stops the search at its first measured batch."""
    s = tune_model(TuneArgs(model=models / "cnn.onnx", target="x86-64", trials=512, trials_per_task=64,
                            time_budget=1.0, db=tmp_path / "db"), show=False)
    assert s.stopped_by == "time budget"
    assert 0 < s.trials < 512
    # a short budget goes to the kernels that take the most measured time (at least 4 of them,
    # one more per minute of budget), not a round over every kernel
    assert s.tasks_tuned == 4 < s.tasks


def test_focus_picks_the_costliest_kernels_until_90_percent():
    from types import SimpleNamespace

    from pipeline.tune.focus import focus

    cost = {"a": 5.0, "b": 3.0, "c": 1.5, "d": 0.3, "e": 0.2}  # "f": not measured
    tasks = [SimpleNamespace(task_name=n) for n in "abcdef"]
    chosen, left, share = focus(tasks, cost, 600.0)  # 10 min: up to 10 kernels, stop at 90%
    assert [t.task_name for t in chosen] == ["a", "b", "c"] and len(left) == 3 and share == pytest.approx(0.95)
    chosen, _, _ = focus(tasks, cost, 60.0)
    assert [t.task_name for t in chosen] == ["a", "b", "c"]  # at least 4 allowed; 90% reached first
    assert focus(tasks, cost, None) == (tasks, [], 1.0)     # no budget: every kernel
    # every kernel measured and none losing time: nothing is searched
    assert focus(tasks[:2], {"a": 0.0, "b": 0.0}, 600.0) == ([], tasks[:2], 0.0)


def test_auto_ranks_kernels_by_time_lost_against_the_matmul_rate():
    """--tune auto: a convolution near the machine's matmul rate loses little however long it runs;
    a slower-per-FLOP kernel with less time goes first."""
    from types import SimpleNamespace

    from pipeline.tune.focus import NEAR_RATE, focus, lost_time, matmul_rate

    rate = 100e9
    cost = {"conv_fast": 4e-3, "conv_slow": 2e-3, "eltwise": 0.5e-3}  # seconds per inference
    flops = {"conv_fast": 0.8 * rate * 4e-3, "conv_slow": 0.1 * rate * 2e-3, "eltwise": 0.0}
    lost = lost_time(cost, flops, rate)
    assert lost["conv_fast"] == 0.0  # at 80% of the rate (NEAR_RATE or better): not worth a search
    assert lost["conv_slow"] == pytest.approx(2e-3 * 0.9) and lost["eltwise"] == pytest.approx(0.5e-3)
    assert NEAR_RATE == 0.5
    tasks = [SimpleNamespace(task_name=n) for n in cost]
    chosen, left, _ = focus(tasks, lost, 600.0)
    assert [t.task_name for t in chosen] == ["conv_slow", "eltwise"] and [t.task_name for t in left] == ["conv_fast"]
    assert 1e8 < matmul_rate(n=256, runs=3) < 1e14  # FLOP/s, measured (a loaded machine included)


def test_auto_stops_when_the_estimate_stops_improving():
    from pipeline.tune.progress import improving

    window = 90.0
    assert improving([(0.0, 10.0), (60.0, 9.0)], window)              # not searched that long yet
    assert improving([(0.0, 10.0), (60.0, 9.0), (100.0, 8.0)], window)  # 20% better than 100 s ago
    assert not improving([(0.0, 10.0), (100.0, 9.95)], window)          # under 1% in 90 s: stop
    assert improving([(0.0, 10.0), (50.0, 6.0), (100.0, 5.99), (130.0, 5.9)], window)  # against t=0


def test_tune_budget_auto_parses():
    from pipeline.tune import parse_budget

    assert parse_budget("auto") == (600.0, True)
    assert parse_budget("auto:20m") == (1200.0, True)
    assert parse_budget("90s") == (90.0, False)
    assert parse_budget(None) == (None, False)
    with pytest.raises(DeployError, match="auto"):
        parse_budget("auto:soon")


@pytest.mark.slow  # ~2 min of tuning; -m slow
def test_compile_tune_auto_tunes_where_time_is_lost_and_builds(models, tmp_path, cli):
    """deploy compile --tune auto:60s: the kernels are ranked against this machine's matmul rate, the
    search stops at the budget or a plateau, and the artifact built with the records is right."""
    out = tmp_path / "a"
    rc, _, err = cli("compile", models / "cnn.onnx", "-t", "x86-64", "-o", out, "--tune", "auto:60s",
                     "--db", tmp_path / "db")
    assert rc == 0, err
    text = " ".join(err.split())
    assert "matmul rate" in text and "est. latency" in text, err
    m = json.loads((out / "manifest.json").read_text())
    assert m["tuning"]["tuned_kernels"] >= 1 and _lines(tmp_path / "db")
    assert_matches_ort(pipeline.load(out), models / "cnn.onnx")


def test_records_that_no_longer_load_are_set_aside(tuned, models, tmp_path):
    """A record whose trace names a block its workload lacks (MetaSchedule files records under a
    structurally equal workload, and block names are not part of that equality) made the whole
    database unreadable. It is moved to rejected_records.json; the rest still applies."""
    import shutil

    db = tmp_path / "db"
    shutil.copytree(tuned[0], db)
    path = tuning_db.for_target(get_preset("x86-64"), db).path
    lines = _lines(db)
    idx, rec = json.loads(lines[0])
    bad = json.dumps([idx, json.loads(json.dumps(rec).replace('["GetSBlock", [], ["', '["GetSBlock", [], ["no_such_block_'))])
    assert bad != lines[0]
    (path / tuning_db.RECORDS).write_text("\n".join(lines + [bad]) + "\n")
    art = pipeline.compile(models / "cnn.onnx", "x86-64", output=tmp_path / "a", db=db)
    assert art.manifest["tuning"]["tuned_kernels"] >= 1
    assert (path / tuning_db.REJECTED).read_text().splitlines() == [bad]
    assert len(_lines(db)) == len(lines)
    assert_matches_ort(art, models / "cnn.onnx")


@pytest.mark.slow  # ~1.5 min of tuning; -m slow
def test_dynamic_dims_tune_the_optimized_sizes_kernels(tmp_path):
    """Kernels of symbolic extent cannot be tuned: the optimized sizes' kernels are, and compile
    builds the function for that size with the records (the symbolic main keeps the defaults)."""
    import onnx

    from pipeline.examples import tiny_cnn

    path = tmp_path / "cnn.onnx"
    onnx.save(tiny_cnn(batch="N"), path)
    db = tmp_path / "db"
    s = tune_model(TuneArgs(model=path, target="x86-64", dims=["N=1..8@4"], trials=8, trials_per_task=1, db=db),
                   show=False)
    static = tune_model(TuneArgs(model=path, target="x86-64", input_shapes={"image": [4, 3, 32, 32]}, trials=1,
                                 trials_per_task=1, db=tmp_path / "db2"), show=False)
    assert s.tasks == static.tasks >= 5  # the batch-4 function's kernels, none of the symbolic ones
    art = pipeline.compile(path, "x86-64", output=tmp_path / "a", dims=["N=1..8@4"], db=db)
    assert art.manifest["functions"] == [{"name": "main_N4", "dims": {"N": 4}}]
    assert art.manifest["tuning"]["tuned_kernels"] >= 3
    for n in (4, 3):
        x = art.random_inputs(seed=n, sizes={"N": n})
        assert_matches_ort(art, path, x)


def test_default_records_are_timed_with_the_arguments_the_kernel_takes(tmp_path):
    """A default schedule that pre-packs its weights ([K, N] -> [N / tile, K, tile]) is measured
    with weights of the packed shape, as MetaSchedule measures its own candidates: measured with
    the unpacked shapes, BERT's default matmuls read 3-7x slower than they run and the tuned
    records that replaced them were slower in the model."""
    import numpy as np
    from onnx import helper, numpy_helper
    from tvm.s_tir import meta_schedule as ms

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32), "W")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "mm",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [16, 256])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [16, 512])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "mm.onnx")
    db = tmp_path / "db"
    tune_model(TuneArgs(model=tmp_path / "mm.onnx", target="x86-64", trials=2, trials_per_task=1, db=db), show=False)
    database = tuning_db.for_target(get_preset("x86-64"), db).open()
    packed = 0
    for rec in database.get_all_tuning_records():
        if min(float(x) for x in rec.run_secs) >= tuning_db.FAILED_RUN:
            continue
        sch = rec.as_measure_candidate().sch
        want = [tuple(int(d) for d in a.shape) for a in ms.arg_info.ArgInfo.from_entry_func(sch.mod, True)]
        got = [tuple(int(d) for d in a.shape) for a in rec.args_info]
        assert got == want
        packed += want != [tuple(int(d) for d in a.shape) for a in ms.arg_info.ArgInfo.from_prim_func(
            rec.workload.mod["main"])]
    assert packed, "no record of a kernel with packed weights: the test no longer covers them"
    art = pipeline.compile(tmp_path / "mm.onnx", "x86-64", output=tmp_path / "a", db=db)
    assert art.manifest["tuning"]["tuned_kernels"] == 1
    assert_matches_ort(art, tmp_path / "mm.onnx", atol=1e-4, rtol=1e-4)



def test_compile_and_tune_share_one_frozen_request(models):
    """CompileArgs and TuneArgs are prepare.Request: one check, and nothing changes a request."""
    import dataclasses

    from pipeline.compile import CompileArgs
    from pipeline.prepare import Request

    c = CompileArgs(model=models / "cnn_dyn.onnx", target="x86-64", dims=["N=1..8@4"])
    t = TuneArgs(model=models / "cnn_dyn.onnx", target="x86-64", dims=["N=1..8@4"])
    assert isinstance(c, Request) and isinstance(t, Request)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.dims = {}
    checked = c.checked()
    assert c.dims == ["N=1..8@4"] and list(checked.dims) == ["N"] and checked.dims["N"].opt == [4]
    assert t.checked().dims == checked.dims
    for bad, match in ((dict(opt_level=4), "--opt-level 4 is out of range"),
                       (dict(precision="int8", random_calibration=True), "static shapes only")):
        quant = {"quant": pipeline.QuantOptions(random_calibration=True)} if "random_calibration" in bad else {}
        bad = {k: v for k, v in bad.items() if k != "random_calibration"}
        for cls in (CompileArgs, TuneArgs):
            with pytest.raises(DeployError, match=match):
                cls(model=models / "cnn_dyn.onnx", target="x86-64", dims=["N=1..8@4"], **bad, **quant).checked()
    with pytest.raises(DeployError, match="--trials must be at least 1"):
        TuneArgs(model=models / "cnn.onnx", target="x86-64", trials=0).checked()
