"""Is this replica's balancing loop alive? What ``--liveness``'s ``/healthz`` answers, beside kopf's own.

kopf's health endpoint runs the probe handlers and answers 500 when one fails
(``kopf/_core/engines/probing.py``, ``health_reporter``; ``activities.run_activity`` raises when a handler
failed for good). With no probe handler it answers 200 for as long as the process serves HTTP, even when the
balancing loop has died or hangs on a call that never returns: the pod would stay Running and the Lease
renewed while nothing is balanced. :func:`loop_health` is that probe: it fails when a task the operator
started has ended (the loop, the Lease, its wake-ups), or when the loop has not gone round for
:func:`stale_after` seconds; the kubelet then restarts the container, and the other replica takes the Lease.

The loop goes round at least every ``--min-gap`` + ``--interval`` (a standby too: it checks the Lease each
time); a round of a large cluster takes seconds, one against a throttling API server longer (every call has
its own timeout). So the line is generous: :data:`STALE_ROUNDS` intervals, and never under
:data:`STALE_MIN_S`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "STALE_MIN_S",
    "STALE_ROUNDS",
    "LoopHealth",
    "LoopStalled",
    "loop_health",
    "stale_after",
    "write_guard",
]

STALE_MIN_S = 600.0
STALE_ROUNDS = 30


class LoopStalled(Exception):
    """The balancing loop is dead or hangs: the probe fails with this message."""


@dataclass(frozen=True, slots=True)
class LoopHealth:
    """What a healthy probe reports (kopf shows it as JSON under the probe's id)."""

    leading: bool
    rounds: int
    since_loop_s: float

    def as_dict(self) -> dict[str, object]:
        return {"leading": self.leading, "rounds": self.rounds, "since_loop_s": self.since_loop_s}


def stale_after(interval_s: float, min_gap_s: float) -> float:
    """Seconds without a turn of the loop after which it counts as hung."""
    return max(STALE_MIN_S, STALE_ROUNDS * (interval_s + min_gap_s))


def loop_health(
    *,
    tasks: Sequence[asyncio.Task[None]],
    beat: float,
    now: float,
    interval_s: float,
    min_gap_s: float,
    leading: bool,
    rounds: int,
) -> LoopHealth:
    """The loop's health at monotonic time ``now``, its last turn at ``beat``; raises :class:`LoopStalled`.

    ``tasks``: the long-lived tasks the operator started (none of them ends before the operator stops)."""
    for task in tasks:
        if task.done():
            if task.cancelled():
                why = "was cancelled"
            elif (exc := task.exception()) is not None:
                why = f"failed: {type(exc).__name__}: {exc}"
            else:
                why = "returned"
            raise LoopStalled(f"task {task.get_name()} {why}; nothing balances in this replica")
    age = now - beat
    limit = stale_after(interval_s, min_gap_s)
    if age > limit:
        raise LoopStalled(
            f"the balancing loop has not gone round for {age:.0f}s (limit {limit:.0f}s): it hangs"
        )
    return LoopHealth(leading=leading, rounds=rounds, since_loop_s=round(age, 1))


def write_guard(alive: Callable[[], None], lease_check: Callable[[], None] | None) -> Callable[[], None]:
    """What runs before every attempt of a write (``KubeApi.guard_writes``): the loop counts as alive (a
    round whose writes a slow API server answers late is working, not hung), then the Lease is checked, which
    raises ``NotLeading`` once this replica may no longer write (a standalone operator has no Lease)."""

    def guard() -> None:
        alive()
        if lease_check is not None:
            lease_check()

    return guard
