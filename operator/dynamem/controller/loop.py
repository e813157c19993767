"""The balancing loop: a round every ``--interval`` seconds, or soon after a wake-up, on the leader.

kopf's handlers (:mod:`dynamem.controller.handlers`) only feed the loop: they keep the view of the cluster
and set ``wake``; who may balance is decided by :mod:`dynamem.controller.leadership`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dynamem.controller.balancer import Balancer
from dynamem.controller.leadership import peering_active
from dynamem.controller.metrics import OperatorMetrics
from dynamem.controller.options import OperatorOptions
from dynamem.controller.snapshot import Observed
from dynamem.kube.api import KubeApi

logger = logging.getLogger("dynamem.operator")

# Replicas started together register in the peering object within a second or two; none balances before
# this many seconds have passed, so a lower-priority replica never runs a round before it sees the leader.
PEERING_GRACE_S = 5.0


@dataclass
class OperatorState:
    """What the registered handlers share: options, the loop's wake-up, its task."""

    options: OperatorOptions
    identity: str
    priority: int
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    indexed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    api: KubeApi | None = None
    rounds: int = 0
    started: float = field(default_factory=time.monotonic)

    async def is_active(self) -> bool:
        """Whether this replica balances now (kopf's peering rule; always in standalone mode)."""
        if self.options.standalone or self.api is None:
            return True
        if time.monotonic() - self.started < PEERING_GRACE_S:
            return False  # peers that start with us may not be registered yet
        try:
            if self.options.all_namespaces:
                bodies = [
                    await self.api.custom.get_cluster_custom_object(
                        "kopf.dev", "v1", "clusterkopfpeerings", self.options.peering
                    )
                ]
            else:  # kopf keeps one KopfPeering per watched namespace; a conflict in any pauses it
                bodies = [
                    await self.api.custom.get_namespaced_custom_object(
                        "kopf.dev", "v1", namespace, "kopfpeerings", self.options.peering
                    )
                    for namespace in self.options.namespaces
                ]
        except Exception as exc:
            logger.warning("peering object %r unreadable, not balancing: %s", self.options.peering, exc)
            return False
        now = dt.datetime.now(dt.UTC)
        for body in bodies:
            status = body.get("status") or {} if isinstance(body, dict) else {}
            if self.identity not in status or not peering_active(status, self.identity, self.priority, now):
                return False  # not registered there yet, or a live peer outranks us
        return True


async def balancing_loop(state: OperatorState, balancer: Balancer, observe: Callable[[], Observed]) -> None:
    """Run a round every interval, or soon after a wake-up; only on the replica that peering lets act."""
    options = state.options
    await state.indexed.wait()
    was_active = True
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.wake.wait(), timeout=options.interval_s)
        state.wake.clear()
        try:
            active = await state.is_active()
            if active and not was_active:
                # kopf paused our watches while we stood by; it lists everything again on resuming. Balance
                # only once that fresh picture has started to arrive, not on what we saw before the pause.
                state.indexed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state.indexed.wait(), timeout=30)
            was_active = active
            if not active:
                state.metrics.standby()
            else:
                result = await balancer.run_round(observe())
                state.rounds += 1
                logger.debug(
                    "round %d: %d memory writes, %d status writes, %d deferred, %.3fs",
                    state.rounds,
                    result.memory_writes,
                    result.status_writes,
                    result.deferred,
                    result.duration_s,
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("balancing round failed; the next one starts afresh")
        await asyncio.sleep(options.min_gap_s)
