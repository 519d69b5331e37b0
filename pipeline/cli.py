"""The `deploy` command: a thin layer over the Python API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import log
from .errors import DeployError, VerificationError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compile ONNX models into verified, deployable libraries (Apache TVM).")
targets_app = typer.Typer(no_args_is_help=False, help="List target presets, or show one.")
app.add_typer(targets_app, name="targets")


@app.callback()
def _global(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show TVM's logs and full tracebacks.")] = False):
    log.set_verbose(verbose)


def _load_inputs(items: list[str]) -> dict | None:
    import numpy as np

    if not items:
        return None
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise DeployError(f"bad --input '{item}'", hint="write it as NAME=path.npy")
        try:
            out[name] = np.load(path)
        except (OSError, ValueError) as e:
            raise DeployError(f"cannot read {path} for input '{name}': {e}", hint="pass a .npy file made by numpy.save")
    return out


@app.command()
def inspect(model: Path, as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False):
    """Opset, inputs/outputs, op histogram, parameters, and every op that cannot be imported."""
    from rich.table import Table

    from .load import load_model
    from .modelinfo import model_info

    info = model_info(load_model(model).model)
    if as_json:
        typer.echo(json.dumps({**info.__dict__, "inputs": [i.to_dict() for i in info.inputs],
                               "outputs": [o.to_dict() for o in info.outputs]}, indent=2))
    else:
        out = log.Console(highlight=False)
        out.print(f"[bold]{model}[/bold]  opset {info.opset}  producer {info.producer or '?'}")
        t = Table("", "name", "dtype", "shape")
        for kind, specs in (("input", info.inputs), ("output", info.outputs)):
            for s in specs:
                t.add_row(kind, s.name, s.dtype, "[" + ", ".join(str(d) if d is not None else "?" for d in s.shape) + "]")
        out.print(t)
        out.print(f"parameters: {info.param_count:,} ({info.param_bytes / 1e6:.2f} MB)")
        out.print("ops: " + ", ".join(f"{k} x{v}" for k, v in info.op_counts.items()))
        if info.unsupported:
            out.print(f"[red]cannot import {len(info.unsupported)} op type(s):[/red]")
            for op, nodes in sorted(info.unsupported.items()):
                out.print(f"  {op}: {', '.join(nodes)}")
        else:
            out.print("[green]every op can be imported[/green]")
    if info.unsupported:
        raise typer.Exit(1)


@app.command()
def compile(
    model: Path,
    target: Annotated[str, typer.Option("--target", "-t", help="Target preset (see `deploy targets`) or a .toml file.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Artifact directory [artifacts/MODEL-TARGET].")] = None,
    input_shape: Annotated[Optional[list[str]], typer.Option("--input-shape", help="NAME=1x3x224x224; binds dynamic dims (repeatable).")] = None,
    opt_level: Annotated[int, typer.Option("--opt-level", "-O", help="0 none, 1 simplify, 2 + fusion, 3 + layout.")] = 3,
    dump_ir: Annotated[Optional[Path], typer.Option("--dump-ir", help="Write the IR after each stage into DIR.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output directory.")] = False,
    runner: Annotated[Optional[bool], typer.Option("--runner/--no-runner", help="Add the C++ runner and TVM's runtime libraries (default: on for ARM CPU targets).")] = None,
):
    """Compile MODEL for a target into an artifact directory (library + manifest.json; ARM: + runner, lib/)."""
    from .cleanup import parse_shape
    from .compile import CompileArgs, compile_model

    shapes = dict(parse_shape(s) for s in input_shape or [])
    compile_model(CompileArgs(model=model, target=target, output=output, input_shapes=shapes,
                              opt_level=opt_level, dump_ir=dump_ir, force=force, runner=runner))


@app.command()
def run(
    artifact: Path,
    input: Annotated[Optional[list[str]], typer.Option("--input", "-i", help="NAME=file.npy (repeatable); random if omitted.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Directory for the outputs as .npy.")] = None,
):
    """Run an artifact on this machine and save its outputs (ARM artifacts: their runner under qemu-user)."""
    import numpy as np

    from .runtime import Artifact

    outs = Artifact(artifact).run(_load_inputs(input or []))
    if output:
        output.mkdir(parents=True, exist_ok=True)
    for name, arr in outs.items():
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        if output:
            np.save(output / f"{safe}.npy", arr)
        typer.echo(f"{name}: {arr.dtype}{list(arr.shape)}  mean {float(np.mean(arr)):.6g}" + (f"  -> {output / safe}.npy" if output else ""))


@app.command()
def verify(
    artifact: Path,
    model: Annotated[Path, typer.Option("--model", "-m", help="The ONNX model to compare with (run by ONNX Runtime).")],
    input: Annotated[Optional[list[str]], typer.Option("--input", "-i", help="NAME=file.npy (repeatable); random if omitted.")] = None,
    atol: float = 1e-4,
    rtol: float = 1e-3,
):
    """Compare an artifact's outputs with ONNX Runtime's on the same inputs (ARM artifacts run under qemu-user)."""
    from .runtime import Artifact
    from .verify import verify as do_verify

    errors = do_verify(Artifact(artifact), model, _load_inputs(input or []), atol=atol, rtol=rtol)
    for e in errors:
        mark = "ok" if e.ok else "FAIL"
        typer.echo(f"{mark:4} {e.name}: max abs error {e.max_abs:.3g}, max rel error {e.max_rel:.3g}")
    if not all(e.ok for e in errors):
        raise VerificationError(f"outputs differ from ONNX Runtime beyond atol={atol}, rtol={rtol}",
                                hint="loosen --atol/--rtol if expected, else report the model")


@app.command()
def bench(
    artifact: Path,
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="ONNX model to time ONNX Runtime on, for the ratio.")] = None,
    threads: int = 2,
    repeat: int = 20,
    seconds: Annotated[float, typer.Option(help="Rough total time per engine.")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    rpc_tracker: Annotated[Optional[str], typer.Option("--rpc-tracker", help="HOST:PORT of a TVM RPC tracker: time on a board registered there.")] = None,
    rpc_key: Annotated[Optional[str], typer.Option("--rpc-key", help="The board's key at the tracker.")] = None,
):
    """Latency (median, p90) next to ONNX Runtime's; ARM artifacts: under emulation, or on a board via RPC."""
    from . import bench as b
    from .runtime import Artifact

    art = Artifact(artifact)
    if (rpc_tracker is None) != (rpc_key is None):
        raise DeployError("--rpc-tracker and --rpc-key go together", hint="pass both, e.g. --rpc-tracker 10.0.0.2:9190 --rpc-key rpi4")
    if rpc_tracker:
        r = b.bench_rpc(art, rpc_tracker, rpc_key, threads=threads, repeat=repeat, min_seconds=seconds)
    elif art.emulated:
        r = b.bench_emulated(art, threads=threads, repeat=min(repeat, 5))
    else:
        r = b.bench(art, model, threads=threads, repeat=repeat, min_seconds=seconds)
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
    typer.echo(f"deploy       median {d['median_ms']:.3f} ms  p90 {d['p90_ms']:.3f} ms  ({threads} threads)")
    if "onnxruntime" in r:
        o = r["onnxruntime"]
        typer.echo(f"onnxruntime  median {o['median_ms']:.3f} ms  p90 {o['p90_ms']:.3f} ms  ({threads} threads)")
        typer.echo(f"ratio        {r['ratio']:.2f}x ONNX Runtime's latency ({'slower' if r['ratio'] > 1 else 'faster'})")


@app.command()
def package(
    artifact: Path,
    output: Annotated[Path, typer.Option("--output", "-o", help="The bundle to write (.tar.gz).")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle.")] = False,
):
    """Bundle an artifact for its board: library, runner, TVM runtime, and a one-page README."""
    from .package import make_bundle
    from .runtime import Artifact

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
        app(args=argv)  # exits through SystemExit with typer's own code on success or usage errors
        return 0
    except VerificationError as e:
        log.console.print(f"[red]error:[/red] {e}")
        return 1
    except DeployError as e:
        log.console.print(f"[red]error:[/red] {e.message}")
        if e.hint:
            log.console.print(f"  [bold]fix:[/bold] {e.hint}")
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
        log.console.print(f"[red]internal error:[/red] {type(e).__name__}: {last}"[:500])
        log.console.print("  run again with -v for the full trace")
        return 3


def main() -> None:
    sys.exit(_main())


if __name__ == "__main__":
    main()
