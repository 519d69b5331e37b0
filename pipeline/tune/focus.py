"""Where a tuning budget goes: the kernels that cost the most, or lose the most against the machine's matmul rate.

With 40-100 kernels (a CNN), a search round over every one of them took a 10-minute budget before
any kernel improved, so a budget goes to a few kernels. Plain budgets (``--tune 10m``) rank them
by their measured time. ``--tune auto`` ranks them by the time each loses against this machine's
own float32 matmul rate (``matmul_rate``): a convolution already at half that rate has little
left to gain however long it runs, one at a tenth of it has most of its time to gain.
"""

from __future__ import annotations

import time

NEAR_RATE = 0.5  # a kernel at half the machine's matmul rate or more is not worth a search


def matmul_rate(n: int = 512, runs: int = 8) -> float:
    """This machine's float32 matmul rate in FLOP/s: numpy's BLAS on an n x n x n product, all cores,
    the best of ``runs`` (the tuning runner also times on all cores)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm the BLAS thread pool
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best


def lost_time(cost: dict[str, float], flops: dict[str, float], rate: float) -> dict[str, float]:
    """Seconds per inference each kernel loses against ``rate``: its measured time (``cost``, calls
    included) less what its FLOPs would take at the rate; nothing for a kernel at ``NEAR_RATE`` or better."""
    out = {}
    for name, secs in cost.items():
        ideal = flops.get(name, 0.0) / rate
        out[name] = 0.0 if ideal >= NEAR_RATE * secs else secs - ideal
    return out


def focus(todo: list, cost: dict[str, float], budget: float | None) -> tuple[list, list, float]:
    """The tasks worth a budget: the largest ``cost`` first (seconds per inference: measured time, or
    time lost against the matmul rate) until 90% of the total, at most one per minute of budget (at
    least 4); the rest keep their defaults. Returns (chosen, left, the chosen share of the total)."""
    if not budget:
        return todo, [], 1.0
    known = sorted((t for t in todo if cost.get(t.task_name, 0) > 0), key=lambda t: -cost[t.task_name])
    total = sum(cost[t.task_name] for t in known)
    cap = max(4, int(budget // 60))
    chosen, acc = [], 0.0
    for t in known:
        if len(chosen) >= cap or acc >= 0.9 * total:
            break
        chosen.append(t)
        acc += cost[t.task_name]
    if not chosen:
        if any(t.task_name in cost for t in todo):  # every kernel measured, none worth a search
            return [], list(todo), 0.0
        return todo, [], 1.0  # nothing measured (no default schedules): every task
    return chosen, [t for t in todo if t not in chosen], acc / total
