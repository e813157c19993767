"""Demand read ahead of the round (:mod:`dynamem.controller.demand_ahead`): a round uses a reading read ahead
while it is fresh, waits for a fresh one otherwise (and that wait is in its duration), and the loop asks for
the next reading after each round."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from dynamem.controller.balancer import Balancer, RoundResult
from dynamem.controller.demand import DemandReading
from dynamem.controller.demand_ahead import (
    FIRST_LEAD_S,
    LEAD_FACTOR,
    LEAD_MARGIN_S,
    STALE_SLACK_S,
    DemandAhead,
)
from dynamem.controller.loop import OperatorState, _list_between_rounds, balancing_loop
from dynamem.controller.options import OperatorOptions
from dynamem.controller.snapshot import Observed
from dynamem.kube.objects import GI, ObjectKey

from .builders_k8s import NS, FakeWriter
from .test_balancer import NOW, OPTIONS, run, workday


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class CountingDemand:
    """Each read returns its number as the demand of VM ``vm``; a read takes ``takes_s`` on ``clock`` and,
    when ``gate`` is given, waits for it."""

    clock: Clock
    takes_s: float = 0.0
    gate: asyncio.Event | None = None
    reads: int = 0
    started: list[float] = field(default_factory=list)

    async def read(self) -> DemandReading:
        self.reads += 1
        self.started.append(self.clock.now)
        if self.gate is not None:
            await self.gate.wait()
        self.clock.now += self.takes_s
        return DemandReading(by_vm={ObjectKey(NS, "vm"): self.reads})


@dataclass
class Sleeps:
    """The waits the read-ahead asked for, each over at once."""

    asked: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)


async def settle() -> None:
    """Let the tasks started so far run to their end (or their next real wait)."""
    for _ in range(10):
        await asyncio.sleep(0)


def test_a_round_uses_the_reading_read_ahead() -> None:
    async def scenario() -> tuple[DemandReading, int, list[float]]:
        clock, sleeps = Clock(), Sleeps()
        source = CountingDemand(clock)
        ahead = DemandAhead(source, max_age_s=5.0, clock=clock, sleep=sleeps)
        ahead.read_ahead(10.0)
        await settle()
        clock.now += 3.0  # the round comes a while after the read
        reading = await ahead.read()
        return reading, source.reads, sleeps.asked

    reading, reads, asked = asyncio.run(scenario())
    assert reads == 1  # the round did not read for itself
    assert reading.of(ObjectKey(NS, "vm")) == 1
    assert asked == [pytest.approx(10.0 - FIRST_LEAD_S - LEAD_MARGIN_S)]


def test_a_stale_reading_is_not_used() -> None:
    async def scenario() -> tuple[DemandReading, int, int]:
        clock = Clock()
        source = CountingDemand(clock)
        ahead = DemandAhead(source, max_age_s=5.0, clock=clock, sleep=Sleeps())
        ahead.read_ahead(0.0)
        await settle()
        clock.now += 5.5  # older than max_age_s: a wake-up round long after the last reading
        reading = await ahead.read()
        return reading, source.reads, ahead.waited

    reading, reads, waited = asyncio.run(scenario())
    assert reads == 2
    assert reading.of(ObjectKey(NS, "vm")) == 2  # the fresh one
    assert waited == 1


def test_a_round_waits_for_the_read_in_flight_instead_of_reading_again() -> None:
    async def scenario() -> tuple[int, int, DemandReading]:
        clock, gate = Clock(), asyncio.Event()
        source = CountingDemand(clock, gate=gate)
        ahead = DemandAhead(source, max_age_s=5.0, clock=clock, sleep=Sleeps())
        ahead.read_ahead(0.0)
        await settle()
        round_ = asyncio.create_task(ahead.read())
        await settle()
        reads_while_waiting = source.reads
        gate.set()
        reading = await round_
        return reads_while_waiting, source.reads, reading

    while_waiting, reads, reading = asyncio.run(scenario())
    assert (while_waiting, reads) == (1, 1)
    assert reading.of(ObjectKey(NS, "vm")) == 1


def test_the_lead_is_the_slowest_recent_read_and_at_most_max_age() -> None:
    async def scenario() -> tuple[list[float], list[float]]:
        clock, sleeps = Clock(), Sleeps()
        source = CountingDemand(clock, takes_s=3.0)
        ahead = DemandAhead(source, max_age_s=8.0, clock=clock, sleep=sleeps)
        ahead.read_ahead(0.0)
        await settle()
        source.takes_s = 1.0
        ahead.read_ahead(0.0)
        await settle()
        ahead.read_ahead(10.0)  # the slowest of the recent reads (3 s), with the margin
        await settle()
        source.takes_s = 9.0
        ahead.read_ahead(0.0)
        await settle()
        ahead.read_ahead(10.0)  # 9 s and margin is more than max_age_s: the reading would be stale
        await settle()
        return sleeps.asked, source.started

    asked, _ = asyncio.run(scenario())
    assert asked[-2] == pytest.approx(10.0 - 3.0 * LEAD_FACTOR - LEAD_MARGIN_S)
    assert asked[-1] == pytest.approx(10.0 - (8.0 - STALE_SLACK_S))  # fresh when the round comes


def test_a_round_s_duration_counts_its_wait_for_demand() -> None:
    """A round whose reading is not ready waits for it, and its duration (what the scale bench's p99 is
    made of) includes that wait."""

    @dataclass
    class SlowDemand:
        inner: Any
        reads: int = 0

        async def read(self) -> DemandReading:
            self.reads += 1
            await asyncio.sleep(0.3)
            reading: DemandReading = await self.inner.read()
            return reading

    world, demand = workday()
    slow = SlowDemand(demand)
    ahead = DemandAhead(slow, max_age_s=5.0)
    balancer = Balancer(FakeWriter(), ahead, OPTIONS, clock=lambda: NOW)
    first = run(balancer, world)
    assert first.duration_s >= 0.3
    assert slow.reads == 1


def test_a_round_decides_on_the_fresh_reading_not_a_stale_one() -> None:
    """Demand moved since the last reading, which has grown stale: the round reads again and decides on the
    new demand; while the reading is fresh, it is used as it is."""
    clock = Clock()
    world, demand = workday(engineering=0.5)
    ahead = DemandAhead(demand, max_age_s=5.0, clock=clock)
    balancer = Balancer(FakeWriter(), ahead, OPTIONS, clock=lambda: NOW)
    run(balancer, world)
    demand.gib["engineering"] = 0.75
    clock.now += 1.0
    fresh = run(balancer, world)
    assert fresh.snapshot is not None
    assert fresh.snapshot.managed[ObjectKey(NS, "engineering")].demand == GI // 2  # the same reading
    assert demand.reads == 1
    clock.now += 5.0  # 6 s old now
    later = run(balancer, world)
    assert later.snapshot is not None
    assert later.snapshot.managed[ObjectKey(NS, "engineering")].demand == 3 * GI // 4
    assert demand.reads == 2


@dataclass
class EmptyCluster:
    async def list_objects(
        self, kind: str, namespaces: Sequence[str] = ()
    ) -> tuple[int, list[Mapping[str, Any]]]:
        return 1, []


def test_the_loop_has_the_next_reading_read_ahead_of_the_next_round() -> None:
    """After a round, the loop says when the next is due (min gap plus interval); the reading starts one
    lead before that."""

    async def scenario() -> tuple[list[float], int, float | None]:
        sleeps = Sleeps()
        options = OperatorOptions(interval_s=60.0, min_gap_s=0.0, standalone=True)
        state = OperatorState(options=options, identity="test")
        _, demand = workday()
        ahead = DemandAhead(demand, max_age_s=5.0, sleep=sleeps, metrics=state.metrics)

        class Watched(Balancer):
            async def run_round(self, observed: Observed, *, started: float | None = None) -> RoundResult:
                collector.append(gc.isenabled())
                return await super().run_round(observed, started=started)

        def make_balancer() -> Balancer:
            return Watched(FakeWriter(), ahead, OPTIONS, clock=lambda: NOW)

        loop = asyncio.create_task(balancing_loop(state, make_balancer, EmptyCluster(), ahead))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if state.rounds and sleeps.asked:
                break
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        registry = state.metrics.registry
        age = registry.get_sample_value("dynamem_demand_reading_age_seconds")
        assert registry.get_sample_value("dynamem_demand_round_waits_total") == 1.0
        # the round's own read, and the one read ahead (whose wait the fake sleep skips)
        assert registry.get_sample_value("dynamem_demand_read_duration_seconds_count") == 2.0
        return sleeps.asked, state.rounds, age

    collector: list[bool] = []
    asked, rounds, age = asyncio.run(scenario())
    assert rounds == 1
    assert collector == [False]  # the garbage collector waits for the round's end
    assert gc.isenabled()
    assert age is not None and 0 <= age < 1.0  # the round's own reading, just read
    # the first round read for itself (its duration timed the lead); the next reading starts a lead ahead
    assert len(asked) == 1
    assert 60.0 - 5.0 <= asked[0] < 60.0 - LEAD_MARGIN_S


def test_a_round_s_duration_counts_from_when_the_loop_began_it() -> None:
    """The loop starts the clock before it makes the round's view of the cluster."""
    world, demand = workday()
    balancer = Balancer(FakeWriter(), demand, OPTIONS, clock=lambda: NOW)
    began = time.perf_counter() - 0.5
    result = asyncio.run(balancer.run_round(world.observed(), started=began))
    assert result.duration_s >= 0.5


def test_a_reading_read_ahead_at_the_longest_lead_is_still_fresh_at_its_round() -> None:
    """Reads slower than max_age allows: the reading starts as early as it may and is still fresh when the
    round comes on time (it was started exactly max_age_s before, stale by a hair, in an earlier version)."""

    async def scenario() -> tuple[int, int]:
        clock = Clock()

        async def sleep(seconds: float) -> None:
            clock.now += seconds

        source = CountingDemand(clock, takes_s=9.0)
        ahead = DemandAhead(source, max_age_s=10.0, clock=clock, sleep=sleep)
        await ahead.read()  # a first reading times the read: 9 s
        ahead.read_ahead(11.0)
        due = clock.now + 11.0
        await settle()
        clock.now = due + 0.5  # the round, a little late
        await ahead.read()
        return source.reads, ahead.waited

    reads, waited = asyncio.run(scenario())
    assert reads == 2
    assert waited == 1  # the first round only


async def lists_and_rounds(
    options: OperatorOptions, done: Callable[[OperatorState], bool], *, failing: bool = False
) -> list[str]:
    """Run the loop until ``done``: the order of its LISTs (one entry per kind) and rounds; ``failing``:
    every round has a failed write."""
    state = OperatorState(options=options, identity="test")
    _, demand = workday()
    order: list[str] = []

    class Listing(EmptyCluster):
        async def list_objects(
            self, kind: str, namespaces: Sequence[str] = ()
        ) -> tuple[int, list[Mapping[str, Any]]]:
            order.append("list")
            return 1, []

    class Watched(Balancer):
        async def run_round(self, observed: Observed, *, started: float | None = None) -> RoundResult:
            order.append("round")
            result = await super().run_round(observed, started=started)
            result.api_errors += 1 if failing else 0
            return result

    balancer = Watched(FakeWriter(), demand, OPTIONS, clock=lambda: NOW)
    loop = asyncio.create_task(balancing_loop(state, lambda: balancer, Listing()))
    for _ in range(500):
        await asyncio.sleep(0.01)
        if done(state):
            break
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)
    return order


KINDS = 8  # every kind the view keeps


def test_the_periodic_list_comes_right_after_a_round_not_at_the_start_of_the_next() -> None:
    """A resync due before the next round is made between rounds: at 10,000 VMs its LISTs take seconds,
    which at the next round's start delayed that round and aged its reading past max age (it then waited
    for a new one)."""
    options = OperatorOptions(interval_s=60.0, min_gap_s=0.0, resync_period_s=30.0, standalone=True)
    order = asyncio.run(lists_and_rounds(options, lambda state: state.rounds >= 1 and state.resyncs >= 2))
    # the second LIST of everything did not wait for the next round
    assert order == ["list"] * KINDS + ["round"] + ["list"] * KINDS


def test_a_resync_period_shorter_than_the_interval_lists_once_per_round_not_twice() -> None:
    """With the period at most the interval every round is due a LIST: one, after the round before it (the
    next round's start does not list everything again)."""
    options = OperatorOptions(interval_s=0.02, min_gap_s=0.0, resync_period_s=0.01, standalone=True)
    order = asyncio.run(lists_and_rounds(options, lambda state: state.rounds >= 3))
    assert order.count("round") >= 3
    # the first round starts from a LIST; every round is followed by one LIST of everything, no more
    assert order[: 3 * (KINDS + 1) + 1] == (["list"] * KINDS + ["round"]) * 3 + ["list"]


def test_no_list_between_rounds_once_the_lease_is_lost_and_a_failed_one_asks_the_next_round() -> None:
    """A replica that lost the Lease during a round lists nothing after it; a LIST that fails has the next
    round list everything (and says so as a warning, not as a failed round)."""

    class Lost:
        def may_write(self) -> bool:
            return False

    class Broken(EmptyCluster):
        async def list_objects(
            self, kind: str, namespaces: Sequence[str] = ()
        ) -> tuple[int, list[Mapping[str, Any]]]:
            raise ConnectionError("API server gone")

    options = OperatorOptions(standalone=True)
    standby = OperatorState(options=options, identity="test")
    standby.elector = Lost()  # type: ignore[assignment]
    assert not asyncio.run(_list_between_rounds(standby, Broken()))
    assert standby.resyncs == 0

    leader = OperatorState(options=options, identity="test")
    leader.view.needs_resync = False
    assert not asyncio.run(_list_between_rounds(leader, Broken()))
    assert leader.view.needs_resync
    assert asyncio.run(_list_between_rounds(leader, EmptyCluster()))
    assert leader.resyncs == 1


def test_failed_writes_ask_for_a_list_of_everything_at_most_once_a_minute() -> None:
    """A write that fails (429, 5xx) may have been decided on a view the watch left behind: the next round
    lists everything. Not every round while the API server is struggling: that only adds to its load."""
    options = OperatorOptions(interval_s=0.02, min_gap_s=0.0, resync_period_s=3600.0, standalone=True)
    order = asyncio.run(lists_and_rounds(options, lambda state: state.rounds >= 4, failing=True))
    assert order[: KINDS + 4] == ["list"] * KINDS + ["round"] * 4
