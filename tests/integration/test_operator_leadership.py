"""Two operator replicas with a Lease: exactly one balances; SIGKILL it and the other takes over (issue 10).

This is what the shipped Deployment runs (two replicas, one Lease). Both start at the same instant; the test
does not know which one wins, only that exactly one does, and that the survivor of a SIGKILL leads after
the Lease expires and grows the VM again. The cluster plan grows a paging VM by 1.5 a change, so a VM ends at
least at its demand and at most at its maximum, not at an exact size (``Stack.reach``).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from unittest.mock import ANY

import pytest

from dynamem.kube.objects import GI
from dynamem.testing.controlplane import ControlPlane
from dynamem.testing.prometheus import Prometheus

from .operator_harness import Stack, one_node, the_leader

LEASE_S = "6"


@pytest.fixture
def stack(
    control_plane: ControlPlane, prometheus: Prometheus, namespace: str, unique_name: Callable[[str], str]
) -> Iterator[Stack]:
    world = Stack(
        control_plane,
        prometheus,
        namespace,
        one_node(unique_name("node"), "8Gi", {"db": {"startup": "1Gi", "maximum": "4Gi"}}),
    )
    try:
        yield world
    finally:
        world.close()


def test_one_replica_balances_and_the_other_takes_over_after_a_sigkill(stack: Stack) -> None:
    stack.set_demand(db=1.6)
    replicas = stack.start_replicas(LEASE_S)
    leader = the_leader(replicas)
    size = stack.reach({"db": 1.6})["db"]
    assert size <= 4 * GI, f"db grew past its maximum: {size}"
    [standby] = [r for r in replicas if r is not leader]
    assert standby.gauge("dynamem_balance_rounds_total") in (None, 0.0), "a standby must never balance"
    # both are alive for the kubelet (--liveness): the leader balances, the standby's loop goes round idle
    leader_health, standby_health = leader.health(), standby.health()
    assert leader_health is not None and leader_health[0] == 200, leader_health
    assert leader_health[1]["balancing-loop"]["leading"] is True, leader_health
    assert leader_health[1]["balancing-loop"]["rounds"] >= 1, leader_health
    assert standby_health == (200, {"balancing-loop": {"leading": False, "rounds": 0, "since_loop_s": ANY}})

    assert leader.process is not None
    leader.process.send_signal(signal.SIGKILL)  # no release: the standby waits for the Lease to expire
    leader.process.wait()
    # a demand above what db has now, so the survivor must change it (the leader is gone)
    assert size < 3.2 * GI, f"db already holds {size}: the survivor would have nothing to do"
    stack.set_demand(db=3.2)
    grown = stack.reach({"db": 3.2}, timeout=120)["db"]
    assert size < grown <= 4 * GI, f"db went from {size} to {grown} (maximum 4Gi)"
    assert standby.gauge("dynamem_balancer_active") == 1.0
    assert (standby.gauge("dynamem_balance_rounds_total") or 0) >= 1
