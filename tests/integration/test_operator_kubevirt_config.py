"""The KubeVirt CR's settings, end to end: the real API server, kube-scheduler and kwok, the KubeVirt v1.7.0
stand-in, Prometheus and the operator process.

Three paging VMs on one node, two idle nodes to grow onto. By default dynamem would move two at once
(KubeVirt's ``parallelOutboundMigrationsPerNode`` 2). The cluster admin sets the KubeVirt CR's
``parallelMigrationsPerCluster`` to 1 after the operator started: dynamem reads the CR again with its next
periodic LIST (``controller/kubevirt_follower.py``) and from then on has one change in flight at a time,
with no restart.

Under the CR's ``developerConfiguration.memoryOvercommit`` a launcher asks its guest x 100 / memoryOvercommit:
dynamem judges a target as the scheduler will, and grows a VM onto a node that could not hold its guest whole.
Under its ``nodeSelectors`` every launcher selects them: dynamem pins only nodes they select.

The KubeVirt stand-in follows the same CR, as virt-controller does (``kubevirt_sim/controller.py``,
``follow_kubevirt_cr``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s_client

from dynamem.kube.objects import GI, MI, quantity_bytes

from .operator_harness import Stack, first_node_stack, wait_until

VMS = ("web", "db", "app")


def current(world: Stack, name: str) -> int | None:
    return quantity_bytes(world.vmi(name)["status"]["memory"]["guestCurrent"])


LIVE_MIGRATE = {"workloadUpdateMethods": ["LiveMigrate"]}  # as docs/install.md patches KubeVirt's CR


def kubevirt_cr(
    request: pytest.FixtureRequest, configuration: dict[str, Any], updates: dict[str, Any] = LIVE_MIGRATE
) -> Callable[[dict[str, Any]], None]:
    """The cluster's KubeVirt CR with ``configuration`` and ``updates`` (its workloadUpdateStrategy; in the
    test's namespace, where KubeVirt's install has its own), deleted after the test; returns a function that
    sets its workloadUpdateStrategy anew. The operator and the KubeVirt stand-in both follow it."""
    namespace: str = request.getfixturevalue("namespace")
    api = request.getfixturevalue("control_plane").api_client()
    custom = k8s_client.CustomObjectsApi(api)
    kubevirt = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "KubeVirt",
        "metadata": {"name": "kubevirt"},
        "spec": {"configuration": configuration, "workloadUpdateStrategy": updates},
    }
    custom.create_namespaced_custom_object("kubevirt.io", "v1", namespace, "kubevirts", kubevirt)

    def delete() -> None:
        custom.delete_namespaced_custom_object("kubevirt.io", "v1", namespace, "kubevirts", "kubevirt")
        api.close()

    request.addfinalizer(delete)

    def update(strategy: dict[str, Any]) -> None:
        current = custom.get_namespaced_custom_object("kubevirt.io", "v1", namespace, "kubevirts", "kubevirt")
        current["spec"]["workloadUpdateStrategy"] = strategy
        custom.replace_namespaced_custom_object(
            "kubevirt.io", "v1", namespace, "kubevirts", "kubevirt", current
        )

    return update


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> Iterator[tuple[Stack, list[str]]]:
    yield from first_node_stack(
        request,
        {"home": "8Gi", "a": "8Gi", "b": "8Gi"},
        {name: {"startup": "1Gi", "maximum": "4Gi"} for name in VMS},
        bandwidth_gib=0.25,  # each migration copies for 4 s: long enough to overlap the next if let
    )


def test_a_lower_parallel_migration_limit_set_while_dynamem_runs_is_followed_from_the_next_list(
    stack: tuple[Stack, list[str]], request: pytest.FixtureRequest
) -> None:
    world, _nodes = stack
    wait_until("the VMs running", lambda: all(world.has(name) for name in VMS), timeout=60)
    operator = world.start_operator("--resync-period", "2")
    # it read the KubeVirt CR at start (there was none) and balances before the admin sets the limit
    wait_until("the operator balancing", lambda: operator.gauge("dynamem_balancer_active") == 1.0, timeout=30)
    kubevirt_cr(request, {"migrations": {"parallelMigrationsPerCluster": 1}})
    wait_until(
        "the operator read the CR again",
        lambda: "KubeVirt CR: parallelMigrationsPerCluster 1" in operator.logs(),
        timeout=30,
    )

    world.set_demand(**dict.fromkeys(VMS, 1.2))  # one multiplicative step (1.5Gi) serves each
    most = 0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        # a change in flight: memory.guest asked for, not yet what the VMI says its guest has
        in_flight = [name for name in VMS if world.guest(name) != current(world, name)]
        most = max(most, len(in_flight))
        if all((world.has(name) or 0) > GI for name in VMS) and not in_flight:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"not every VM grown: {[(n, world.guest(n), world.has(n)) for n in VMS]}")
    assert most == 1
    done = [m for m in world.migrations() if m.get("status", {}).get("phase") == "Succeeded"]
    assert len(done) >= 3
    assert not [m for m in world.migrations() if m.get("status", {}).get("phase") == "Failed"]


@pytest.fixture
def overcommitted(request: pytest.FixtureRequest) -> Iterator[tuple[Stack, list[str]]]:
    """web (2Gi, up to 4Gi) on an 8Gi node, and a 2.5Gi node, under the KubeVirt CR's memoryOvercommit 200
    (set before KubeVirt renders any launcher): each launcher asks half its guest and 100Mi of overhead."""
    kubevirt_cr(request, {"developerConfiguration": {"memoryOvercommit": 200}})
    yield from first_node_stack(
        request,
        {"home": "8Gi", "small": "2560Mi"},
        {"web": {"startup": "2Gi", "maximum": "4Gi"}},
        overhead_mib=100,
    )


def test_under_memory_overcommit_a_vm_grows_onto_a_node_that_only_the_schedulers_count_has_room_on(
    overcommitted: tuple[Stack, list[str]],
) -> None:
    world, (home, small) = overcommitted
    wait_until("web running", lambda: world.has("web"), timeout=60)
    assert [asked(pod) for pod in pods_on(world, home)] == [GI + 100 * MI]  # the stand-in follows the CR
    world.set_demand(web=3.2)  # pages at 2Gi; served by a 4Gi guest, which small cannot hold whole
    operator = world.start_operator()
    wait_until("the operator read the CR", lambda: "memoryOvercommit 200" in operator.logs(), timeout=30)
    sizes = world.reach({"web": 3.2})
    assert sizes["web"] > 2560 * MI and world.vmi("web")["status"]["nodeName"] == small
    # dynamem's migration pinned small; the real scheduler bound its target pod there, asking half the guest
    (moved,) = [m for m in world.migrations() if m.get("status", {}).get("phase") == "Succeeded"]
    assert moved["spec"]["addedNodeSelector"] == {"kubernetes.io/hostname": small}
    assert [asked(pod) for pod in pods_on(world, small)] == [sizes["web"] // 2 + 100 * MI]


def pods_on(world: Stack, node: str) -> list[Any]:
    """The pods of the test's namespace bound to ``node``."""
    pods = k8s_client.CoreV1Api(world.cp.api_client()).list_namespaced_pod(world.namespace).items
    return [pod for pod in pods if pod.spec.node_name == node]


def asked(pod: Any) -> int | None:
    """The memory a launcher pod asks."""
    return quantity_bytes(pod.spec.containers[0].resources.requests["memory"])


VMS_LABEL = "dynamem.io/vms"


@pytest.fixture
def pooled(request: pytest.FixtureRequest) -> Iterator[tuple[Stack, list[str]]]:
    """web (1Gi, up to 4Gi) on ``home``, a small node ``outside`` and a large one ``inside``, under the
    KubeVirt CR's ``developerConfiguration.nodeSelectors`` {dynamem.io/vms: yes}: every launcher
    selects it."""
    kubevirt_cr(request, {"developerConfiguration": {"nodeSelectors": {VMS_LABEL: "yes"}}})
    yield from first_node_stack(
        request,
        {"home": "8Gi", "outside": "4Gi", "inside": "16Gi"},
        {"web": {"startup": "1Gi", "maximum": "4Gi"}},
    )


def test_the_crs_launcher_node_selector_keeps_every_target_on_the_nodes_it_selects(
    pooled: tuple[Stack, list[str]],
) -> None:
    """KubeVirt renders the CR's ``nodeSelectors`` on every launcher (``NewNodeSelectorRenderer``), a
    migration's target included. ``outside`` has the room a bin packer picks for web's grow but not the
    label: the scheduler would leave the target Pending there until KubeVirt fails the migration. dynamem
    reads the selector from the CR and pins ``inside``."""
    world, (home, _outside, inside) = pooled
    core = k8s_client.CoreV1Api(world.api)
    for node in (home, inside):
        core.patch_node(node, {"metadata": {"labels": {VMS_LABEL: "yes"}}})
    wait_until("web running", lambda: world.has("web"), timeout=60)
    world.set_demand(web=1.2)  # one multiplicative step (1.5Gi) covers it
    operator = world.start_operator()
    wait_until(
        "the operator read the CR",
        lambda: f"launcher nodeSelectors {{'{VMS_LABEL}': 'yes'}}" in operator.logs(),
        timeout=30,
    )

    world.grown_by_dynamem_to("web", inside)
    (target,) = core.list_namespaced_pod(world.namespace, label_selector="kubevirt.io/migrationJobUID").items
    assert target.spec.node_selector[VMS_LABEL] == "yes"


def test_a_cr_that_would_evict_for_a_memory_change_leaves_running_vms_alone_until_it_lists_live_migrate(
    stack: tuple[Stack, list[str]], request: pytest.FixtureRequest
) -> None:
    """Under workloadUpdateMethods [Evict], KubeVirt carries out a memory change KubeVirt's updater sees
    without a migration by evicting the VM (the stand-in plays it, test_kubevirt_sim_live.py): dynamem
    changes no running VM then, and says why in the status; once the CR lists LiveMigrate, it balances."""
    world, _nodes = stack
    updates = kubevirt_cr(request, {}, {"workloadUpdateMethods": ["Evict"]})
    wait_until("the VMs running", lambda: all(world.has(name) for name in VMS), timeout=60)
    first = world.vmi("web")["metadata"]["uid"]
    world.set_demand(web=1.2)  # pages at 1Gi
    operator = world.start_operator("--resync-period", "2")
    wait_until(
        "the operator read the CR", lambda: "workloadUpdateMethods ['Evict']" in operator.logs(), timeout=30
    )

    wait_until(
        "web's status saying why it is held",
        lambda: "Evict without LiveMigrate" in str(world.vmm("web").get("status")),
        timeout=30,
    )
    rounds = operator.gauge("dynamem_balance_rounds_total") or 0.0
    wait_until(
        "three more rounds", lambda: (operator.gauge("dynamem_balance_rounds_total") or 0) >= rounds + 3
    )
    assert world.guest("web") == GI and world.vmi("web")["metadata"]["uid"] == first
    assert not world.migrations()

    updates({"workloadUpdateMethods": ["LiveMigrate", "Evict"]})
    sizes = world.reach({"web": 1.2})
    assert sizes["web"] > GI and world.vmi("web")["metadata"]["uid"] == first  # grown by a migration
