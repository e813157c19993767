"""The Lease (:mod:`dynamem.controller.leadership`) against the real API server (issue 10, item 1).

Two electors campaign for one ``coordination.k8s.io`` Lease, with client-go's proportions scaled down (a 3 s
lease, 2 s renew deadline, 0.4 s retry) so that expiries happen within a test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from dynamem.controller.leadership import LeaderOnlyWriter, LeaseConfig, LeaseElector, NotLeading
from dynamem.kube.api import KubeApi
from dynamem.testing.controlplane import ControlPlane

DURATION_S = 3.0


async def until(what: str, check: Callable[[], bool], timeout: float = 15.0) -> float:
    """Wait for ``check()``; returns the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def run(control_plane: ControlPlane, body: Callable[[KubeApi], Awaitable[None]]) -> None:
    async def main() -> None:
        api = await KubeApi.connect(str(control_plane.kubeconfig_path))
        try:
            await body(api)
        finally:
            await api.close()

    asyncio.run(main())


def elector(api: KubeApi, namespace: str, identity: str) -> LeaseElector:
    return LeaseElector(
        api.coordination, LeaseConfig.from_duration(namespace, "dynamem", identity, DURATION_S)
    )


def test_one_leader_and_a_release_hands_over_at_once(control_plane: ControlPlane, namespace: str) -> None:
    async def body(api: KubeApi) -> None:
        a, b = elector(api, namespace, "a"), elector(api, namespace, "b")
        task_a = asyncio.create_task(a.run())
        await until("a leads", a.may_write)
        task_b = asyncio.create_task(b.run())
        await asyncio.sleep(DURATION_S * 1.5)  # longer than a lease: a renews, b never gets it
        assert a.may_write() and not b.leading
        lease = await api.coordination.read_namespaced_lease("dynamem", namespace)
        assert lease.spec.holder_identity == "a"
        task_a.cancel()  # a shuts down: it releases the Lease on the way out
        await asyncio.gather(task_a, return_exceptions=True)
        took = await until("b leads", b.may_write)
        # at b's next retry (0.4 s); without the release, b waits out the Lease from its last sighting of a's
        # renewal: 2.6 to 3.4 s after a stopped
        assert took < DURATION_S / 2, f"a released Lease must hand over before it expires ({took:.1f}s)"
        assert b.term == 1
        task_b.cancel()
        await asyncio.gather(task_b, return_exceptions=True)

    run(control_plane, body)


def test_a_dead_leader_is_replaced_only_after_its_lease_expires(
    control_plane: ControlPlane, namespace: str
) -> None:
    async def body(api: KubeApi) -> None:
        a, b = elector(api, namespace, "a"), elector(api, namespace, "b")
        task_a = asyncio.create_task(a.run())
        await until("a leads", a.may_write)
        task_b = asyncio.create_task(b.run())
        await asyncio.sleep(0.5)
        a.leading = False  # a "dies" without releasing: it stops renewing (as after a SIGKILL)
        task_a.cancel()
        await asyncio.gather(task_a, return_exceptions=True)
        died = time.monotonic()
        await until("b leads", b.may_write, timeout=DURATION_S * 4)
        assert time.monotonic() - died >= DURATION_S * 0.6, "b must wait for the Lease to expire"
        task_b.cancel()
        await asyncio.gather(task_b, return_exceptions=True)

    run(control_plane, body)


def test_writes_stop_the_moment_a_renewal_fails(control_plane: ControlPlane, namespace: str) -> None:
    async def body(api: KubeApi) -> None:
        a = elector(api, namespace, "a")
        task_a = asyncio.create_task(a.run())
        await until("a leads", a.may_write)
        # someone else takes the Lease over (an operator with a skewed view, a human): a's next renewal fails
        lease = await api.coordination.read_namespaced_lease("dynamem", namespace)
        lease.spec.holder_identity = "intruder"
        await api.coordination.replace_namespaced_lease("dynamem", namespace, lease)
        await until("a stops writing", lambda: not a.may_write(), timeout=a.config.retry_s * 3)
        guarded = LeaderOnlyWriter(api, a)
        try:
            await guarded.patch_vmm_status(namespace, "x", {})
        except NotLeading:
            pass
        else:
            raise AssertionError("a write went through without a renewed Lease")
        task_a.cancel()
        await asyncio.gather(task_a, return_exceptions=True)
        lease = await api.coordination.read_namespaced_lease("dynamem", namespace)
        assert lease.spec.holder_identity == "intruder", "a replica that lost the Lease must not release it"

    run(control_plane, body)
