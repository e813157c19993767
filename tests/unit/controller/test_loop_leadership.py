"""The balancing loop under leadership (:mod:`dynamem.controller.loop`): rounds only while this replica may
write, one balancer per term."""

from __future__ import annotations

import asyncio

from dynamem.controller.balancer import Balancer
from dynamem.controller.loop import OperatorState, balancing_loop
from dynamem.controller.options import OperatorOptions

from .builders_k8s import FakeWriter
from .test_balancer import NOW, OPTIONS, workday
from .test_demand_ahead import EmptyCluster


def test_one_failed_lease_renewal_skips_rounds_but_keeps_the_balancer_a_new_term_makes_a_new_one() -> None:
    """A renewal that times out once (the API server slow for a moment) stops writes until the next one
    succeeds, but the term goes on: the balancer keeps what it remembers (backoffs, plain moves, lost races
    already told). Only a term that ended (the Lease lost, then won again) starts from a new balancer."""

    class Elector:
        leading, term, ok = True, 1, True

        def may_write(self) -> bool:
            return self.leading and self.ok

    elector = Elector()
    made: list[Balancer] = []

    def make() -> Balancer:
        _, demand = workday()
        made.append(Balancer(FakeWriter(), demand, OPTIONS, clock=lambda: NOW))
        return made[-1]

    async def rounds_until(state: OperatorState, count: int) -> None:
        for _ in range(500):
            await asyncio.sleep(0.01)
            if state.rounds >= count:
                return
        raise AssertionError(f"{state.rounds} rounds, not {count}")

    async def scenario() -> None:
        options = OperatorOptions(interval_s=0.02, min_gap_s=0.0, resync_period_s=60.0, standalone=True)
        state = OperatorState(options=options, identity="test")
        state.elector = elector  # type: ignore[assignment]
        loop = asyncio.create_task(balancing_loop(state, make, EmptyCluster(), None, None))
        await rounds_until(state, 2)
        elector.ok = False  # one renewal failed: no round meanwhile
        await asyncio.sleep(0.1)
        stalled = state.rounds
        await asyncio.sleep(0.1)
        assert state.rounds == stalled
        elector.ok = True
        await rounds_until(state, stalled + 2)
        assert len(made) == 1
        elector.leading = False  # the Lease lost, then won again: a new term
        await asyncio.sleep(0.1)
        elector.leading, elector.term = True, 2
        await rounds_until(state, state.rounds + 2)
        assert len(made) == 2
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)

    asyncio.run(scenario())
