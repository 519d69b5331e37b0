"""Worker processes and Ctrl-C.

The terminal sends Ctrl-C's SIGINT to every process of the foreground group: deploy's worker
processes (``deploy build --jobs``, profile's and bench's engines) would each stop with a
KeyboardInterrupt traceback of their own. They start with SIGINT ignored instead (an ignored
signal stays ignored across exec), and the main process, which gets it too, ends them and exits
130 with one line (``cli._main``).
"""

from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def sigint_ignored_by_children():
    """Processes started in this block ignore SIGINT. (A no-op off the main thread, where Python
    cannot change signal handlers.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def stop_pool(pool) -> None:
    """End a ProcessPoolExecutor's workers now (SIGTERM), with their work: on Ctrl-C, or when the
    parent fails, instead of waiting for every task in flight to finish."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(10)
