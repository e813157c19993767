"""The control plane schedules: the real kube-scheduler places pods and kwok runs them as a kubelet would.

Each test makes its own nodes with a label only it uses, and pods that select that label, so the nodes of
other tests (the session shares one control plane) never take part.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s_client

from dynamem.testing.controlplane import ControlPlane

Pod = k8s_client.V1Pod
HOSTNAME = "kubernetes.io/hostname"


def pod_body(
    name: str,
    memory: str,
    selector: dict[str, str],
    *,
    labels: dict[str, str] | None = None,
    anti_affinity_to: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "nodeSelector": selector,
        "containers": [
            {
                "name": "compute",
                "image": "example.invalid/launcher:1",
                "resources": {"requests": {"memory": memory}},
            }
        ],
    }
    if anti_affinity_to is not None:
        spec["affinity"] = {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": anti_affinity_to},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            }
        }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }


def wait_for(
    core: k8s_client.CoreV1Api, ns: str, name: str, done: Callable[[Pod], bool], timeout: float = 30
) -> Pod:
    deadline = time.monotonic() + timeout
    while True:
        pod = core.read_namespaced_pod(name, ns)
        if done(pod):
            return pod
        if time.monotonic() > deadline:
            raise AssertionError(
                f"pod {ns}/{name} not as expected after {timeout}s: {pod.spec.node_name} {pod.status}"
            )
        time.sleep(0.1)


def running(pod: Pod) -> bool:
    return bool(pod.spec.node_name) and pod.status.phase == "Running"


def unschedulable(pod: Pod) -> bool:
    return any(
        c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
        for c in pod.status.conditions or []
    )


@pytest.fixture
def pool(
    control_plane: ControlPlane,
    core_v1: k8s_client.CoreV1Api,
    namespace: str,
    unique_name: Callable[[str], str],
) -> tuple[dict[str, str], list[str]]:
    """Two nodes, 4Gi and 8Gi, labelled for this test only, known to the scheduler: a tiny probe pod bound to
    each by its hostname runs before the test starts (the scheduler learns of new nodes by its watch)."""
    label = {"dynamem.io/test-pool": unique_name("pool")}
    names = [unique_name("small"), unique_name("large")]
    for name, memory in zip(names, ("4Gi", "8Gi"), strict=True):
        control_plane.create_node(name, memory=memory, labels=label)
        probe = f"probe-{name}"
        core_v1.create_namespaced_pod(namespace, pod_body(probe, "1Mi", {**label, HOSTNAME: name}))
        wait_for(core_v1, namespace, probe, running)
    return label, names


def test_the_scheduler_places_a_pod_and_kwok_runs_it(
    core_v1: k8s_client.CoreV1Api, namespace: str, pool: tuple[dict[str, str], list[str]]
) -> None:
    label, (_small, large) = pool
    core_v1.create_namespaced_pod(namespace, pod_body("fits-large-only", "6Gi", label))
    pod = wait_for(core_v1, namespace, "fits-large-only", running)
    assert pod.spec.node_name == large
    assert pod.status.pod_ip


def test_least_allocated_spreads_pods(
    core_v1: k8s_client.CoreV1Api, namespace: str, pool: tuple[dict[str, str], list[str]]
) -> None:
    label, (small, large) = pool
    core_v1.create_namespaced_pod(namespace, pod_body("first", "3Gi", label))
    assert wait_for(core_v1, namespace, "first", running).spec.node_name == large  # 8Gi has more room
    core_v1.create_namespaced_pod(namespace, pod_body("second", "1Gi", label))
    # large: 5Gi of 8Gi free (62%), small: 4Gi of 4Gi free (100%)
    assert wait_for(core_v1, namespace, "second", running).spec.node_name == small


def test_required_anti_affinity_keeps_a_pod_off_a_node(
    core_v1: k8s_client.CoreV1Api, namespace: str, pool: tuple[dict[str, str], list[str]]
) -> None:
    label, (small, large) = pool
    mark = {"kubevirt.io/created-by": "vmi-uid-1"}
    core_v1.create_namespaced_pod(
        namespace, pod_body("source", "1Gi", {**label, HOSTNAME: large}, labels=mark)
    )
    assert wait_for(core_v1, namespace, "source", running).spec.node_name == large
    # A pod that may only go to the source's node, but must not share a node with the source: it never runs.
    pinned = pod_body("pinned-target", "1Gi", {**label, HOSTNAME: large}, labels=mark, anti_affinity_to=mark)
    core_v1.create_namespaced_pod(namespace, pinned)
    pod = wait_for(core_v1, namespace, "pinned-target", unschedulable)
    message = next(c.message for c in pod.status.conditions if c.type == "PodScheduled")
    assert "anti-affinity" in message
    # Free to go anywhere in the pool, it goes to the other node, though half of it is taken (the scheduler's
    # LeastAllocated score alone would pick the source's node, 7/8 free against 2/4)
    core_v1.create_namespaced_pod(namespace, pod_body("filler", "2Gi", {**label, HOSTNAME: small}))
    wait_for(core_v1, namespace, "filler", running)
    core_v1.create_namespaced_pod(
        namespace, pod_body("target", "1Gi", label, labels=mark, anti_affinity_to=mark)
    )
    assert wait_for(core_v1, namespace, "target", running).spec.node_name == small


def test_a_node_selector_is_honoured(
    core_v1: k8s_client.CoreV1Api, namespace: str, pool: tuple[dict[str, str], list[str]]
) -> None:
    label, (small, _large) = pool
    selector = {**label, "kubernetes.io/hostname": small}
    core_v1.create_namespaced_pod(namespace, pod_body("pinned", "1Gi", selector))
    assert wait_for(core_v1, namespace, "pinned", running).spec.node_name == small


def test_a_pod_that_fits_nowhere_stays_pending(
    core_v1: k8s_client.CoreV1Api, namespace: str, pool: tuple[dict[str, str], list[str]]
) -> None:
    label, _ = pool
    core_v1.create_namespaced_pod(namespace, pod_body("too-big", "9Gi", label))
    pod = wait_for(core_v1, namespace, "too-big", unschedulable)
    assert pod.spec.node_name is None and pod.status.phase == "Pending"
    message = next(c.message for c in pod.status.conditions if c.type == "PodScheduled")
    assert "Insufficient memory" in message


def test_a_deleted_pod_goes_away(
    core_v1: k8s_client.CoreV1Api, namespace: str, pool: tuple[dict[str, str], list[str]]
) -> None:
    label, _ = pool
    core_v1.create_namespaced_pod(namespace, pod_body("short-lived", "1Gi", label))
    wait_for(core_v1, namespace, "short-lived", running)
    core_v1.delete_namespaced_pod("short-lived", namespace)  # default grace period: a kubelet must confirm
    deadline = time.monotonic() + 30
    while any(p.metadata.name == "short-lived" for p in core_v1.list_namespaced_pod(namespace).items):
        assert time.monotonic() < deadline, "kwok did not finish the pod's deletion"
        time.sleep(0.1)
