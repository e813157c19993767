"""The operator on KubeVirt as it is (issue 8's done-when), end to end: the real API server, kube-scheduler
and kwok, the KubeVirt v1.7.0 stand-in, Prometheus and the operator process.

- The operator's change of a VM's memory reaches the VM as a live migration to a pod that the scheduler
  placed on another node.
- A change whose target the scheduler refuses (a node whose memory a pod dynamem does not see requests)
  fails as KubeVirt's does (the target pod stays unschedulable, the migration fails after the pending
  timeout, the VMI keeps its node and size and ``HotMemoryChange=True``). That is no refusal: KubeVirt's
  workload-updater migrates the VMI again, and the operator leaves the change in flight until its deadline
  (``--change-deadline``); then it takes it back: it writes the old size back, holds the VM, and says so in
  the VirtualMachineMemory's status and an Event.

A 1Gi guest fitted to real guests shows at most ~886Mi used: only its paging says it is short, which the
cluster plan (the operator's default policy) reads; it grows the guest multiplicatively (1Gi to 1.5Gi).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

import pytest
from kubernetes import client as k8s_client

from dynamem.kube.objects import GI
from dynamem.kubevirt_sim.migrations import WORKLOAD_UPDATE_ANNOTATION
from dynamem.sim.scenario import parse_scenario
from dynamem.testing.controlplane import ControlPlane
from dynamem.testing.prometheus import Prometheus

from .operator_harness import Stack, hog, wait_until

DEADLINE_S = 40


@pytest.fixture
def make_stack(
    control_plane: ControlPlane, prometheus: Prometheus, namespace: str, unique_name: Callable[[str], str]
) -> Iterator[Callable[..., tuple[Stack, list[str]]]]:
    stacks: list[Stack] = []

    def make(nodes: Mapping[str, str], **options: float) -> tuple[Stack, list[str]]:
        names = [unique_name(role) for role in nodes]
        scenario = parse_scenario(
            {
                "step": "1m",
                "nodes": [{"name": n, "memory": m} for n, m in zip(names, nodes.values(), strict=True)],
                "vms": [{"name": "web", "node": names[0], "startup": "1Gi", "maximum": "4Gi"}],
                "demand": {"web": ["512Mi"]},
            }
        )
        stack = Stack(control_plane, prometheus, namespace, scenario, **options)
        stacks.append(stack)
        return stack, names

    yield make
    for stack in stacks:
        stack.close()


def scheduled_by_the_scheduler(stack: Stack, pod: str) -> str | None:
    """The node the kube-scheduler bound ``pod`` to, from its "Scheduled" Event."""
    events = k8s_client.CoreV1Api(stack.api).list_namespaced_event(stack.namespace).items
    for event in events:
        if event.involved_object.name == pod and event.reason == "Scheduled":
            return str(event.message)
    return None


def test_the_operators_change_is_a_migration_to_a_node_the_scheduler_chose(
    make_stack: Callable[[Mapping[str, str]], tuple[Stack, list[str]]],
) -> None:
    stack, (home, other) = make_stack({"home": "8Gi", "other": "8Gi"})
    wait_until("web running", lambda: stack.has("web"), timeout=60)
    assert stack.vmi("web")["status"]["nodeName"] == home
    stack.set_demand(web=1.2)  # one multiplicative step (1.5Gi) covers it
    stack.start_operator()
    grown = wait_until("web grown", lambda: (stack.has("web") or 0) > GI and stack.has("web"), timeout=90)
    status = stack.vmi("web")["status"]
    assert status["nodeName"] == other  # it left its node: KubeVirt's target has anti-affinity to the source
    assert status["migrationState"]["sourceNode"] == home and status["migrationState"]["completed"] is True
    assert stack.guest("web") == grown  # what dynamem wrote is what the guest has now
    (migration,) = stack.migrations()
    assert migration["status"]["phase"] == "Succeeded"
    target = status["migrationState"]["targetPod"]
    message = wait_until("the Scheduled event", lambda: scheduled_by_the_scheduler(stack, target), timeout=10)
    assert other in message
    reason = stack.vmm("web").get("status", {}).get("reason", "")
    assert reason  # the operator says why it changed the VM


def test_a_change_with_nowhere_to_go_is_retried_by_kubevirt_and_taken_back_at_its_deadline(
    make_stack: Callable[[Mapping[str, str]], tuple[Stack, list[str]]], request: pytest.FixtureRequest
) -> None:
    stack, (home, full) = make_stack({"home": "8Gi", "full": "8Gi"})
    wait_until("web running", lambda: stack.has("web"), timeout=60)
    # a node whose memory a pod of another namespace requests: the scheduler refuses the target there, and
    # dynamem, watching one namespace (as the harness runs it: --namespace), does not see that pod (the
    # README's Limits: watch all namespaces in production)
    core = k8s_client.CoreV1Api(stack.api)
    hidden = hog(stack.api, "default", full, {"memory": "7Gi"}, name="hidden-hog")
    request.addfinalizer(
        lambda: core.delete_namespaced_pod(hidden.metadata.name, "default", grace_period_seconds=0)
    )
    stack.set_demand(web=1.2)
    stack.start_operator("--change-deadline", str(DEADLINE_S))
    # the grow is written, the target pod fits neither node (not home: anti-affinity; not full: no memory)
    wait_until("memory.guest raised", lambda: (stack.guest("web") or 0) > GI, timeout=60)
    wait_until(
        "the migration failed after the pending timeout",
        lambda: [m for m in stack.migrations() if m.get("status", {}).get("phase") == "Failed"],
        timeout=60,
    )
    # KubeVirt v1.7.0 left the VMI where and as it was, HotMemoryChange still True: not a refusal
    instance = stack.vmi("web")
    assert instance["status"]["nodeName"] == home
    assert instance["status"]["memory"]["guestCurrent"] == "1Gi"
    conditions = {c["type"]: c["status"] for c in instance["status"]["conditions"]}
    assert conditions.get("HotMemoryChange") == "True"
    # ... so its workload-updater migrates the VMI again, and dynamem leaves the change in flight meanwhile
    wait_until(
        "KubeVirt's workload-updater retries",
        lambda: [
            m
            for m in stack.migrations()
            if WORKLOAD_UPDATE_ANNOTATION in (m["metadata"].get("annotations") or {})
        ],
        timeout=30,
    )
    assert (stack.guest("web") or 0) > GI
    assert not any(e["reason"] == "MemoryChangeReverted" for e in stack.events("web"))
    # not carried out by its deadline: taken back, the VM held
    wait_until(
        "the change taken back",
        lambda: any(e["reason"] == "MemoryChangeReverted" for e in stack.events("web")),
        timeout=DEADLINE_S + 60,
    )
    wait_until("memory.guest back at the guest's size", lambda: stack.guest("web") == GI, timeout=30)
    hold = wait_until(
        "held after the deadline", lambda: stack.vmm("web").get("status", {}).get("hold"), timeout=30
    )
    assert f"not carried out within {DEADLINE_S}s" in hold["reason"]
    assert stack.vmi("web")["status"]["nodeName"] == home
    rounds = stack.rounds()  # held: the operator writes nothing new
    wait_until("three more rounds", lambda: stack.rounds() >= rounds + 3, timeout=60)
    assert stack.guest("web") == GI and stack.has("web") == GI


def test_a_change_whose_migration_copies_past_the_deadline_is_not_taken_back(
    make_stack: Callable[..., tuple[Stack, list[str]]],
) -> None:
    """A migration copying when the change's deadline passes is KubeVirt's to finish or fail (it bounds a
    copy itself: 150 s without progress, 150 s a GiB). Here the copy of web's 1Gi takes 16 s at 64Mi/s
    against a deadline of 6 s: dynamem leaves the change in flight, and web ends grown on the other node,
    neither taken back nor held."""
    stack, (_, other) = make_stack({"home": "8Gi", "other": "8Gi"}, bandwidth_gib=1 / 16)
    wait_until("web running", lambda: stack.has("web"), timeout=60)
    stack.set_demand(web=1.2)
    stack.start_operator("--change-deadline", "6")

    def copying() -> bool:
        state = stack.vmi("web")["status"].get("migrationState") or {}
        return bool(state.get("startTimestamp")) and not state.get("endTimestamp")

    wait_until("web's migration copying", copying, timeout=60)
    started = time.monotonic()
    grown = wait_until("web grown", lambda: (stack.has("web") or 0) > GI and stack.has("web"), timeout=90)
    assert time.monotonic() - started > 6  # the copy outlasted the deadline
    assert stack.vmi("web")["status"]["nodeName"] == other and stack.guest("web") == grown
    assert not any(e["reason"] == "MemoryChangeReverted" for e in stack.events("web"))
    assert not stack.vmm("web").get("status", {}).get("hold")
    assert [m["status"]["phase"] for m in stack.migrations()] == ["Succeeded"]
