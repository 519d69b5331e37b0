"""The `deploy` command: a thin layer over the Python API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from . import log
from .errors import DeployError, VerificationError
from .quantize.calibrate import CALIBRATORS

class _Escaped(Exception):
    """Ctrl-C or an EOFError in a command, carried past typer to ``_main``: typer would end the first
    with a silent exit 130 and the second with 'Aborted.' and exit 1."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


class _Group(typer.core.TyperGroup):
    def invoke(self, ctx):  # the callbacks and the command run in here
        try:
            return super().invoke(ctx)
        except (KeyboardInterrupt, EOFError) as e:
            raise _Escaped(e) from e


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, cls=_Group,
                  help="Compile ONNX models into verified, deployable libraries (Apache TVM).")
targets_app = typer.Typer(no_args_is_help=False, help="List target presets, or show one.")
app.add_typer(targets_app, name="targets")


def _version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    from .version import __version__

    def installed(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    typer.echo(f"deploy {__version__}\napache-tvm {installed('apache-tvm')}\n"
               f"onnxruntime {installed('onnxruntime')}")
    raise typer.Exit()


@app.callback()
def _global(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show TVM's logs and full tracebacks.")] = False,
            _v: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                             help="Print the versions of deploy, TVM and ONNX Runtime.")] = False):
    log.set_verbose(verbose)


def _load_inputs(items: list[str]) -> dict | None:
    from .run.runtime import read_npy

    if not items:
        return None
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise DeployError(f"bad --input '{item}'", hint="write it as NAME=path.npy")
        out[name] = read_npy(path, f"input '{name}'")
    return out


@app.command()
def inspect(model: Path, as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False):
    """Opset, inputs/outputs, op histogram, parameters, and every op that cannot be imported."""
    from rich.table import Table

    from .frontend.inspect import describe

    info = describe(model)
    if as_json:
        typer.echo(json.dumps({**info.__dict__, "inputs": [i.to_dict() for i in info.inputs],
                               "outputs": [o.to_dict() for o in info.outputs]}, indent=2))
    else:
        out = log.Console(highlight=False)
        kind = f"opset {info.opset}" if info.opset is not None else info.format
        out.print(f"[bold]{escape(str(model))}[/bold]  {kind}  producer {escape(info.producer or '?')}")
        t = Table("", "name", "dtype", "shape")
        for kind, specs in (("input", info.inputs), ("output", info.outputs)):
            for s in specs:  # user strings: "[batch, 3, ...]" would otherwise read as a markup tag
                t.add_row(kind, escape(s.name), s.dtype,
                          escape("[" + ", ".join(str(d) if d is not None else "?" for d in s.shape) + "]"))
        out.print(t)
        if info.dims:
            out.print("dynamic dims (inputs that share a name share the size):")
            for name, where in info.dims.items():
                out.print(escape(f"  {name}: {', '.join(where)}"))
            out.print(escape("  compile for a range: deploy compile MODEL --target TARGET "
                             + " ".join(f"--dim {n}=1..N" for n in info.dims)), soft_wrap=True)
        out.print(f"parameters: {info.param_count:,} ({info.param_bytes / 1e6:.2f} MB)"
                  + (f", compute: {info.gflop} GFLOP per run (conv + matmul)" if info.gflop is not None else ""))
        out.print("ops: " + ", ".join(f"{k} x{v}" for k, v in info.op_counts.items()))
        if info.unsupported:
            out.print(f"[red]cannot import {len(info.unsupported)} op type(s):[/red]")
            for op, nodes in sorted(info.unsupported.items()):
                out.print(escape(f"  {op}: {', '.join(nodes)}"))
        else:
            out.print("[green]every op can be imported[/green]")
    if info.unsupported:
        raise typer.Exit(1)


# The precision and int8 options compile and tune share (quantize.options.QuantOptions).
PrecisionOpt = Annotated[str, typer.Option("--precision", help="fp32, fp16 (mixed: softmax/norms/reductions stay fp32) or int8 (calibrated post-training quantization).")]
QuantizeOpt = Annotated[Optional[str], typer.Option("--quantize", help="int8: the same as --precision int8.")]
CalibrationOpt = Annotated[Optional[Path], typer.Option("--calibration", help="int8 calibration samples: .npz or a directory of .npy/.npz keyed by input name.")]
CalibratorOpt = Annotated[str, typer.Option("--calibrator", help="int8 calibrator: " + ", ".join(CALIBRATORS) + ".")]
PerChannelOpt = Annotated[bool, typer.Option("--per-channel/--per-tensor", help="int8 weight scales per output channel or per tensor.")]
ExcludeOpt = Annotated[Optional[list[str]], typer.Option("--exclude", help="ONNX node name to keep in float under int8 (repeatable).")]
AccuracyDropOpt = Annotated[Optional[float], typer.Option("--max-accuracy-drop", help="int8 gate: largest allowed drop (1 - top-1 agreement, or 1 - cosine) on held-out samples; sensitive layers fall back to float.")]
ShapesOpt = Annotated[Optional[list[str]], typer.Option("--shapes", help="Dynamic dim sizes to run at: S=7,64,300 (repeatable: every combination; other dims take their first optimized size, else their smallest).")]
DimOpt = Annotated[Optional[list[str]], typer.Option("--dim", help="A dynamic dim and its range: S=1..512; sizes after @ get kernels of their own: S=1..512@128,256 (repeatable).")]
RandomCalibrationOpt = Annotated[bool, typer.Option("--random-calibration", help="Calibrate int8 on random inputs (testing only: accuracy is meaningless).")]
DynamicOpt = Annotated[bool, typer.Option("--dynamic", help="int8 without calibration: MatMuls in int8 with activation scales computed at run time, like ONNX Runtime's quantize_dynamic (transformers).")]
SpeedCheckOpt = Annotated[bool, typer.Option("--speed-check/--no-speed-check", help="int8 on a target that runs here: build float32 too, keep in float the layers int8 makes slower, and write the float32 build if int8 is not faster end to end.")]


def _precision(precision: str, quantize: str | None, calibration, calibrator, per_channel, exclude,
               max_accuracy_drop, random_calibration, speed_check=True, dynamic=False):
    from .quantize.options import QuantOptions, resolve_precision

    return resolve_precision(precision, quantize), QuantOptions(
        calibration=calibration, calibrator=calibrator, per_channel=per_channel, exclude=list(exclude or []),
        max_accuracy_drop=max_accuracy_drop, random_calibration=random_calibration, speed_check=speed_check,
        dynamic=dynamic)


@app.command()
def compile(
    model: Path,
    target: Annotated[str, typer.Option("--target", "-t", help="Target preset (see `deploy targets`) or a .toml file.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Artifact directory [artifacts/MODEL-TARGET].")] = None,
    input_shape: Annotated[Optional[list[str]], typer.Option("--input-shape", help="NAME=1x3x224x224; binds dynamic dims (repeatable). A dim may be a name with a --dim range: NAME=BxS.")] = None,
    dim: DimOpt = None,
    opt_level: Annotated[int, typer.Option("--opt-level", "-O", help="0 none, 1 simplify, 2 + fusion, 3 + layout.")] = 3,
    dump_ir: Annotated[Optional[Path], typer.Option("--dump-ir", help="Write the IR after each stage into DIR.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output directory.")] = False,
    db: Annotated[Optional[Path], typer.Option("--db", help="Tuning database root [~/.cache/deploy/tuning].")] = None,
    runner: Annotated[Optional[bool], typer.Option("--runner/--no-runner", help="Add the C++ runner and TVM's runtime libraries (default: on for ARM CPU targets).")] = None,
    tune_budget: Annotated[Optional[str], typer.Option("--tune", help="Tune for this long first (e.g. 10m), then build with the records; auto (auto:20m): 10 min on the kernels furthest below this machine's matmul rate, ended early when the model stops improving.")] = None,
    precision: PrecisionOpt = "fp32",
    quantize: QuantizeOpt = None,
    calibration: CalibrationOpt = None,
    calibrator: CalibratorOpt = "minmax",
    per_channel: PerChannelOpt = True,
    exclude: ExcludeOpt = None,
    max_accuracy_drop: AccuracyDropOpt = None,
    random_calibration: RandomCalibrationOpt = False,
    dynamic: DynamicOpt = False,
    speed_check: SpeedCheckOpt = True,
    check: Annotated[Optional[bool], typer.Option("--check/--no-check", help="Compare the artifact with ONNX Runtime before writing it (default: where it runs here natively; --check runs ARM artifacts under qemu-user).")] = None,
    check_inputs: Annotated[Optional[Path], typer.Option("--check-inputs", help="Inputs for the check: an .npz keyed by input name (default: seeded random).")] = None,
    report: Annotated[bool, typer.Option("--report", help="Print the layer report: each kernel, the ONNX nodes it computes, its schedule and layout.")] = False,
):
    """Compile MODEL for a target into an artifact directory (library + manifest.json + layers.json; ARM: + runner, lib/)."""
    from .compile import CompileArgs, compile_model
    from .frontend.cleanup import parse_shape
    from .tune import parse_budget

    shapes = dict(parse_shape(s) for s in input_shape or [])
    budget, auto = parse_budget(tune_budget)
    prec, quant = _precision(precision, quantize, calibration, calibrator, per_channel, exclude, max_accuracy_drop,
                             random_calibration, speed_check, dynamic)
    compile_model(CompileArgs(model=model, target=target, output=output, input_shapes=shapes, dims=dim or {},
                              opt_level=opt_level, dump_ir=dump_ir, force=force, db=db, runner=runner,
                              tune_budget=budget, tune_auto=auto, precision=prec, quant=quant,
                              check=check, check_inputs=check_inputs, report=report))


@app.command()
def profile(
    artifact: Path,
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="The ONNX model: ONNX Runtime's profile of the same nodes next to deploy's.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Report directory [ARTIFACT-profile]: report.html, profile.png, profile.json.")] = None,
    input: Annotated[Optional[list[str]], typer.Option("--input", "-i", help="NAME=file.npy (repeatable); random if omitted.")] = None,
    threads: int = 2,
    runs: Annotated[int, typer.Option(help="Inferences timed per engine (medians are reported).")] = 20,
    warmup: Annotated[int, typer.Option(help="Inferences per engine before timing.")] = 5,
    top: Annotated[int, typer.Option(help="Kernels in the table and the chart.")] = 15,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole profile as JSON.")] = False,
    against: Annotated[Optional[str], typer.Option("--against", help="Peers profiled on --model: ort, openvino, or ort,openvino (default: ort).")] = None,
):
    """Where the time goes: each kernel's time, share and GFLOP/s with the ONNX nodes it computes, next to
    ONNX Runtime's time for those nodes (and OpenVINO's per op type with --against ort,openvino), each
    engine in its own process; writes report.html (charts) and profile.png."""
    from .run import bench as b
    from .run import profile as prof
    from .files import check_output_path
    from .run.profile_report import write_report
    from .run.runtime import Artifact

    if runs < 1:
        raise DeployError(f"--runs {runs} must be at least 1", hint="e.g. --runs 20")
    art = Artifact(artifact)
    out = output or artifact.parent / f"{artifact.name}-profile"
    check_output_path(out, "-o", is_dir=True)
    peers = b.parse_peers(against)
    if against and model is None:
        raise DeployError("--against profiles the peers on the ONNX model", hint="pass it with --model MODEL.onnx")
    for p in peers if model is not None else []:
        b.check_peer(p)
    result = prof.profile(art, model, threads=threads, runs=runs, warmup=warmup, inputs=_load_inputs(input or []),
                          peers=tuple(peers))
    try:
        files = write_report(result, out, top=top)
    except OSError as e:
        raise DeployError(f"cannot write the report to {out}: {e.strerror or e}", hint="choose another -o")
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    prof.print_profile(result, top=top)
    typer.echo("wrote " + ", ".join(str(f) for f in files))


@app.command()
def tune(
    model: Path,
    target: Annotated[str, typer.Option("--target", "-t", help="Target preset or .toml file.")],
    trials: Annotated[int, typer.Option(help="Measured candidates in all.")] = 1280,
    trials_per_task: Annotated[int, typer.Option(help="At most this many per kernel; kernels with this many records are skipped.")] = 64,
    time_budget: Annotated[Optional[str], typer.Option("--time-budget", help="Stop after this long, counted from the start of the command: 90s, 20m, 1h; auto (auto:20m): 10 min on the kernels furthest below this machine's matmul rate, ended early when the model stops improving.")] = None,
    db: Annotated[Optional[Path], typer.Option("--db", help="Tuning database root [~/.cache/deploy/tuning].")] = None,
    input_shape: Annotated[Optional[list[str]], typer.Option("--input-shape", help="NAME=1x3x224x224 (repeatable).")] = None,
    dim: DimOpt = None,
    opt_level: Annotated[int, typer.Option("--opt-level", "-O")] = 3,
    rpc_tracker: Annotated[Optional[str], typer.Option("--rpc-tracker", help="HOST:PORT of a TVM RPC tracker to measure on.")] = None,
    rpc_key: Annotated[Optional[str], typer.Option("--rpc-key", help="Device key registered at the tracker.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary at the end.")] = False,
    precision: PrecisionOpt = "fp32",
    quantize: QuantizeOpt = None,
    calibration: CalibrationOpt = None,
    calibrator: CalibratorOpt = "minmax",
    per_channel: PerChannelOpt = True,
    exclude: ExcludeOpt = None,
    random_calibration: RandomCalibrationOpt = False,
    dynamic: DynamicOpt = False,
):
    """Tune MODEL's kernels for a target with MetaSchedule; records go to the tuning database."""
    from .frontend.cleanup import parse_shape
    from .tune import TuneArgs, parse_budget, summary_json, tune_model

    budget, auto = parse_budget(time_budget)
    shapes = dict(parse_shape(s) for s in input_shape or [])
    prec, quant = _precision(precision, quantize, calibration, calibrator, per_channel, exclude, None,
                             random_calibration, dynamic=dynamic)
    summary = tune_model(TuneArgs(model=model, target=target, input_shapes=shapes, dims=dim or {}, trials=trials,
                                  trials_per_task=trials_per_task, time_budget=budget, auto=auto, db=db,
                                  opt_level=opt_level, rpc_tracker=rpc_tracker, rpc_key=rpc_key, precision=prec,
                                  quant=quant),
                         show=not as_json)
    if as_json:
        typer.echo(summary_json(summary))


db_app = typer.Typer(no_args_is_help=True, help="Inspect, merge, export and import tuning databases.")
app.add_typer(db_app, name="db")
DbOpt = Annotated[Optional[Path], typer.Option("--db", help="Tuning database root [~/.cache/deploy/tuning].")]


@db_app.command("stats")
def db_stats(db: DbOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False):
    """Workloads and records per target."""
    from .tune import database as tuning_db

    rows = [d.stats() for d in tuning_db.list_dbs(db)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no tuning records under {db or tuning_db.default_root()}")
    for r in rows:
        typer.echo(f"{r['name']:<28} workloads {r['workloads']:>4}  records {r['records']:>6}  valid {r['valid_records']:>6}")


@db_app.command("merge")
def db_merge(sources: list[Path], into: Annotated[Path, typer.Option("--into", help="Database root to merge into.")]):
    """Merge the records of other database roots into one."""
    from .tune import database as tuning_db

    for src in sources:
        if not tuning_db.list_dbs(src):
            raise DeployError(f"no tuning database under {src}", hint="pass a folder made by `deploy tune --db`")
        for name, n in tuning_db.merge_roots(into, src).items():
            typer.echo(f"{name}: {n} records added from {src}")


@db_app.command("export")
def db_export(output: Annotated[Path, typer.Option("--output", "-o", help="Archive to write (.tar.gz).")], db: DbOpt = None):
    """Pack a database root into one archive (for CI caches and shipping)."""
    from .tune import database as tuning_db

    typer.echo(str(tuning_db.export_archive(db or tuning_db.default_root(), output)))


@db_app.command("import")
def db_import(archive: Path, db: DbOpt = None):
    """Merge an archive made by `deploy db export` into a database root."""
    from .tune import database as tuning_db

    for name, n in tuning_db.import_archive(archive, db or tuning_db.default_root()).items():
        typer.echo(f"{name}: {n} records added")


@app.command()
def run(
    artifact: Path,
    input: Annotated[Optional[list[str]], typer.Option("--input", "-i", help="NAME=file.npy (repeatable); random if omitted.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Directory for the outputs as .npy.")] = None,
    shapes: Annotated[Optional[list[str]], typer.Option("--shapes", help="Sizes of the dynamic dims for random inputs: S=64 (repeatable).")] = None,
):
    """Run an artifact on this machine and save its outputs (ARM artifacts: their runner under qemu-user)."""
    import numpy as np

    from .files import check_output_path, output_file
    from .frontend.dims import parse_shapes
    from .run.runtime import Artifact

    art = Artifact(artifact)
    points = parse_shapes(shapes, art.dims)
    if len(points) > 1 or (points and input):
        raise DeployError("deploy run takes one size per dim, for random inputs only",
                          hint="e.g. --shapes S=64 --shapes B=2 (and no --input)")
    if output:
        check_output_path(output, "-o", is_dir=True)
    outs = art.run(art.random_inputs(0, points[0]) if points else _load_inputs(input or []))
    for name, arr in outs.items():
        if output:
            try:
                output.mkdir(parents=True, exist_ok=True)
                np.save(output / output_file(name), arr)
            except OSError as e:
                raise DeployError(f"cannot write {output / output_file(name)}: {e.strerror or e}",
                                  hint="choose another -o")
        typer.echo(f"{name}: {arr.dtype}{list(arr.shape)}  mean {float(np.mean(arr)):.6g}"
                   + (f"  -> {output / output_file(name)}" if output else ""))


@app.command()
def verify(
    artifact: Path,
    model: Annotated[Path, typer.Option("--model", "-m", help="The ONNX model to compare with (run by ONNX Runtime).")],
    input: Annotated[Optional[list[str]], typer.Option("--input", "-i", help="NAME=file.npy (repeatable); random if omitted.")] = None,
    atol: Annotated[Optional[float], typer.Option(help="Absolute tolerance (default: the precision's, as compile's check).")] = None,
    rtol: Annotated[Optional[float], typer.Option(help="Tolerance relative to max|ref| (default: the precision's).")] = None,
    shapes: ShapesOpt = None,
):
    """Compare an artifact's outputs with ONNX Runtime's on the same inputs: the verdict of compile's
    built-in check (ARM artifacts run under qemu-user)."""
    from .frontend.dims import parse_shapes
    from .run.runtime import Artifact
    from .run.verify import verify as do_verify

    for name, value in (("--atol", atol), ("--rtol", rtol)):
        if value is not None and not value >= 0:
            raise DeployError(f"{name} must be a non-negative number, not {value}")
    art = Artifact(artifact)
    points = parse_shapes(shapes, art.dims)
    if points and input:
        raise DeployError("--shapes and --input go together only one way: inputs fix the shapes",
                          hint="drop --shapes to verify on the given inputs, or drop --input for random ones")
    v = do_verify(art, model, _load_inputs(input or []), atol=atol, rtol=rtol, points=points or None)
    if v.status == "skipped":
        raise DeployError(f"cannot verify: {v.record['reason']}", hint="check the model with onnx.checker and ONNX Runtime")
    for line in v.lines():
        typer.echo(line)
    if v.status == "failed":
        raise VerificationError(f"outputs differ from ONNX Runtime ({v.record['tolerance']})",
                                hint="pass --atol/--rtol if the difference is expected, else report the model")


@app.command()
def bench(
    artifact: Path,
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="ONNX model to time ONNX Runtime on, for the ratio.")] = None,
    threads: int = 2,
    repeat: int = 20,
    seconds: Annotated[float, typer.Option("--seconds", "--duration", help="Rough total time per engine.")] = 2.0,
    iterations: Annotated[Optional[int], typer.Option("--iterations", "-n", help="Timed inferences per engine (instead of --seconds).")] = None,
    warmup: Annotated[int, typer.Option(help="Inferences per engine before timing.")] = 3,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency", "-c", help="Also measure throughput with N requests in flight (inferences/s).")] = None,
    input: Annotated[Optional[list[str]], typer.Option("--input", "-i", help="NAME=file.npy (repeatable); random if omitted.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Every figure as JSON.")] = False,
    rpc_tracker: Annotated[Optional[str], typer.Option("--rpc-tracker", help="HOST:PORT of a TVM RPC tracker: time on a board registered there.")] = None,
    rpc_key: Annotated[Optional[str], typer.Option("--rpc-key", help="The board's key at the tracker.")] = None,
    shapes: ShapesOpt = None,
    against: Annotated[Optional[str], typer.Option("--against", help="Peer engines to time on --model: ort, openvino, or ort,openvino (default: ort).")] = None,
):
    """Latency (p50/p90/p99, mean) and peak memory next to ONNX Runtime's (and OpenVINO's with
    --against ort,openvino), each engine in its own process; ARM artifacts: under emulation, or on a
    board via RPC."""
    from .run import bench as b
    from .frontend.dims import parse_shapes, point_text
    from .run.runtime import Artifact

    for flag, value, example in (("--repeat", repeat, 20), ("--iterations", iterations, 200),
                                 ("--concurrency", concurrency, 2)):
        if value is not None and value < 1:
            raise DeployError(f"{flag} {value} must be at least 1", hint=f"e.g. {flag} {example}")
    peers = b.parse_peers(against)
    if against and model is None:
        raise DeployError("--against times the peers on the ONNX model", hint="pass it with --model MODEL.onnx")
    for p in peers if model is not None else []:
        b.check_peer(p)
    art = Artifact(artifact)
    points = parse_shapes(shapes, art.dims)
    if points:
        if input or rpc_tracker or art.emulated:
            raise DeployError("--shapes times random inputs on this machine",
                              hint="drop --input / --rpc-tracker, or drop --shapes")
        rows = []
        for point in points:
            r = b.bench(art, model, threads=threads, repeat=repeat, min_seconds=seconds, warmup=warmup,
                        inputs=art.random_inputs(0, point), iterations=iterations, concurrency=concurrency,
                        peers=peers)
            rows.append({"dims": point, **r})
            if not as_json:
                d = r["deploy"]
                text = f"{point_text(point):<20} deploy p50 {d['median_ms']:.4g} ms  p90 {d['p90_ms']:.4g}"
                if "onnxruntime" in r:
                    text += (f"   onnxruntime p50 {r['onnxruntime']['median_ms']:.4g} ms  p90 "
                             f"{r['onnxruntime']['p90_ms']:.4g}   ratio {r['ratio']:.3f}x")
                if r.get("throughput"):
                    text += f"   {r['throughput']['deploy']['per_second']:.1f}/s"
                typer.echo(text)
        if as_json:
            typer.echo(json.dumps({"shapes": rows, "ratio_definition": b.RATIO_DEFINITION}, indent=2))
        else:
            typer.echo(f"({threads} threads; ratio = {b.RATIO_DEFINITION})")
        return
    if (rpc_tracker is None) != (rpc_key is None):
        raise DeployError("--rpc-tracker and --rpc-key go together", hint="pass both, e.g. --rpc-tracker 10.0.0.2:9190 --rpc-key rpi4")
    if rpc_tracker:
        r = b.bench_rpc(art, rpc_tracker, rpc_key, threads=threads, repeat=repeat, min_seconds=seconds)
    elif art.emulated:
        r = b.bench_emulated(art, threads=threads, repeat=min(repeat, 5))
    else:
        r = b.bench(art, model, threads=threads, repeat=repeat, min_seconds=seconds, warmup=warmup,
                    inputs=_load_inputs(input or []), iterations=iterations, concurrency=concurrency,
                    peers=peers)
    if as_json:
        typer.echo(json.dumps(r, indent=2))
        return
    d = r["deploy"]
    if r.get("emulated"):
        typer.echo(f"deploy       median {d['median_ms']:.3f} ms  max {d['p90_ms']:.3f} ms  ({d['samples']} runs, "
                   f"{threads} threads, EMULATED by {r['emulator']})")
        typer.echo("note: " + r["note"])
        return
    if r.get("rpc"):
        typer.echo(f"deploy       median {d['median_ms']:.3f} ms  p90 {d['p90_ms']:.3f} ms  (on {r['rpc']})")
        return

    def line(name: str, x: dict, mem: dict) -> str:
        return (f"{name:<12} p50 {x['median_ms']:.4g} ms  p90 {x['p90_ms']:.4g}  p99 {x['p99_ms']:.4g}  "
                f"mean {x['mean_ms']:.4g} +- {x['std_ms']:.2g} ms  ({x['samples']} inferences, {threads} threads; "
                f"peak RSS {mem['peak_rss_mb']:.0f} MB)")

    typer.echo(line("deploy", d, r["memory"]["deploy"]))
    for p in r.get("ratios", {}):
        typer.echo(line(p, r[p], r["memory"][p]))
    if "ratio" in r:  # against ONNX Runtime, or LiteRT for a .tflite
        typer.echo(f"ratio        {r['ratio']:.3f}x ({'slower' if r['ratio'] > 1 else 'faster'}) = "
                   + r["ratio_definition"])
    if len(r.get("ratios", {})) > 1 or "openvino" in r.get("ratios", {}):
        for p, x in r["ratios"].items():
            if p not in ("onnxruntime", "litert"):
                typer.echo(f"ratio        {x:.3f}x vs {p} (deploy's median / {p}'s, alternating turns)")
        f = r["fastest_peer"]
        typer.echo(f"ratio        {f['ratio']:.3f}x vs the fastest peer ({f['engine']})")
    mem = r["memory"]["deploy"]
    if "workspace_mb" in mem:
        typer.echo(f"memory       deploy: weights {mem['params_mb']:.1f} MB, workspace {mem['workspace_mb']:.1f} MB "
                   f"({mem['workspace_note']})")
    tp = r.get("throughput")
    if tp:
        for name in ("deploy", "onnxruntime", "litert"):
            if name in tp:
                typer.echo(f"{'throughput':<12} {name}: {tp[name]['per_second']:.1f} inferences/s with "
                           f"{tp['concurrency']} in flight ({tp[name]['inferences']} in {tp[name]['seconds']} s)")
        if "ratio" in tp:
            typer.echo(f"             {tp['ratio']:.3f}x = {tp['ratio_definition']}")


@app.command()
def build(
    config: Annotated[Path, typer.Argument(help="The build config (deploy.toml).")] = Path("deploy.toml"),
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Build only entries whose name, model or target matches (glob; repeatable, or comma-separated).")] = None,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", help="Parallel builds, each in its own process (default: the config's build.jobs, else 1).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output directory (default: the config's build.output, else artifacts).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
    junit: Annotated[Optional[Path], typer.Option("--junit", help="Write a JUnit XML report (one test case per entry).")] = None,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip the comparison with ONNX Runtime.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild every selected entry, cached or not.")] = False,
    shard: Annotated[Optional[str], typer.Option("--shard", help="K/N: build only shard K of N, a share of the entries balanced by estimated cost and the same on every machine; combine the N outputs with `deploy build-merge`.")] = None,
):
    """Build a matrix of models x targets x precisions from CONFIG; unchanged entries come from the cache."""
    from .ci import matrix
    from .ci.config import load_config, select
    from .ci.shard import parse_shard, shard_info

    place = parse_shard(shard) if shard is not None else None
    cfg = load_config(config)
    if jobs is not None and jobs < 1:
        raise DeployError("--jobs must be at least 1")
    info = shard_info(cfg, select(cfg.entries, only), *place, only) if place else None
    if info:
        log.info(f"shard {info['index']}/{info['count']}: {len(info['entries'])} of {info['total']} entries "
                 f"(estimated cost {info['cost']} of {info['total_cost']})")

    def progress(r: dict, i: int, n: int) -> None:
        extra = f"  {escape(r['error'].splitlines()[0][:200])}" if r.get("error") else ""
        if r.get("cleaned"):
            extra += f"  (removed what a killed build left: {', '.join(r['cleaned'])})"
        color = {"built": "green", "cached": "cyan", "failed": "red"}[r["status"]]
        log.info(f"[{i}/{n}] {r['name']}: [{color}]{r['status']}[/{color}] in {r['seconds'] or 0:.1f} s{extra}")

    results = matrix.build_matrix(cfg, only=only, jobs=jobs, verify=not no_verify, force=force,
                                  output=output, progress=progress, shard=info)
    out = Path(output).resolve() if output else cfg.output
    _build_reports(results, out, junit, as_json, {"shard": info} if info else None)


def _build_reports(results: list[dict], out: Path, junit: Path | None, as_json: bool, extra: dict | None) -> None:
    """The JUnit file, the JSON summary and the table of `build` and `build-merge`; exit 1 if an entry failed."""
    from .ci import build_report as report
    from .files import write_text

    record = next(iter((extra or {}).values()), None)
    if junit:
        try:
            junit.parent.mkdir(parents=True, exist_ok=True)
            write_text(junit, report.junit_xml(results, report.run_properties(record) if record else None))
        except OSError as e:
            raise DeployError(f"cannot write the JUnit report {junit}: {e.strerror}", hint="choose a writable --junit path")
    if as_json:
        typer.echo(json.dumps(report.summary_json(results, out, extra), indent=2, default=str))
    console = log.Console(highlight=False, stderr=as_json)  # with --json, stdout is only JSON
    if not console.is_terminal:
        console.width = 160  # CI logs: room for the error column
    report.print_table(results, console)
    if any(r["status"] == "failed" for r in results):
        raise typer.Exit(1)


@app.command("build-merge")
def build_merge(
    shards: Annotated[list[Path], typer.Argument(help="The output directories of `deploy build --shard K/N`, one per K.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The merged output directory (artifacts, index.json, SHA256SUMS).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
    junit: Annotated[Optional[Path], typer.Option("--junit", help="Write a JUnit XML report (one test case per entry).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output directory.")] = False,
):
    """Combine the outputs of `deploy build --shard K/N` (K = 1..N) into one: refuses shards of other
    configs or tool versions, a missing shard or one given twice."""
    from .ci.merge import merge_shards

    results, record = merge_shards(shards, output, force=force)
    log.info(f"merged {record['count']} shards: {len(results)} entries into {Path(output).resolve()}")
    _build_reports(results, Path(output).resolve(), junit, as_json, {"merged": record})


@app.command()
def package(
    artifact: Path,
    output: Annotated[Path, typer.Option("--output", "-o", help="The bundle to write (.tar.gz).")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle.")] = False,
):
    """Bundle an artifact for its board: library, runner, TVM runtime, and a one-page README."""
    from .package import make_bundle
    from .run.runtime import Artifact

    art = Artifact(artifact)
    out = make_bundle(art, output, force=force)
    what = "runner + lib/ + " if art.device else ""
    typer.echo(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB: model.so + manifest.json + {what}README.md)")


@targets_app.callback(invoke_without_command=True)
def targets_list(ctx: typer.Context):
    """List target presets."""
    if ctx.invoked_subcommand:
        return
    from .targets import list_presets

    for p in list_presets():
        typer.echo(f"{p.name:<13} {p.family:<5} {p.arch:<8} {p.description}")


@targets_app.command("show")
def targets_show(name: str):
    """Show one preset: its TVM target JSON, host, toolchain."""
    from .targets import get_preset

    p = get_preset(name)
    d = p.to_dict()
    d["tvm_target"] = p.target_json()
    typer.echo(json.dumps(d, indent=2, default=str))


def _main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one message and a non-zero exit, never a traceback."""
    try:
        try:
            app(args=argv)  # exits through SystemExit with typer's own code on success or usage errors
            return 0
        except _Escaped as e:
            raise e.error from None
    except VerificationError as e:
        log.console.print(f"[red]error:[/red] {escape(str(e))}")
        return 1
    except DeployError as e:  # the message is text: [batch, seq, 64] is no markup
        log.console.print(f"[red]error:[/red] {escape(e.message)}")
        if e.hint:
            log.console.print(f"  [bold]fix:[/bold] {escape(e.hint)}")
        if log.verbose():
            import traceback
            traceback.print_exc()
        return 2
    except KeyboardInterrupt:
        log.console.print("[red]interrupted[/red]")
        return 130
    except Exception as e:  # a bug of ours or TVM's: one line, the trace with -v
        if log.verbose():
            raise
        last = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        log.console.print(f"[red]internal error:[/red] {escape(f'{type(e).__name__}: {last}'[:480])}")
        log.console.print("  run again with -v for the full trace")
        return 3


def main() -> None:
    sys.exit(_main())


if __name__ == "__main__":
    main()
