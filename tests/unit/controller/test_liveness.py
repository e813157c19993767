"""The liveness probe (:mod:`dynamem.controller.liveness`): ``/healthz`` fails when the loop died or hangs.

The last test serves the probe through kopf's own health endpoint (the pinned kopf's ``health_reporter``), as
``dynamem run --liveness`` does, so that what the kubelet sees (200 or 500) is checked, not only the function.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import kopf
import pytest
from kopf._core.engines.indexing import OperatorIndexers  # what kopf.run gives the health endpoint
from kopf._core.engines.probing import health_reporter  # the server behind --liveness (kopf.run)

from dynamem.controller.handlers import register
from dynamem.controller.liveness import STALE_MIN_S, LoopStalled, loop_health, stale_after, write_guard
from dynamem.controller.loop import OperatorState, balancing_loop
from dynamem.controller.options import OperatorOptions
from dynamem.testing.controlplane import free_port

from .test_demand_ahead import EmptyCluster


def check(tasks: list[asyncio.Task[None]], beat: float, now: float) -> None:
    loop_health(tasks=tasks, beat=beat, now=now, interval_s=10.0, min_gap_s=1.0, leading=True, rounds=3)


def test_the_line_is_thirty_turns_and_never_under_ten_minutes() -> None:
    assert stale_after(10.0, 1.0) == STALE_MIN_S == 600.0
    assert stale_after(60.0, 0.0) == 1800.0


def test_a_loop_that_goes_round_is_healthy_and_says_what_it_did() -> None:
    health = loop_health(
        tasks=[], beat=100.0, now=112.34, interval_s=10.0, min_gap_s=1.0, leading=False, rounds=7
    )
    assert health.as_dict() == {"leading": False, "rounds": 7, "since_loop_s": 12.3}


def test_a_loop_that_has_not_gone_round_past_the_line_hangs() -> None:
    check([], beat=0.0, now=600.0)  # on the line: still alive
    with pytest.raises(LoopStalled, match=r"has not gone round for 601s \(limit 600s\)"):
        check([], beat=0.0, now=601.0)


def test_a_task_that_ended_fails_the_probe_and_is_named() -> None:
    async def scenario() -> None:
        async def boom() -> None:
            raise RuntimeError("socket closed")

        async def forever() -> None:
            await asyncio.Event().wait()

        alive = asyncio.create_task(forever(), name="dynamem-lease")
        dead = asyncio.create_task(boom(), name="dynamem-balancer")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        with pytest.raises(LoopStalled, match="task dynamem-balancer failed: RuntimeError: socket closed"):
            check([alive, dead], beat=time.monotonic(), now=time.monotonic())
        alive.cancel()
        await asyncio.gather(alive, return_exceptions=True)
        with pytest.raises(LoopStalled, match="task dynamem-lease was cancelled"):
            check([alive], beat=time.monotonic(), now=time.monotonic())

    asyncio.run(scenario())


def test_the_loop_beats_while_it_waits_between_rounds_and_while_it_stands_by() -> None:
    """A standby never runs a round, but its loop goes round every interval: the beat moves either way."""

    class Standby:
        leading, term = False, 0

        def may_write(self) -> bool:
            return False

    async def scenario() -> None:
        options = OperatorOptions(interval_s=0.05, min_gap_s=0.0, standalone=True)
        state = OperatorState(options=options, identity="test")
        state.elector = Standby()  # type: ignore[assignment]
        state.beat = 0.0
        loop = asyncio.create_task(balancing_loop(state, lambda: None, EmptyCluster()))  # type: ignore[arg-type,return-value]
        await asyncio.sleep(0.01)
        first = state.beat
        assert first > 0.0
        await asyncio.sleep(0.2)
        assert state.beat > first and state.rounds == 0
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)

    asyncio.run(scenario())


def test_kopf_answers_500_while_the_loop_hangs_and_200_once_it_goes_round() -> None:
    """A failed probe is not kept (kopf keeps only a good answer, for 10 s), so the kubelet's next probe
    after the loop turns again passes."""
    options = OperatorOptions(interval_s=10.0, min_gap_s=1.0, standalone=True)
    state = OperatorState(options=options, identity="test")
    registry = register(state)
    url = f"http://127.0.0.1:{free_port()}/healthz"

    async def scenario() -> None:
        ready = asyncio.Event()
        server = asyncio.create_task(
            health_reporter(
                url,
                memo=kopf.Memo(),
                indices=OperatorIndexers().indices,
                registry=registry,
                settings=kopf.OperatorSettings(),
                ready_flag=ready,
            )
        )
        await asyncio.wait_for(ready.wait(), 10)
        async with httpx.AsyncClient() as client:
            state.beat = time.monotonic() - 601.0
            answer = await client.get(url)
            assert answer.status_code == 500, answer.text
            state.beat, state.rounds = time.monotonic(), 4
            answer = await client.get(url)
            assert answer.status_code == 200, answer.text
            assert answer.json()["balancing-loop"] == {"leading": True, "rounds": 4, "since_loop_s": 0.0}
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)

    asyncio.run(scenario())


def test_every_attempt_of_a_write_counts_as_the_loop_alive_and_then_checks_the_lease() -> None:
    """A round whose status patch a busy API server answers with 503s for minutes is working, not hung: each
    attempt marks the loop alive before the Lease check, which stops the attempts once the Lease lapsed."""
    from dynamem.controller.leadership import NotLeading
    from dynamem.kube.api import ApiException, KubeApi

    from .test_retry import SlowStatus

    state = OperatorState(options=OperatorOptions(standalone=True), identity="test")
    marks: list[float] = []

    def alive() -> None:
        state.alive()
        marks.append(state.beat)

    leading = [True, True]

    def lease_check() -> None:
        if not (leading.pop(0) if leading else False):
            raise NotLeading("the lease lapsed")

    api = object.__new__(KubeApi)
    api.custom = status = SlowStatus()  # type: ignore[assignment]
    api.guard_writes(write_guard(alive, lease_check))
    state.beat = 0.0
    with pytest.raises(NotLeading):
        asyncio.run(api.patch_vmm_status("ns", "finance", {"reason": "x"}))
    assert status.calls == 2 and len(marks) == 3 and state.beat > 0.0  # the third attempt: alive, not leading

    api.custom = status = SlowStatus()  # type: ignore[assignment]
    api.guard_writes(write_guard(alive, None))  # standalone: no Lease, every attempt made
    with pytest.raises(ApiException):
        asyncio.run(api.patch_vmm_status("ns", "finance", {"reason": "x"}))
    assert status.calls == 5 and len(marks) == 3 + 5


def test_each_list_of_a_resync_counts_as_the_loop_at_work() -> None:
    """One LIST per namespace and kind, each up to a minute with its retries: with many namespaces a
    legitimate resync may outlast the liveness line, and the kubelet would restart a working leader."""
    from dynamem.controller.loop import resync

    beats: list[float] = []

    class SlowCluster(EmptyCluster):
        async def list_objects(self, kind: str, namespaces: object = ()) -> tuple[int, list[object]]:
            beats.append(state.beat)
            return 1, []

    state = OperatorState(options=OperatorOptions(), identity="test")
    state.beat = 0.0  # last gone round long ago
    asyncio.run(resync(state, SlowCluster()))  # type: ignore[arg-type]
    assert beats[0] == 0.0 and all(beat > 0.0 for beat in beats[1:]) and state.beat > 0.0
