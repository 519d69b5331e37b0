"""Boards and GPUs registered with a TVM RPC tracker: used to measure (tune) and time (bench)."""

from __future__ import annotations

import socket

from ..errors import DeployError


def parse_tracker(tracker: str) -> tuple[str, int]:
    host, sep, port = tracker.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DeployError(f"bad --rpc-tracker '{tracker}'", hint="write it as HOST:PORT, e.g. 192.168.1.10:9190")
    return host, int(port)


def connect(tracker: str, key: str):
    """A session with the tracker, after checking that a device with ``key`` is registered."""
    from tvm import rpc

    host, port = parse_tracker(tracker)
    try:
        socket.create_connection((host, port), timeout=5).close()
        session = rpc.connect_tracker(host, port)
        summary = session.summary()
    except Exception as e:
        last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise DeployError(f"cannot reach the RPC tracker at {host}:{port}: {last[:200]}",
                          hint="start it with `python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190`")
    keys = {s["key"].split(":", 1)[-1] for s in summary.get("server_info", [])}
    if key not in keys:
        raise DeployError(f"no device with key '{key}' is registered at the RPC tracker {host}:{port}"
                          f" (registered: {', '.join(sorted(keys)) or 'none'})",
                          hint=f"on the device: python -m tvm.exec.rpc_server --tracker {host}:{port} --key {key}")
    return session
