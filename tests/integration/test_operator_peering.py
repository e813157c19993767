"""Two operator replicas with kopf peering: exactly one balances; when it stops, the other takes over.

This is what the shipped Deployment runs (two replicas, random peering priorities). Here the priorities are
fixed so the test knows which replica should lead, and the replicas watch one namespace, so kopf's
namespaced `KopfPeering` object is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from kubernetes import client as k8s_client

from dynamem.testing.controlplane import ControlPlane
from dynamem.testing.operator import OperatorProcess
from dynamem.testing.prometheus import Prometheus

from .operator_harness import Stack, one_node, wait_until


def gauge(operator: OperatorProcess, name: str) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else None


@pytest.fixture
def stack(
    control_plane: ControlPlane,
    prometheus: Prometheus,
    namespace: str,
    unique_name: Callable[[str], str],
    custom_objects: k8s_client.CustomObjectsApi,
) -> Iterator[Stack]:
    custom_objects.create_namespaced_custom_object(
        "kopf.dev",
        "v1",
        namespace,
        "kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "dynamem"}},
    )
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


def test_only_the_highest_priority_replica_balances_and_the_other_takes_over(stack: Stack) -> None:
    stack.set_demand(db=1.6)
    # The leader first (a pod that restarts joins a running peer); both starting together is covered by the
    # grace period before a first round, which a loaded test machine could outlast.
    leader = stack.start_operator("--priority", "200", standalone=False)
    wait_until("the leader active", lambda: gauge(leader, "dynamem_balancer_active") == 1.0, timeout=60)
    standby = stack.start_operator("--priority", "100", standalone=False)
    stack.converge({"db": 2})
    wait_until("the standby idle", lambda: gauge(standby, "dynamem_balancer_active") == 0.0, timeout=30)
    assert gauge(standby, "dynamem_balance_rounds_total") in (None, 0.0), "a standby must never balance"

    leader.stop()  # kopf removes a stopping replica from the peering object: the standby resumes
    stack.set_demand(db=2.4)
    stack.converge({"db": 3}, timeout=120)
    assert gauge(standby, "dynamem_balancer_active") == 1.0
    assert (gauge(standby, "dynamem_balance_rounds_total") or 0) >= 1
