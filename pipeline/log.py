"""Console output and TVM noise control.

TVM prints from C++ straight to file descriptor 2 ("Scope Saving" lines on export/load, pass
warnings), so Python logging levels cannot hide it: :func:`tvm_quiet` redirects fd 2 around
TVM calls unless verbose mode is on, and replays the captured text if the call fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile

from rich.console import Console

console = Console(stderr=True, highlight=False, soft_wrap=True)
_verbose = False


def set_verbose(flag: bool) -> None:
    global _verbose
    _verbose = flag
    level = logging.DEBUG if flag else logging.ERROR
    for name in ("tvm", "tvm_ffi", "onnxslim"):
        logging.getLogger(name).setLevel(level)
    # MetaSchedule's console handler takes this logger's level (INFO shows per-batch tables)
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.INFO if flag else logging.ERROR)
    os.environ.setdefault("TVM_LOG_DEBUG", "0")


def verbose() -> bool:
    return _verbose


def info(msg: str) -> None:
    console.print(msg)


def warn(msg: str) -> None:
    from rich.markup import escape

    console.print(f"[yellow]warning:[/yellow] {escape(msg)}")


def debug(msg: str) -> None:
    if _verbose:
        console.print(f"[dim]{msg}[/dim]")


@contextlib.contextmanager
def tvm_quiet():
    """Silence C++ output on fd 2 (and Python's stderr) unless verbose."""
    if _verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not ok:
                sink.seek(0)
                captured = sink.read().decode(errors="replace").strip()
                if captured:
                    debug(captured)
