"""The seed's workday, end to end: real kube-apiserver, real Prometheus, the KubeVirt simulator, and the
operator as its own process. The guests' demand is steered step by step; dynamem must give each VM at least
its demand (the seed's 2.4/1/1.6 GiB, then 1.6/1/2.8/1 GiB) through live migrations, within KubeVirt's
invariants.

The guests are fitted to real ones (a 1Gi guest shows at most ~886Mi used): a VM short of memory shows it by
paging, which the cluster plan (the operator's default) answers by growing it multiplicatively, so a VM may
end above or below the seed's number (demand plus buffer): a grow for buffer alone must restore a quarter of
the bytes it migrates; a VM whose use drops keeps its size until its use stayed low for the shrink
window (an hour), so finance keeps its step-1 size in step 2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from kubernetes import client as k8s_client

from dynamem.kube.objects import GI, to_quantity
from dynamem.testing.controlplane import ControlPlane
from dynamem.testing.prometheus import Prometheus

from .operator_harness import Stack, wait_until, workday


@pytest.fixture
def stack(
    control_plane: ControlPlane, prometheus: Prometheus, namespace: str, unique_name: Callable[[str], str]
) -> Iterator[Stack]:
    world = Stack(control_plane, prometheus, namespace, workday(unique_name("host")))
    try:
        yield world
    finally:
        world.close()


def test_seed_workday_ends_each_step_near_demand(stack: Stack) -> None:
    stack.set_demand(finance=0.5, sales=0.5, engineering=0.5)
    stack.start_operator()
    # Step 0: three VMs at their startup memory; nothing to change (0.5 GiB in use needs 0.625 < 1 GiB).
    stack.converge({"finance": 1, "sales": 1, "engineering": 1})
    assert not stack.moves
    # A step holds for 15 minutes: Prometheus has a history of it when the next one comes. Without one (a
    # series seconds old) the step up in use that paging shows before finance's first move is, to the
    # bounded least-squares rise, as steep as an hour's ramp, and finance is grown an hour ahead of it
    # (README, "A step up in use reads as a rise"). Two minutes of 1 s scrapes keep that under what
    # makes finance grow again (the demand it shows after its move plus that rise fits in its new size).
    finance = f'kubevirt_vmi_memory_usable_bytes{{namespace="{stack.namespace}", name="finance"}}'
    stack.prometheus.wait_for(f"count_over_time({finance}[1h]) >= 120", timeout=150)
    assert stack.rounds() >= 3 and not stack.migrations()  # two minutes of step 0's rounds: nothing moved

    # Step 1 (15 minutes later): Finance runs reports, Engineering an analysis job. The seed: 3 and 2 GiB.
    stack.set_demand(finance=2.4, engineering=1.6)
    step1 = stack.reach({"finance": 2.4, "sales": 1, "engineering": 1.6})
    assert step1["sales"] == GI  # not paging: never moved

    # Step 2 (30 minutes): Service starts with 1 GiB; finance 1.6, engineering 2.8 (the seed: 2 and 3.5 GiB).
    stack.set_demand(finance=1.6, engineering=2.8, service=0.5)
    stack.custom.patch_namespaced_custom_object(
        "kubevirt.io",
        "v1",
        stack.namespace,
        "virtualmachines",
        "service",
        {"spec": {"runStrategy": "Always"}},
    )
    step2 = stack.reach({"finance": 1.6, "sales": 1, "engineering": 2.8, "service": 1})
    assert step2["finance"] == step1["finance"]  # use stayed low for less than the window: no shrink yet

    # right after its move the last sample may be of the guest before it: demand is Unknown until a fresh one,
    # and measurements reach the status at most once a minute per VM (bounded status writes)
    status = wait_until(
        "engineering's status at its size, measured",
        lambda: (
            (s := stack.vmm("engineering")["status"])["assigned"] == to_quantity(step2["engineering"])
            and s.get("memoryStatus") == "OK"
            and s
        ),
        timeout=100,
    )
    assert status["memoryStatus"] == "OK"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "DemandKnown": "True",
        "RestartRequired": "False",
        "NodeOverSubscribed": "False",
        "FieldOwnedByOtherManager": "False",
    }
    # every change went through server-side apply under dynamem's name, owning only the memory fields
    managed = [m for m in stack.vm("engineering")["metadata"]["managedFields"] if m["manager"] == "dynamem"]
    assert len(managed) == 1 and managed[0]["operation"] == "Apply"
    owned = managed[0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:domain"]
    assert set(owned) == {"f:memory"}
    assert set(owned["f:memory"]) <= {"f:guest", "f:maxGuest", "."}


def test_vm_stop_resets_startup_and_max_guest(stack: Stack) -> None:
    stack.set_demand(finance=2.4, sales=0.5, engineering=0.5)
    stack.start_operator()
    stack.reach({"finance": 2.4, "sales": 1, "engineering": 1})
    stack.custom.patch_namespaced_custom_object(
        "kubevirt.io",
        "v1",
        stack.namespace,
        "virtualmachines",
        "finance",
        {"spec": {"runStrategy": "Halted"}},
    )

    def reset() -> bool:
        memory = stack.vm("finance")["spec"]["template"]["spec"]["domain"]["memory"]
        return memory.get("guest") == "1Gi" and memory.get("maxGuest") == "4Gi"

    wait_until("finance back at startup memory", reset, timeout=30)
    status = wait_until(
        "finance status Stopped",
        lambda: (s := stack.vmm("finance").get("status", {})).get("memoryStatus") == "Stopped" and s,
    )
    assert status["assigned"] == "1Gi"


def test_vm_without_vmm_is_never_touched(stack: Stack, custom_objects: k8s_client.CustomObjectsApi) -> None:
    custom_objects.delete_namespaced_custom_object(
        "dynamem.io", "v1alpha1", stack.namespace, "virtualmachinememories", "sales"
    )
    stack.set_demand(finance=2.4, sales=3.0, engineering=0.5)
    stack.start_operator()
    stack.reach({"finance": 2.4, "engineering": 1})
    assert stack.guest("sales") == 1 * GI
    fields = stack.vm("sales")["metadata"].get("managedFields", [])
    assert all(m["manager"] != "dynamem" for m in fields)
