"""Demand read ahead of the round, as an informer takes the API server off a reconcile's path.

At 10,000 VMs a demand reading (seven instant queries over 10,000 series each, and their answers parsed) takes
a second or two of a busy Prometheus, about half of a round's wall time when the round waited for it.
:class:`DemandAhead` wraps a :class:`~dynamem.controller.ports.DemandSource` and reads it ahead: the loop says
when the next round is due (:meth:`DemandAhead.read_ahead`), and the reading starts one lead before that
(twice the slowest of the last few reads, and a second), so it is ready when the round starts.

A round uses the newest reading only while it is fresh: started no more than ``max_age_s`` ago (Prometheus
evaluates an instant query when it gets it, so a reading is as old as its start). Otherwise the round waits
for the read in flight, or starts one and waits for it, and that wait is part of the round's duration, as it
was when every round read for itself. A wake-up round between two regular ones (a VM started, a spec edited)
therefore sees demand no older than ``max_age_s`` either.

A failed reading (Prometheus down) is a reading like any other: the round holds memory and the statuses wait
out their grace (:class:`dynamem.controller.balancer.RoundOptions`), as before. One read at a time: a round
that finds a read in flight waits for it instead of asking Prometheus a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable

from dynamem.controller.metrics import OperatorMetrics
from dynamem.controller.ports import DemandReading, DemandSource

# The reads whose durations set the lead: the slowest of these, so one quick read after slow ones does not
# make the next reading late.
RECENT_READS = 5
# The lead: the slowest recent read times this, plus this margin (a read at 10,000 VMs on a busy Prometheus
# took 3 to 8 s in the scale bench: with x1.25 and 0.5 s, 3 rounds of 15 still found their read in flight and
# waited for it); and the lead before any read was timed. Starting early costs only freshness, which max_age_s
# bounds anyway.
LEAD_FACTOR = 2.0
LEAD_MARGIN_S = 1.0
FIRST_LEAD_S = 2.0
# A reading is started at most max_age_s less this before its round (or a quarter of max_age_s, if less): the
# loop's timers and a busy event loop may start the round a little late, and the reading must still be fresh.
STALE_SLACK_S = 1.0


class DemandAhead:
    """A :class:`~dynamem.controller.ports.DemandSource` that reads ``source`` ahead of the rounds.

    ``clock`` and ``sleep`` are the monotonic clock and the wait (the tests pass their own); ``metrics``:
    where each read's duration, each round's wait and the age of the reading it got are counted.
    """

    def __init__(
        self,
        source: DemandSource,
        *,
        max_age_s: float,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_age_s < 0:
            raise ValueError(f"max_age_s: {max_age_s!r} is negative")
        self.source = source
        self.max_age_s = max_age_s
        self.metrics = metrics
        self.clock = clock
        self.sleep = sleep
        self.newest: tuple[float, DemandReading] | None = None  # (when its read started, the reading)
        self.in_flight: asyncio.Task[DemandReading] | None = None
        self.scheduled: asyncio.Task[None] | None = None  # waits for the moment to start the next read
        self.durations: deque[float] = deque(maxlen=RECENT_READS)
        self.reads = 0  # reads started, ahead or awaited
        self.waited = 0  # rounds that had to wait for their reading
        self.last_age_s: float | None = None  # the age of the reading the last round got

    async def read(self) -> DemandReading:
        """The newest reading if fresh, else the read in flight or a new one, awaited."""
        now = self.clock()
        if self.newest is not None and now - self.newest[0] <= self.max_age_s:
            reading = self.newest[1]
        else:
            self.waited += 1
            if self.metrics is not None:
                self.metrics.demand_waits.inc()
            reading = await self.refresh()
        self.last_age_s = self.clock() - self.newest[0] if self.newest is not None else None
        if self.metrics is not None and self.last_age_s is not None:
            self.metrics.demand_age.set(self.last_age_s)
        return reading

    async def refresh(self) -> DemandReading:
        """Read now, or wait for the read in flight; the reading becomes the newest."""
        task = self.in_flight or self._start()
        return await asyncio.shield(task)  # a cancelled round leaves the read to finish for the next one

    def read_ahead(self, due_in_s: float) -> None:
        """A round is due in ``due_in_s`` seconds: start a read :meth:`lead_s` before it, but no earlier than
        ``max_age_s`` less a slack before it, or the reading would be stale when the round comes (a read
        slower than that is waited for, in flight, by the round). Replaces the read scheduled before; a read
        already in flight goes on."""
        self._cancel_scheduled()
        lead = min(self.lead_s(), self.max_age_s - min(STALE_SLACK_S, self.max_age_s / 4))
        self.scheduled = asyncio.create_task(self._start_in(due_in_s - lead), name="dynamem-demand")

    def lead_s(self) -> float:
        """How long before a round its read starts: the slowest recent read, and a margin."""
        if not self.durations:
            return FIRST_LEAD_S + LEAD_MARGIN_S
        return max(self.durations) * LEAD_FACTOR + LEAD_MARGIN_S

    async def stop(self) -> None:
        """Cancel the scheduled read and the one in flight (this replica stopped balancing)."""
        self._cancel_scheduled()
        task, self.in_flight = self.in_flight, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _start_in(self, delay_s: float) -> None:
        if delay_s > 0:
            await self.sleep(delay_s)
        if self.in_flight is None:
            self._start()

    def _start(self) -> asyncio.Task[DemandReading]:
        self.reads += 1
        task = asyncio.create_task(self._read(self.clock()), name="dynamem-demand-read")
        self.in_flight = task
        return task

    async def _read(self, started: float) -> DemandReading:
        try:
            reading = await self.source.read()
        finally:
            if self.in_flight is asyncio.current_task():
                self.in_flight = None
        self.durations.append(self.clock() - started)
        if self.metrics is not None:
            self.metrics.demand_read_seconds.observe(self.durations[-1])
        if self.newest is None or started >= self.newest[0]:
            self.newest = (started, reading)
        return reading

    def _cancel_scheduled(self) -> None:
        if self.scheduled is not None and not self.scheduled.done():
            self.scheduled.cancel()
        self.scheduled = None
