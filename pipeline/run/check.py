"""The built-in check: the compiled artifact against ONNX Runtime, before it is moved into place.

Every compile whose artifact runs on this machine runs it once on seeded random inputs (or the
user's ``--check-inputs``) next to ONNX Runtime on the same model, and compares each output
within a tolerance set by the precision. A mismatch fails the compile with the outputs that
differ and by how much, and nothing is written at the output path: no silent wrong answer
leaves deploy. ``--no-check`` skips it; cross targets (run under qemu-user) are checked only
with ``--check``; artifacts for a GPU this machine lacks cannot be checked here.

int8 artifacts are compared with ONNX Runtime running the QDQ model deploy compiled (the same
quantization), not the float model: their distance to float is the accuracy report's job. Two
int8 executions of one QDQ model round differently (ORT requantizes in its own order), and a
sensitive network amplifies that: with the float model given, an int8 output that misses the
tolerance still passes when it is as close to float32 as ONNX Runtime's own int8 output is
(its distance 1 - cosine and its max error at most 1.5x ONNX Runtime's, ``close_enough``): then
deploy's int8 is as good as ORT's, and the record says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import log
from ..errors import CheckFailed, DeployError


@dataclass(frozen=True)
class Tolerance:
    """An output passes when max|ours - ref| <= atol + rtol * max|ref| and, for float outputs,
    their cosine similarity is at least ``min_cosine``; integer outputs must agree on at least
    ``min_int_agreement`` of their elements."""

    atol: float
    rtol: float
    min_cosine: float | None = None
    min_int_agreement: float = 1.0

    def describe(self) -> str:
        s = f"max abs error <= {self.atol:g} + {self.rtol:g} x max|ref|"
        return s + (f", cosine >= {self.min_cosine:g}" if self.min_cosine is not None else "")


TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3),
    "fp16": Tolerance(atol=1e-3, rtol=2e-2, min_cosine=0.999, min_int_agreement=0.99),
    "int8": Tolerance(atol=1e-3, rtol=1e-1, min_cosine=0.98, min_int_agreement=0.99),
}


# an output of a half type cannot be closer than its own rounding, whatever the compute precision
_HALF_TOLERANCES = {"float16": TOLERANCES["fp16"],
                    "bfloat16": Tolerance(atol=1e-2, rtol=5e-2, min_cosine=0.999, min_int_agreement=0.99)}


def output_tolerance(tol: Tolerance, ref) -> Tolerance:
    """``tol``, loosened to the output type's own precision for float16 and bfloat16 outputs."""
    half = _HALF_TOLERANCES.get(np.asarray(ref).dtype.name)
    if half is None:
        return tol
    return Tolerance(atol=max(tol.atol, half.atol), rtol=max(tol.rtol, half.rtol),
                     min_cosine=min(c for c in (tol.min_cosine, half.min_cosine) if c is not None),
                     min_int_agreement=min(tol.min_int_agreement, half.min_int_agreement))


def compare_output(ours: np.ndarray, ref: np.ndarray, tol: Tolerance, same_dtype: bool = False) -> dict:
    """The figures of one output and whether they pass (NaN where ONNX Runtime has NaN counts as
    equal); ``same_dtype``: a different element type fails too (a float32 build must keep types)."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    if ref.dtype == np.uint8 and ours.dtype.itemsize == 1 and ours.dtype.kind in "Vf":
        ref = ref.view(ours.dtype)  # ONNX Runtime hands float8/int4 outputs back as their bits
    if same_dtype and ours.dtype != ref.dtype:
        return {"ok": False, "why": f"dtype {ours.dtype}, ONNX Runtime's is {ref.dtype}"}
    if ours.shape != ref.shape:
        return {"ok": False, "why": f"shape {list(ours.shape)}, ONNX Runtime's is {list(ref.shape)}"}
    if ref.size == 0:
        return {"ok": True, "max_abs": 0.0}
    if ref.dtype.kind in "biu" or ours.dtype.kind in "biu":
        agree = float(np.mean(ours.astype(np.int64) == ref.astype(np.int64)))
        return {"ok": agree >= tol.min_int_agreement, "agreement": round(agree, 6),
                "why": f"{100 * (1 - agree):.2f}% of the elements differ"}
    o, r = ours.astype(np.float64), ref.astype(np.float64)
    both_nan = np.isnan(o) & np.isnan(r)
    o, r = np.where(both_nan, 0.0, o), np.where(both_nan, 0.0, r)
    if not np.all(np.isfinite(o) == np.isfinite(r)):
        return {"ok": False, "why": "NaN or Inf where ONNX Runtime has none (or the reverse)"}
    finite = np.isfinite(r)
    o, r = o[finite], r[finite]
    scale = float(np.abs(r).max()) if r.size else 0.0
    max_abs = float(np.abs(o - r).max()) if r.size else 0.0
    res = {"max_abs": max_abs, "max_rel": max_abs / scale if scale > 0 else max_abs}
    ok = max_abs <= tol.atol + tol.rtol * scale
    if tol.min_cosine is not None and scale > 0:
        cos = cosine(o, r)
        res["cosine"] = round(cos, 6)
        ok = ok and cos >= tol.min_cosine
    res["ok"] = bool(ok)
    if not ok:
        res["why"] = f"max abs error {max_abs:.3g} (max|ref| {scale:.3g})" + (
            f", cosine {res['cosine']:.5f}" if "cosine" in res else "")
    return res


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays, in float64 (0 where either is all zeros)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))


def load_check_inputs(path: Path, specs: list[dict], dims: dict | None = None,
                      unused: list[dict] = ()) -> dict[str, np.ndarray]:
    """``--check-inputs``: an .npz keyed by input name, one sample with the artifact's shapes."""
    from .runtime import inputs_for, read_npz

    return inputs_for(specs, read_npz(path, "--check-inputs"), dims, unused)


def tolerance(precision: str, atol: float | None = None, rtol: float | None = None) -> Tolerance:
    """The precision's tolerance, with ``atol``/``rtol`` given by the user (``verify --atol``, a
    build config's per-model values) in place of its own."""
    base = TOLERANCES[precision]
    return replace(base, atol=base.atol if atol is None else float(atol), rtol=base.rtol if rtol is None else float(rtol))


@dataclass
class Verdict:
    """Whether an artifact matches ONNX Runtime: the one comparison behind the built-in check of
    ``compile``, ``deploy verify`` and ``deploy build``. ``status`` is "passed", "failed" or
    "skipped" (ONNX Runtime itself cannot run the model); ``record`` is the manifest's ``check``."""

    status: str
    record: dict
    outputs: dict = field(default_factory=dict)    # output (@ size) -> figures, with "ok" and "why"
    problems: list = field(default_factory=list)   # one line per failing output or failed run

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    @property
    def max_abs(self) -> float:
        return max((r.get("max_abs", 0.0) for r in self.outputs.values()), default=0.0)

    def lines(self) -> list[str]:
        """One line per output, as `deploy verify` prints them."""
        out = []
        for key, r in self.outputs.items():
            figs = [f"{label} {r[k]:.3g}" for k, label in (("max_abs", "max abs error"), ("max_rel", "max rel error"))
                    if k in r]
            if "cosine" in r:
                figs.append(f"cosine {r['cosine']:.6f}")
            if "agreement" in r:
                figs.append(f"{100 * r['agreement']:.2f}% of the elements equal")
            text = ", ".join(figs) + (f" ({r['note']})" if r.get("note") else "")
            if not r["ok"]:
                text += ("; " if text else "") + r.get("why", "")
            out.append(f"{'ok' if r['ok'] else 'FAIL':4} {key}: {text}")
        # failures that belong to no output (a run of the artifact that failed)
        return out + [f"FAIL {p}" for p in self.problems if p.startswith("the artifact failed")]


def check_runs(artifact, inputs: dict | None = None, seed: int = 0, points: list | None = None,
               label: str = "--check-inputs") -> list[tuple[str, dict]]:
    """The (label, inputs) pairs an artifact is judged on: the given inputs, or seeded random ones,
    at each of ``points`` (or of the dims' sample sizes, frontend.dims.sample_points) for an
    artifact with dynamic dims."""
    from ..frontend.dims import point_text, sample_points

    if inputs is not None:
        return [(f"{label} ({len(inputs)} input(s))", inputs)]
    if artifact.dims:
        return [(point_text(p), artifact.random_inputs(seed, p)) for p in (points or sample_points(artifact.dims))]
    return [(f"random, seed {seed}", artifact.random_inputs(seed))]


def judge(artifact, reference_model, precision: str, inputs: dict | None = None, seed: int = 0,
          float_model=None, tol: Tolerance | None = None, points: list | None = None,
          label: str = "--check-inputs") -> Verdict:
    """Run ``artifact`` and ONNX Runtime (``reference_model``: a path or an onnx.ModelProto; for
    int8, the QDQ model deploy compiled) on the same inputs and compare each output within the
    precision's tolerance (``tol`` overrides it). A missing output, a wrong shape or dtype, NaN
    where ONNX Runtime has none, or a run of the artifact that fails are all failures; only ONNX
    Runtime being unable to run the model skips the comparison.

    An artifact with dynamic dims is judged at several sizes (``points``, default
    frontend.dims.sample_points: each specialization, the smallest, the largest and an odd size)."""
    from ..errors import last_line
    from .reference import ort_deviations, ort_session
    from .runtime import random_inputs

    tol = tol or TOLERANCES[precision]
    dims = artifact.dims
    runs = check_runs(artifact, inputs, seed, points, label)
    try:
        sess = ort_session(reference_model)
    except Exception as e:  # noqa: BLE001 - ORT cannot run it: nothing to check against
        return _skipped(e)
    deviations = ort_deviations(reference_model)  # deploy's own code: an error here is no skip
    names = [o.name for o in sess.get_outputs() if o.name not in deviations]
    outputs, bad, points_done = {}, [], []
    float_sess = None  # the float model's session, made the first time an int8 output needs it
    exact_outputs: dict = {}  # ONNX's reference implementation's outputs per run, where int8 needs them
    for source, feed_all in runs:
        given = {**random_inputs(artifact.unused_inputs, seed), **feed_all}  # unused inputs: random
        feed = {i.name: given[i.name] for i in sess.get_inputs() if i.name in given}
        try:
            ref = dict(zip(names, sess.run(names, feed)))
        except Exception as e:  # noqa: BLE001
            return _skipped(e)
        where = f" at {source}" if dims else ""
        try:
            ours = artifact.run(feed_all)
        except DeployError as e:
            bad.append(f"the artifact failed to run{where}: {e.message}")
            points_done.append(source)
            continue
        except Exception as e:  # noqa: BLE001 - a crash of ours or TVM's is a failure, never a skip
            bad.append(f"the artifact failed to run{where}: {type(e).__name__}: {last_line(e)[:300]}")
            points_done.append(source)
            continue
        for name, r in ref.items():
            key = f"{name} @ {source}" if dims else name
            if name not in ours:
                outputs[key] = {"ok": False, "why": "missing from the artifact's outputs"}
                bad.append(f"{name}{where}: missing from the artifact's outputs")
                continue
            res = compare_output(ours[name], r, output_tolerance(tol, r), same_dtype=precision == "fp32")
            if not res["ok"] and float_model is not None:
                float_sess = float_sess or ort_session(float_model)
                res = _as_close_to_float(res, ours[name], r, float_sess, name, feed)
                if res.get("note"):
                    v = res["vs_float32"]
                    log.info(f"  {name}: {res['note']} (cosine {v['cosine']:.5f}, ONNX Runtime's int8 "
                             f"{v['onnxruntime_int8_cosine']:.5f})")
            if not res["ok"] and precision == "int8":
                exact = exact_outputs.setdefault(source, onnx_reference_outputs(reference_model, feed))
                res = _as_onnx_defines(res, ours[name], exact.get(name), output_tolerance(tol, r))
                if res.get("note"):
                    log.info(f"  {name}: {res['note']}")
            outputs[key] = res
            if not res["ok"]:
                bad.append(f"{name}{where}: {res['why']}")
        points_done.append(source)
    source = (f"random, seed {seed}, at {len(points_done)} sizes ({'; '.join(points_done)})"
              if dims and inputs is None else runs[0][0])
    for name, why in deviations.items():
        log.info(f"  {name} not checked: {why}")
    record = {"status": "failed" if bad else "passed", "inputs": source, "tolerance": tol.describe(),
              **({"not_checked": deviations} if deviations else {}),
              "outputs": {k: {f: v for f, v in r.items() if f not in ("ok", "why")} for k, r in outputs.items()}}
    return Verdict(record["status"], record, outputs, bad)


def check_artifact(artifact, reference_model, precision: str, inputs: dict | None = None,
                   seed: int = 0, float_model=None, tol: Tolerance | None = None) -> dict:
    """The built-in check of ``compile``: ``judge``, raising CheckFailed when an output differs;
    returns the manifest's ``check`` record."""
    from .reference import reference_name

    tol = tol or TOLERANCES[precision]
    v = judge(artifact, reference_model, precision, inputs, seed, float_model, tol)
    engine = reference_name(reference_model)  # ONNX Runtime, or LiteRT for a .tflite
    if v.status == "failed":
        raise CheckFailed(f"the compiled artifact's outputs differ from {engine}'s "
                          f"({tol.describe()}):\n    " + "\n    ".join(v.problems),
                          hint="nothing was written; try --opt-level 2 (fewer optimizations), or report the "
                               "model; --no-check keeps the artifact anyway")
    if v.status == "passed":
        log.info(f"  matches {engine} on {v.record['inputs']} inputs: {len(v.outputs)} output(s), "
                 f"max abs error {v.max_abs:.3g}")
    return v.record


def close_enough(c_ours: float, c_ort: float, e_ours: float, e_ort: float) -> bool:
    """Whether an int8 output whose cosine and max error against float32 are (c_ours, e_ours) is
    as close to it as ONNX Runtime's int8 (c_ort, e_ort): its distance 1 - cosine within 1.5x
    ONNX Runtime's (or 0.002 more), its max error within 1.5x. Two int8 executions of a sensitive
    network (ShuffleNetV2 with random weights: 0.9785 vs 0.9822) differ by that much."""
    return 1 - c_ours <= max(1.5 * (1 - c_ort), (1 - c_ort) + 0.002) and e_ours <= 1.5 * e_ort


def _as_close_to_float(res: dict, ours, ort_int8, float_sess, name: str, feed: dict) -> dict:
    """An int8 output off ONNX Runtime's int8 one passes if it is as close to the float model's
    (``float_sess``: ONNX Runtime's session of it)."""
    try:
        f = float_sess.run([name], feed)[0].astype(np.float64)
    except Exception:  # noqa: BLE001 - no float output to compare with: the first verdict stands
        return res
    o, q = np.asarray(ours, np.float64), np.asarray(ort_int8, np.float64)
    if o.shape != f.shape or not (np.all(np.isfinite(o)) and np.all(np.isfinite(f))):
        return res
    c_o, c_q = cosine(o, f), cosine(q, f)
    e_o, e_q = float(np.abs(o - f).max()), float(np.abs(q - f).max())
    # as close: within 1.5x ONNX Runtime's own distance from float32 (or 0.002 of cosine)
    if close_enough(c_o, c_q, e_o, e_q):
        return {**res, "ok": True, "vs_float32": {"cosine": round(c_o, 6), "max_abs": e_o,
                                                  "onnxruntime_int8_cosine": round(c_q, 6), "onnxruntime_int8_max_abs": e_q},
                "note": "off ONNX Runtime's int8 by rounding, as close to float32 as it is"}
    return {**res, "why": res.get("why", "") + f"; against float32: cosine {c_o:.5f} (ONNX Runtime's int8 {c_q:.5f}), "
                                       f"max error {e_o:.3g} ({e_q:.3g})"}


def onnx_reference_outputs(model, feed: dict) -> dict:
    """The model's outputs by ONNX's own reference implementation (onnx.reference, numpy), or {}
    where it cannot run the model."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    try:
        m = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    except Exception:  # noqa: BLE001 - no exact opinion to ask: the first verdict stands
        return {}
    for convert in (False, True):  # its int8 ops exist from opset 19 on: older models are converted
        try:
            if convert:
                from onnx import version_converter

                m = version_converter.convert_version(m, 21)
            ev = ReferenceEvaluator(m)
            return dict(zip(ev.output_names, ev.run(None, feed)))
        except Exception:  # noqa: BLE001 - no exact opinion to ask: the first verdict stands
            continue
    return {}


def _as_onnx_defines(res: dict, ours, exact, tol: Tolerance) -> dict:
    """An int8 output off ONNX Runtime's passes if it matches what ONNX defines the model to compute
    (its reference implementation): ONNX Runtime's uint8 x int8 kernels on CPUs without VNNI add
    pairs of products in 16 bits, which full-range int8 weights overflow (a QDQ CNN's cosine 0.81
    against deploy's exact int32 accumulation), and its result is then the one that is off."""
    if exact is None:
        return res
    again = compare_output(ours, exact, tol)
    if not again["ok"]:
        return res
    return {**res, **{k: v for k, v in again.items() if k != "why"}, "ok": True,
            "vs_onnxruntime": {k: res[k] for k in ("max_abs", "cosine") if k in res},
            "note": "matches ONNX's reference implementation, which ONNX Runtime's int8 kernels on this CPU do not"}


def _skipped(e: Exception) -> Verdict:
    reason = f"ONNX Runtime cannot run this model: {(str(e).strip().splitlines() or [type(e).__name__])[0][:200]}"
    log.warn(f"  not checked: {reason}")
    return Verdict("skipped", {"status": "skipped", "reason": reason})
