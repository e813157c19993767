"""A change in flight across a change of leader, end to end: the real API server, kube-scheduler and kwok,
the KubeVirt v1.7.0 stand-in, Prometheus and two operator replicas with a Lease.

The leader writes a grow of a paging VM with its placement (the VM's ``dynamem.io/placement`` annotation,
in the same apply as ``memory.guest``). The test freezes the leader (SIGSTOP) the moment the VM shows that
write, usually before the leader made its migration, then kills it once the other replica holds the Lease.
The workload-updater waits 30 s here (KubeVirt: 5 s) so that the survivor, which takes over after the 6 s
Lease, has the time to make the migration first; without the placement it would not know where the change
goes and the updater's migration (no node selector) would carry it out. Either way the test freezes the
leader, the change ends as the dead leader planned it: every migration of the VM is dynamem's, pinned to
the recorded node, exactly one of them, the VM runs there at its new size, nothing is taken back. Once the
leader is frozen a pod fills half of the other idle node, so a survivor that planned the change afresh
(best fit: the fuller node) would pin that node instead of the recorded one.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dynamem.kube.objects import GI, quantity_bytes

from .operator_harness import Stack, first_node_stack, hog, the_leader, wait_until

LEASE_S = "6"
HOSTNAME = "kubernetes.io/hostname"


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> Iterator[tuple[Stack, list[str]]]:
    yield from first_node_stack(
        request,
        dict.fromkeys(("home", "idle-a", "idle-b"), "8Gi"),
        {"web": {"startup": "1Gi", "maximum": "4Gi"}},
        hotplug_delay=30.0,
    )


def placement_of(stack: Stack) -> dict[str, Any] | None:
    note = stack.vm("web")["metadata"].get("annotations", {}).get("dynamem.io/placement")
    return json.loads(note) if note else None


def test_a_change_in_flight_is_carried_out_by_the_new_leader_where_the_old_one_placed_it(
    stack: tuple[Stack, list[str]],
) -> None:
    world, (home, *idle) = stack
    wait_until("web running", lambda: world.has("web"), timeout=60)
    world.set_demand(web=1.2)
    replicas = world.start_replicas(LEASE_S)
    leader = the_leader(replicas)
    [survivor] = [r for r in replicas if r is not leader]
    assert leader.process is not None
    placed = wait_until(
        "the grow written with its placement", lambda: placement_of(world), timeout=90, every=0.01
    )
    leader.process.send_signal(signal.SIGSTOP)  # frozen: it renews no Lease and writes nothing more
    made_before = [m["metadata"]["name"] for m in world.migrations()]
    print(f"leader frozen {'after' if made_before else 'before'} its migration")
    (other,) = [node for node in idle if node != placed["target"]]
    hog(world.api, world.namespace, other, {"memory": "4Gi"}, name="half-of-the-other-node")
    try:
        wait_until("the survivor leads", lambda: survivor.gauge("dynamem_balancer_active") == 1.0, timeout=60)
    finally:
        leader.process.send_signal(signal.SIGKILL)
        leader.process.wait()
    target = placed["target"]
    assert target != home and placed["source"] == home
    guest = quantity_bytes(placed["guest"]) or 0
    assert guest > GI

    def carried_out() -> bool:
        world.check_kubevirt_invariants()
        going = [
            m for m in world.migrations() if m.get("status", {}).get("phase") not in ("Succeeded", "Failed")
        ]
        return world.has("web") == guest and not going

    try:
        wait_until("the change carried out", carried_out, timeout=120, every=0.5)
    except AssertionError:
        raise AssertionError(f"not carried out: {world.migrations()}\n{survivor.logs()[-5000:]}") from None
    (only,) = world.migrations()  # one migration: never a second, never the workload-updater's
    assert only["metadata"].get("labels", {}).get("dynamem.io/migration") == "true", only
    assert only["spec"]["addedNodeSelector"] == {HOSTNAME: target}
    assert only["status"]["phase"] == "Succeeded"
    assert world.vmi("web")["status"]["nodeName"] == target
    assert not any(e["reason"] in ("MemoryChangeReverted", "MigrationRaceLost") for e in world.events("web"))
    if made_before:  # frozen after its migration: the survivor followed that one and made none
        assert made_before == [only["metadata"]["name"]]
    else:  # frozen before its migration: the survivor made it, to the recorded node
        assert "took over the change" in survivor.logs()
    time.sleep(1)
    assert len(world.migrations()) == 1, f"{world.migrations()}\n{survivor.logs()[-8000:]}"
