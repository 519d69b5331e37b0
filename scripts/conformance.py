#!/usr/bin/env python3
"""ONNX's backend node tests through deploy's public API, next to ONNX Runtime: the conformance table.

    .venv/bin/python scripts/conformance.py [--filter REGEX] [--jobs 2] [--json out.json] [--limit N]

The onnx package generates its node tests locally (``onnx.backend.test.case.node.collect_testcases``:
each a model and its input/output data). Constant-like inputs (integer or bool tensors of at most 16
elements and rank <= 1: axes, shapes, pads, repeats, flags) are bound as initializers, as exporters emit them, and every
input's shape is bound from the test's data (``--input-shape``). Each
test is compiled with ``pipeline.compile(..., "x86-64")`` (the built-in check on, as users get it), run with
``pipeline.load``, and compared with the expected outputs at the test's own rtol/atol (NaN equal
to NaN); ONNX Runtime runs the same bound model. Each test runs in a worker process: a test that
kills it (a crash inside TVM) is counted as a crash, and a fresh worker takes the next test.

``--write-expected tests/conformance_expected.json`` records every outcome with its reason; the
tests check a fast subset against it (``--check-expected``): a test that starts failing, or
starts passing, fails the check until the list is updated.

Outcomes for deploy: pass; wrong (compiled and ran, numbers differ: a silent wrong answer);
caught (the compile's built-in check found its numbers differ from ONNX Runtime's on random inputs
and refused it); refused (another DeployError: one message with a fix); error (any other exception: a raw error);
crash (the process died); timeout; io (sequence/optional inputs or outputs, not tested).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_CONST = 16


def _tensor_io(values) -> bool:
    import numpy as np

    return all(isinstance(v, (np.ndarray, np.generic)) and (np.asarray(v).dtype.kind not in "OSUV" or _ml_dtype(v))
               for v in values)


def _ml_dtype(v) -> str | None:
    """The ml_dtypes name (bfloat16, float8_e4m3fn, int4, ...) of an array numpy cannot save natively, else None."""
    import ml_dtypes
    import numpy as np

    name = np.asarray(v).dtype.name
    return name if name != "void" and hasattr(ml_dtypes, name) and np.asarray(v).dtype.kind in "Vf" and \
        np.asarray(v).dtype.itemsize <= 2 and name not in ("float16",) else None


def _to_array(v):
    from onnx import TensorProto, numpy_helper

    return numpy_helper.to_array(v) if isinstance(v, TensorProto) else v


def _save(path, arrays: dict) -> None:
    """np.savez, with arrays of ml_dtypes types stored as their bits and their type names beside them."""
    import numpy as np

    kinds = {k: t for k, v in arrays.items() if (t := _ml_dtype(v))}
    np.savez(path, **{k: (v.view(f"u{v.dtype.itemsize}") if k in kinds else v) for k, v in arrays.items()})
    (path.parent / "dtypes.json").write_text(json.dumps(kinds))


def _load(path) -> dict:
    import ml_dtypes
    import numpy as np

    kinds = json.loads((path.parent / "dtypes.json").read_text()) if (path.parent / "dtypes.json").exists() else {}
    with np.load(path, allow_pickle=False) as z:
        return {k: (z[k].view(getattr(ml_dtypes, kinds[k])) if k in kinds else z[k]) for k in z.files}


def generate(work: Path, pattern: str | None, limit: int | None) -> list[str]:
    """Write each node test as work/NAME/{model.onnx, data.npz}; returns the names."""
    import warnings

    import numpy as np
    import onnx
    from onnx import numpy_helper
    from onnx.backend.test.case.node import collect_testcases

    warnings.filterwarnings("ignore")
    names = []
    for case in sorted(collect_testcases(None), key=lambda c: c.name):
        if pattern and not re.search(pattern, case.name):
            continue
        if limit is not None and len(names) >= limit:
            break
        d = work / case.name
        d.mkdir(parents=True, exist_ok=True)
        names.append(case.name)
        if not case.data_sets:
            (d / "io").write_text("no data")
            continue
        inputs, outputs = ([_to_array(v) for v in vs] for vs in case.data_sets[0])  # some cases hold TensorProtos
        if _tensor_io(inputs) and _tensor_io(outputs):
            inputs, outputs = [np.asarray(v) for v in inputs], [np.asarray(v) for v in outputs]
        if not (_tensor_io(inputs) and _tensor_io(outputs)):
            (d / "io").write_text("sequence, optional or string inputs/outputs")
            continue
        model = onnx.ModelProto()
        model.CopyFrom(case.model)
        g = model.graph
        real = [i for i in g.input if i.name not in {t.name for t in g.initializer}]
        feed, bound = {}, []
        for vi, arr in zip(real, inputs):
            if arr.dtype.kind in "iub" and arr.ndim <= 1 and arr.size <= MAX_CONST:
                g.initializer.append(numpy_helper.from_array(arr, vi.name))
                bound.append(vi.name)
            else:
                feed[vi.name] = arr
        if model.ir_version >= 4:  # before IR 4 every initializer must also be a graph input
            keep = [vi for vi in g.input if vi.name not in bound]
            del g.input[:]
            g.input.extend(keep)
        onnx.save(model, str(d / "model.onnx"))
        _save(d / "data.npz", {**{f"in:{k}": v for k, v in feed.items()},
                               **{f"out:{o.name}": v for o, v in zip(g.output, outputs)}})
        (d / "tol.json").write_text(json.dumps({"rtol": case.rtol, "atol": case.atol}))
    return names


def _close(ours, ref, rtol: float, atol: float, valid=None) -> str | None:
    """Why ``ours`` is not ``ref`` within the tolerance (compared where ``valid``, if given), or None."""
    import numpy as np

    ours, ref = np.asarray(ours), np.asarray(ref)
    if ours.shape != ref.shape:
        return f"shape {list(ours.shape)} != {list(ref.shape)}"
    if ours.dtype != ref.dtype:
        return f"dtype {ours.dtype} != {ref.dtype}"
    if ref.dtype.kind in "OSU":
        return None if np.array_equal(ours, ref) else "values differ"
    o, r = ours.astype(np.float64), ref.astype(np.float64)  # ml_dtypes types convert too
    nan = np.isnan(o) & np.isnan(r)
    bad = ~nan & ~(np.abs(o - r) <= atol + rtol * np.abs(r)) & ~(o == r)
    if valid is not None:
        bad &= valid
    if bad.any():
        return f"{int(bad.sum())} of {bad.size} elements differ (max abs {float(np.nanmax(np.abs(o - r))):.3g})"
    return None


def _defined(name: str, feed: dict, ref):
    """Where a Cast/CastLike to a 4- or 2-bit int is defined: ONNX leaves an out-of-range value
    undefined, and the expected outputs come from ml_dtypes, which wraps it (0.6) or gives 0
    (0.7). None (compare everything) for other tests."""
    import re

    import numpy as np

    m = re.match(r"test_cast(like)?_\w+_to_(U?INT)([24])(_expanded)?$", name)
    if not m or not feed:
        return None
    x = np.asarray(next(iter(feed.values())))
    if x.shape != np.shape(ref) or x.dtype.kind not in "f":
        return None
    bits = int(m.group(3))
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if m.group(2) == "INT" else (0, (1 << bits) - 1)
    r = np.rint(x.astype(np.float64))  # ONNX rounds half to even
    return np.isfinite(r) & (r >= lo) & (r <= hi)


def run_one(d: Path) -> dict:
    """deploy and ONNX Runtime on one generated test (in a worker process)."""
    import numpy as np

    if (d / "io").exists():
        return {"deploy": "io", "ort": "io", "why": (d / "io").read_text()}
    tol = json.loads((d / "tol.json").read_text())
    z = _load(d / "data.npz")
    feed = {k[3:]: v for k, v in z.items() if k.startswith("in:")}
    want = {k[4:]: v for k, v in z.items() if k.startswith("out:")}
    res: dict = {}
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        sess = ort.InferenceSession(str(d / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
        got = {n: (v.view(want[n].dtype) if n in want and v.dtype == np.uint8 and want[n].dtype.itemsize == 1
                   and want[n].dtype.kind in "Vf" else v) for n, v in got.items()}  # ORT: narrow types as bits
        why = next((w for n, v in want.items()
                    if (w := _close(got.get(n), v, tol["rtol"], tol["atol"], _defined(d.name, feed, v)))), None)
        res["ort"] = "pass" if why is None else "wrong"
    except Exception:  # noqa: BLE001
        res["ort"] = "error"
    if os.environ.get("CONFORMANCE_RAW"):
        res["raw"] = _raw_tvm(d, feed, want, tol)
    import pipeline
    from pipeline import DeployError
    from pipeline.errors import CheckFailed

    t0 = time.perf_counter()
    try:
        art = pipeline.compile(d / "model.onnx", "x86-64", output=d / "art", force=True,  # with the built-in check
                               input_shapes={k: list(v.shape) for k, v in feed.items()})
        res["compile_s"] = round(time.perf_counter() - t0, 2)
        got = art.run(feed)
        why = next((f"{n}: {w}" for n, v in want.items()
                    if (w := _close(got[n], v, tol["rtol"], tol["atol"], _defined(d.name, feed, v)) if n in got
                        else "missing")), None)
        res["deploy"] = "pass" if why is None else "wrong"
        if why:
            res["why"] = why[:200]
    except DeployError as e:
        res.update(deploy="caught" if isinstance(e, CheckFailed) else "refused", why=e.message.replace("\n", " ")[:200])
    except Exception as e:  # noqa: BLE001
        res.update(deploy="error", why=f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[-1][:200]}")
    return res


def _raw_tvm(d: Path, feed: dict, want: dict, tol: dict) -> str:
    """TVM alone, as a user of its Python API would run it: from_onnx -> tvm.compile -> the VM."""
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    try:
        model = onnx.load(str(d / "model.onnx"))
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        mod = from_onnx(model, shape_dict={k: list(v.shape) for k, v in feed.items()}, opset=opset,
                        keep_params_in_input=False)
        vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
        names = [i.name for i in model.graph.input if i.name in feed]
        from pipeline.run.runtime import flatten_outputs  # the same output flattening as deploy's
        got = flatten_outputs(vm["main"](*[tvm.runtime.tensor(feed[n]) for n in names]))
        outs = dict(zip([o.name for o in model.graph.output], got))
        bad = any(n not in outs or _close(outs[n], v, tol["rtol"], tol["atol"]) for n, v in want.items())
        return "wrong" if bad else "pass"
    except Exception:  # noqa: BLE001
        return "error"


def worker() -> None:
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    results = os.fdopen(os.dup(1), "w")  # what TVM or a model prints goes to stderr, not into the results
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        d = Path(line.strip())
        out = run_one(d)
        results.write(json.dumps({"name": d.name, **out}) + "\n")
        results.flush()


class Worker:
    def __init__(self):
        self.p = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
                                  env=dict(os.environ, PYTHONPATH=str(ROOT)))
        self.current: str | None = None
        self.started = 0.0

    def give(self, d: Path) -> None:
        self.current, self.started = d.name, time.time()
        self.p.stdin.write(f"{d}\n")
        self.p.stdin.flush()


def run_all(work: Path, names: list[str], jobs: int, timeout: float, progress: bool) -> dict[str, dict]:
    todo = list(reversed(names))
    workers = [Worker() for _ in range(min(jobs, len(names)))]
    results: dict[str, dict] = {}
    for w in workers:
        if todo:
            w.give(work / todo.pop())
    while any(w.current for w in workers):
        busy = [w for w in workers if w.current]
        ready, _, _ = select.select([w.p.stdout for w in busy], [], [], 1.0)
        for w in busy:
            name = w.current
            if w.p.stdout in ready:
                line = w.p.stdout.readline()
                if line:
                    results[name] = json.loads(line)
                else:  # the worker died with this test
                    results[name] = {"name": name, "deploy": "crash", "ort": "?", "why": f"exit {w.p.wait()}"}
                    workers[workers.index(w)] = w = Worker()
            elif time.time() - w.started > timeout:
                w.p.kill()
                w.p.wait()
                results[name] = {"name": name, "deploy": "timeout", "ort": "?", "why": f"> {timeout:.0f} s"}
                workers[workers.index(w)] = w = Worker()
            else:
                continue
            w.current = None
            if progress:
                r = results[name]
                print(f"[{len(results)}/{len(names)}] {name}: {r['deploy']}"
                      + (f" ({r['why'][:100]})" if r.get("why") and r["deploy"] != "pass" else ""), flush=True)
            if todo:
                w.give(work / todo.pop())
    for w in workers:
        w.p.stdin.close()
        w.p.wait()
    return results


def table(results: dict[str, dict]) -> str:
    rows = []
    for label, sel in (("operator tests", lambda n: "_expanded" not in n),
                       ("expanded tests", lambda n: "_expanded" in n)):
        rs = [r for n, r in results.items() if sel(n)]
        c = Counter(r["deploy"] for r in rs)
        ort = sum(r["ort"] == "pass" for r in rs)
        rows.append(f"| {len(rs)} {label} | **{c['pass']} pass** | {c['wrong']} | {c['caught']} | {c['refused']} | "
                    f"{c['error']} | {c['crash'] + c['timeout']} | {c['io']} | {ort} |")
    return ("| | deploy | wrong numbers, silent | wrong, caught by the check | refused (DeployError) | raw error "
            "| crash/timeout | seq/optional/string I/O | ONNX Runtime |\n|---|---|---|---|---|---|---|---|---|\n"
            + "\n".join(rows))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--filter", help="regex on test names (e.g. '^test_(conv|relu)')")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--json", type=Path, help="write every test's outcome here")
    ap.add_argument("--work", type=Path, help="where the generated tests go [a temp dir]")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--write-expected", type=Path, help="write every test's outcome (and reason) here")
    ap.add_argument("--check-expected", type=Path,
                    help="compare with outcomes written by --write-expected; exit 1 on any difference")
    ap.add_argument("--raw", action="store_true", help="also run raw TVM (from_onnx -> tvm.compile) on each test")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker()
        return 0
    if a.raw:
        os.environ["CONFORMANCE_RAW"] = "1"
    work = a.work or Path(tempfile.mkdtemp(prefix="deploy-conformance-"))
    t0 = time.time()
    names = generate(work, a.filter, a.limit)
    results = run_all(work, names, a.jobs, a.timeout, not a.quiet)
    secs = [r["compile_s"] for r in results.values() if "compile_s" in r]
    print(table(results))
    if a.raw:
        for label, sel in (("operator", lambda n: "_expanded" not in n), ("expanded", lambda n: "_expanded" in n)):
            rs = {n: r for n, r in results.items() if sel(n)}
            raw = sum(r.get("raw") == "pass" for r in rs.values())
            lost = sorted(n for n, r in rs.items() if r.get("raw") == "pass" and r["deploy"] != "pass")
            print(f"raw TVM 0.27 passes {raw} {label} tests; deploy fails {len(lost)} of them"
                  + (f": {', '.join(lost)}" if lost else ""))
    if secs:
        secs.sort()
        print(f"compile time per test: median {secs[len(secs) // 2]:.2f} s, max {secs[-1]:.1f} s; "
              f"whole run {time.time() - t0:.0f} s with {a.jobs} worker(s)")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, sort_keys=True))
    if a.write_expected:
        rows = [f"{json.dumps(n)}: {json.dumps([r['deploy'], re.sub(r'/tmp/[^ ]+', 'MODEL', r.get('why', ''))[:160]])}"
                for n, r in sorted(results.items())]  # one test a line: reviewable diffs
        a.write_expected.write_text("{\n" + ",\n".join(rows) + "\n}\n")
    if a.check_expected:
        expected = json.loads(a.check_expected.read_text())
        changed = [f"{n}: expected {expected[n][0]}, got {r['deploy']}" + (f" ({r['why'][:120]})" if r.get("why") else "")
                   for n, r in sorted(results.items()) if n in expected and expected[n][0] != r["deploy"]]
        new = sorted(set(results) - set(expected))
        for line in changed:
            print("CHANGED " + line)
        for n in new:
            print(f"NEW {n}: {results[n]['deploy']} (not in {a.check_expected.name})")
        if changed or new:
            print(f"{len(changed)} outcome(s) changed, {len(new)} new: update the list with --write-expected "
                  "once the change is understood")
            return 1
        print(f"all {len(results)} outcomes as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
