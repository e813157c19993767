"""When a standby takes a dead leader's Lease (:mod:`dynamem.controller.leadership`), on fake clocks.

The Lease API here is a stand-in with the API server's optimistic concurrency (a replace carrying an old
``resourceVersion`` is refused); the real API server is exercised by ``tests/integration/test_leadership.py``.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from dynamem.controller.leadership import LeaseConfig, LeaseElector
from dynamem.kube.api import ApiException


class Stop(Exception):
    """Ends the elector's loop once the test has seen what it wanted."""


class PeerLease:
    """A Lease held by ``peer``, renewed every ``renew_every`` seconds of ``clock()`` until ``dies_at``."""

    def __init__(self, clock: list[float], *, renew_every: float, dies_at: float, duration: int) -> None:
        self.clock = clock
        self.renew_every = renew_every
        self.dies_at = dies_at
        self.duration = duration
        self.taken: dict[str, Any] | None = None
        self.holders: list[str] = []  # who took it, in order (a release clears it again)
        self.version = 1

    def _spec(self) -> SimpleNamespace:
        if self.taken is not None:
            spec = self.taken["spec"]
            return SimpleNamespace(
                holder_identity=spec["holderIdentity"],
                renew_time=spec["renewTime"],
                lease_duration_seconds=spec["leaseDurationSeconds"],
                lease_transitions=spec["leaseTransitions"],
                acquire_time=None,
            )
        renewals = int(min(self.clock[0], self.dies_at) // self.renew_every)
        return SimpleNamespace(
            holder_identity="peer",
            renew_time=f"renewal {renewals}",
            lease_duration_seconds=self.duration,
            lease_transitions=0,
            acquire_time=None,
        )

    async def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> SimpleNamespace:
        if self.taken is None:  # the peer's renewals move the version
            self.version = 1 + int(min(self.clock[0], self.dies_at) // self.renew_every)
        return SimpleNamespace(
            spec=self._spec(), metadata=SimpleNamespace(resource_version=str(self.version))
        )

    async def replace_namespaced_lease(
        self, name: str, namespace: str, body: dict[str, Any], **_: Any
    ) -> None:
        if body["metadata"].get("resourceVersion") != str(self.version):
            raise ApiException(status=409, reason="Conflict")
        self.taken = body
        self.holders.append(body["spec"]["holderIdentity"])
        self.version += 1

    async def create_namespaced_lease(self, namespace: str, body: dict[str, Any], **_: Any) -> None:
        raise ApiException(status=409, reason="AlreadyExists")


@pytest.mark.parametrize("dies_at", [2.0, 2.3, 5.05])
def test_a_standby_takes_a_dead_leaders_lease_when_it_expires_not_a_retry_later(dies_at: float) -> None:
    """client-go's proportions at a 6 s Lease: retry 0.8 s. The peer renews every 0.8 s until it dies; the
    standby sees its last renewal at its next try, and takes the Lease the moment that sighting is one Lease
    duration old (by the standby's own clock), not at the next 0.8 s tick after it (up to 0.8 s later)."""
    clock = [0.0]
    lease = PeerLease(clock, renew_every=0.8, dies_at=dies_at, duration=6)
    config = LeaseConfig.from_duration("ns", "dynamem", "standby", 6.0)
    took: list[float] = []

    async def sleep(seconds: float) -> None:
        if elector.leading:
            took.append(clock[0])
            raise Stop
        clock[0] += seconds

    elector = LeaseElector(lease, config, clock=lambda: clock[0], wall=lambda: 1e9 + clock[0], sleep=sleep)

    async def campaign() -> None:
        with pytest.raises(Stop):
            await elector.run()

    asyncio.run(campaign())
    assert lease.holders[0] == "standby"
    (took_at,) = took
    last_seen = elector._observed_at  # when the standby first saw the peer's last renewal
    assert last_seen <= dies_at + 0.8
    assert last_seen + 6.0 <= took_at < last_seen + 6.0 + 0.05, (last_seen, took_at)


def test_a_lease_taken_back_from_another_holder_starts_a_new_term() -> None:
    """This replica stalled for longer than its Lease (no attempt at all meanwhile): a peer took the Lease and
    released it between two of its attempts. Its next attempt acquires the Lease rather than renewing it, and
    that is a new term: what it knew of its last term (the balancer's memory) may be stale. A plain renewal
    keeps the term."""
    clock = [0.0]
    lease = PeerLease(clock, renew_every=1.0, dies_at=0.0, duration=3)  # the first holder is long gone
    elector = LeaseElector(
        lease,
        LeaseConfig.from_duration("ns", "dynamem", "me", 15.0),
        clock=lambda: clock[0],
        wall=lambda: 0.0,
    )

    def attempt_at(moment: float) -> None:
        async def attempt() -> None:
            elector._after_attempt(await elector._try_acquire_or_renew())

        clock[0] = moment
        asyncio.run(attempt())

    attempt_at(0.0)  # the first holder's Lease seen
    attempt_at(4.0)  # and taken once it expired
    assert (elector.leading, elector.term) == (True, 1)
    attempt_at(5.0)  # renewed: the same term
    assert (elector.leading, elector.term) == (True, 1)
    assert lease.taken is not None
    lease.taken["spec"]["holderIdentity"] = None  # a peer's term came and went, its release the last word
    lease.version += 1
    attempt_at(30.0)
    assert (elector.leading, elector.term) == (True, 2)


def test_the_write_window_runs_from_the_renewal_sent_not_its_answer() -> None:
    """A renewal the API server commits at once and answers 2.5 s later (a slow server, a busy event loop).
    A peer that read the record at the commit takes the Lease one duration (3 s) after it; counted from the
    answer, this replica would have written until 4.5 s. Counted from the request, it stops at 2 s."""
    clock = [0.0]
    lease = PeerLease(clock, renew_every=1.0, dies_at=0.0, duration=3)

    async def slow_replace(name: str, namespace: str, body: dict[str, Any], **_: Any) -> None:
        await PeerLease.replace_namespaced_lease(lease, name, namespace, body)
        clock[0] += 2.5  # committed; the answer comes later

    lease.replace_namespaced_lease = slow_replace  # type: ignore[method-assign]
    config = LeaseConfig.from_duration("ns", "dynamem", "me", 3.0)
    elector = LeaseElector(lease, config, clock=lambda: clock[0], wall=lambda: 0.0)

    async def attempt() -> None:
        elector._after_attempt(await elector._try_acquire_or_renew())

    asyncio.run(attempt())  # at 0: the first holder's Lease seen
    clock[0] = 10.0  # it expired: taken
    asyncio.run(attempt())
    assert elector.leading and clock[0] == 12.5
    assert not elector.may_write()  # sent at 10: the window (2 s) ended before the answer came
    clock[0] = 11.9  # (were the answer back by then:) still within the window counted from the request
    assert elector.may_write()


def test_a_writer_bound_to_a_term_stops_when_the_term_ends() -> None:
    """A round of term 1 still writing after another replica led and this one took the Lease back (term 2,
    ``may_write`` True again): its plan was made on a world that may have changed, and its writes stop."""
    from dynamem.controller.leadership import LeaderOnlyWriter, NotLeading

    elector = SimpleNamespace(may_write=lambda: True, term=1, config=SimpleNamespace(identity="me"))
    writer = LeaderOnlyWriter(SimpleNamespace(), elector, term=1)  # type: ignore[arg-type]
    writer.check()
    elector.term = 2
    with pytest.raises(NotLeading, match="term 1 ended"):
        writer.check()
    LeaderOnlyWriter(SimpleNamespace(), elector).check()  # unbound, no write under way: the Lease alone

    # the guard the API client runs before each retry is unbound: it checks the term of the write under way
    guard = LeaderOnlyWriter(SimpleNamespace(), elector)
    retried: list[str] = []

    class Api:
        async def patch_vmm_status(self, namespace: str, name: str, status: object) -> None:
            guard.check()  # the first attempt, in term 2
            elector.term = 3  # a brownout: the Lease lapsed and was taken again meanwhile
            try:
                guard.check()  # the retry
            except NotLeading as exc:
                retried.append(str(exc))

    bound = LeaderOnlyWriter(Api(), elector, term=2)  # type: ignore[arg-type]
    asyncio.run(bound.patch_vmm_status("ns", "vm", {}))
    assert retried == ["me: term 2 ended"]
    guard.check()  # and no write under way afterwards


def test_the_first_write_to_raise_cancels_the_rest_of_the_rounds_writes() -> None:
    """A status write that finds the Lease lapsed raises NotLeading; the others, queued or under way, stop
    with it. With ``asyncio.gather`` they went on writing last round's statuses after the round had ended."""
    from dynamem.controller.balancer import gather_limited
    from dynamem.controller.leadership import NotLeading

    done: list[int] = []

    async def write(i: int) -> bool:
        await asyncio.sleep(0.01 * i)
        if i == 1:
            raise NotLeading("lapsed")
        done.append(i)
        return True

    async def scenario() -> None:
        with pytest.raises(NotLeading):
            await gather_limited([write(i) for i in range(20)], limit=4)
        await asyncio.sleep(0.3)  # long enough for every other write to have finished, had it gone on

    asyncio.run(scenario())
    assert done == [0]
