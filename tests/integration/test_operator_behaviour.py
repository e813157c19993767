"""The operator's promises, each end to end (real API server and Prometheus, simulator, operator process):
priority and buffer edits take effect without a restart, a metrics outage holds memory, deleting a
VirtualMachineMemory leaves its VM alone and never hangs, over-subscription and KubeVirt's RestartRequired
are reported, and every change is an Event.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from dynamem.kube.objects import GI, MI, condition_is, conditions, quantity_bytes
from dynamem.testing.controlplane import ControlPlane
from dynamem.testing.prometheus import Prometheus

from .operator_harness import Stack, one_node, wait_until

VM_1_4 = {"startup": "1Gi", "maximum": "4Gi"}


@pytest.fixture
def make_stack(
    control_plane: ControlPlane, prometheus: Prometheus, namespace: str, unique_name: Callable[[str], str]
) -> Callable[..., Stack]:
    stacks: list[Stack] = []

    def make(memory: str, vms: dict[str, dict[str, object]]) -> Stack:
        stack = Stack(control_plane, prometheus, namespace, one_node(unique_name("node"), memory, vms))
        stacks.append(stack)
        return stack

    yield make  # type: ignore[misc]
    for stack in stacks:
        stack.close()


def test_buffer_edit_applies_at_the_next_round(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack("8Gi", {"web": VM_1_4})
    stack.set_demand(web=1.6)
    stack.start_operator()
    # its demand: a paging guest grows x1.5 with its buffer (1.875Gi), and as far again while the cluster has
    # memory to spare: 2.75Gi
    stack.reach({"web": 1.6})
    stack.patch_vmm("web", {"buffer": 50})

    # 1.6 / (1 - 0.50) = 3.2Gi: the target moves at once, but a grow of 0.45Gi restores less than 25 % of the
    # 2.75Gi it would migrate, so the VM stays; a buffer of 65 % (4.57Gi, its 4Gi maximum) is worth the move.
    # (a measurement: written when it moves by 5 %, at most once a minute per VM)
    def target() -> int:
        return quantity_bytes(stack.vmm("web").get("status", {}).get("target")) or 0

    wait_until("the new target", lambda: abs(target() - 3.2 * GI) <= 4 * MI, 90)
    assert stack.vmm("web")["status"]["observedGeneration"] == stack.vmm("web")["metadata"]["generation"]
    rounds = stack.rounds()
    wait_until("three more rounds", lambda: stack.rounds() >= rounds + 3, timeout=30)
    assert stack.guest("web") == stack.has("web") == 2816 * MI  # not worth a move: none asked
    stack.patch_vmm("web", {"buffer": 65})
    stack.reach({"web": 4.0}, tolerance=0)
    assert stack.vmm("web")["status"]["observedGeneration"] == stack.vmm("web")["metadata"]["generation"]


def test_a_priority_edit_is_taken_at_the_next_round_and_orders_the_changes(
    make_stack: Callable[..., Stack],
) -> None:
    """Two idle VMs alike but for their names, and one migration at a time (``--max-parallel-migrations
    1``): with equal priorities the plan takes gold first (by name). lead's priority is raised while the
    operator runs; once the edit is observed both start paging at once, and lead's change is made first: the
    budget goes to paging VMs by priority. How the policy shares memory by priority is tested on the policy
    itself (tests/unit/test_balance.py, test_properties.py)."""
    stack = make_stack("8Gi", {"gold": VM_1_4, "lead": VM_1_4})
    stack.set_demand(gold=0.5, lead=0.5)
    stack.start_operator("--max-parallel-migrations", "1")
    wait_until("the operator balancing", lambda: stack.rounds() >= 2, timeout=30)
    stack.patch_vmm("lead", {"priority": 90})
    generation = stack.vmm("lead")["metadata"]["generation"]
    wait_until(
        "the edit observed",
        lambda: stack.vmm("lead").get("status", {}).get("observedGeneration") == generation,
        timeout=30,
    )
    assert not stack.migrations()
    stack.set_demand(gold=1.5, lead=1.5)
    first = wait_until("a migration", stack.migrations, timeout=60, every=0.1)
    assert [m["spec"]["vmiName"] for m in first] == ["lead"]

    def both_above_demand() -> bool:
        stack.check_kubevirt_invariants()
        return all((stack.has(n) or 0) >= 1.5 * GI for n in ("gold", "lead"))

    try:
        wait_until("both VMs above their demand", both_above_demand, timeout=90)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {stack.diagnosis(['gold', 'lead'])}") from None


def test_metrics_outage_holds_memory(make_stack: Callable[..., Stack]) -> None:
    """While a guest's metrics are gone (its virt-handler scraped, but not reporting it), dynamem does not act
    on what Prometheus still holds of it (its paging within the rate window, its last sample): the VM is held
    and its status says its demand is unknown. db pages at 1Gi; its metrics stop before the operator starts;
    once they are back, db grows to its demand."""
    stack = make_stack("8Gi", {"db": VM_1_4})
    stack.set_demand(db=2.4)  # pages at 1Gi
    db = f'namespace="{stack.namespace}", name="db"'
    stack.prometheus.wait_for(f"rate(kubevirt_vmi_memory_swap_in_traffic_bytes{{{db}}}[2m]) > 0", timeout=30)
    stack.sim.feed.paused = True
    wait_until(
        "db's series ended", lambda: not stack.prometheus.query(f"kubevirt_vmi_memory_usable_bytes{{{db}}}")
    )
    assert stack.prometheus.query(f"rate(kubevirt_vmi_memory_swap_in_traffic_bytes{{{db}}}[2m]) > 0")
    stack.start_operator()
    wait_until("DemandKnown=False", lambda: stack.conditions("db").get("DemandKnown") == "False", timeout=30)
    assert stack.vmm("db")["status"]["memoryStatus"] == "Unknown"
    rounds = stack.rounds()
    wait_until("five more rounds", lambda: stack.rounds() >= rounds + 5, timeout=30)
    assert stack.guest("db") == GI and not stack.migrations()
    stack.sim.feed.paused = False
    stack.reach({"db": 2.4})


def test_deleting_a_vmm_leaves_the_vm_and_never_hangs(
    make_stack: Callable[..., Stack], custom_objects: k8s_client.CustomObjectsApi
) -> None:
    stack = make_stack("8Gi", {"app": VM_1_4})
    stack.set_demand(app=2.4)
    stack.start_operator()
    size = stack.reach({"app": 2.4})["app"]
    vmm = stack.vmm("app")
    assert not vmm["metadata"].get("finalizers"), "dynamem must not block deletion"
    custom_objects.delete_namespaced_custom_object(
        "dynamem.io", "v1alpha1", stack.namespace, "virtualmachinememories", "app"
    )
    with pytest.raises(ApiException) as gone:
        stack.vmm("app")
    assert gone.value.status == 404
    # paging below its maximum: a VM dynamem still balanced would grow (a shrink would be held back anyway:
    # it changed less than a window ago, and the cluster has memory to spare)
    assert size < 4 * GI
    moved = len(stack.migrations())
    stack.set_demand(app=3.9)
    rounds = stack.rounds()
    wait_until("five more rounds", lambda: stack.rounds() >= rounds + 5, timeout=30)
    assert stack.guest("app") == size, "a VM without a VirtualMachineMemory is never touched"
    assert len(stack.migrations()) == moved


def test_changes_are_events_with_reasons(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack("8Gi", {"api": VM_1_4})
    stack.set_demand(api=1.6)
    stack.start_operator()
    stack.reach({"api": 1.6})
    reasons = {e["reason"] for e in stack.events("api")}
    assert "MemoryIncreased" in reasons
    notes = [e["note"] for e in stack.events("api") if e["reason"] == "MemoryIncreased"]
    assert any(note.startswith("memory.guest 1Gi -> ") for note in notes), notes
    assert all(e["regarding"]["kind"] == "VirtualMachineMemory" for e in stack.events("api"))


def test_over_subscribed_node_is_reported(make_stack: Callable[..., Stack]) -> None:
    # Room is counted as the scheduler counts it (pod requests against allocatable), so three 1 GiB VMs can
    # no longer START on a 2 GiB node: the stand-in binds a launcher there only when it fits, and the
    # scheduler places the rest elsewhere. A node becomes over-subscribed when its allocatable drops under
    # the pods already running there (the kubelet restarted with a larger reservation): three VMs fill a
    # 3 GiB node, its allocatable drops to 2 GiB, and the other node is cordoned, so no move relieves it.
    stack = make_stack("3Gi", {"a": VM_1_4, "b": VM_1_4, "c": VM_1_4})
    stack.set_demand(a=0.5, b=0.5, c=0.5)

    def all_on_one_node() -> str | None:
        guests = [stack.sim.guest(stack.namespace, n) for n in "abc"]
        nodes = {g.node for g in guests if g is not None}
        return nodes.pop() if len(nodes) == 1 and all(g is not None for g in guests) else None

    node = wait_until("the three VMs running on their start node", all_on_one_node, timeout=30)
    core = k8s_client.CoreV1Api(stack.api)
    core.patch_node(f"{node}-b", {"spec": {"unschedulable": True}})
    core.patch_node_status(node, {"status": {"allocatable": {"memory": "2Gi"}}})
    stack.start_operator()
    wait_until("NodeOverSubscribed", lambda: stack.conditions("a").get("NodeOverSubscribed") == "True", 30)
    message = next(
        c["message"] for c in stack.vmm("a")["status"]["conditions"] if c["type"] == "NodeOverSubscribed"
    )
    assert message.startswith("pod requests 3072Mi exceed the node's 2048Mi"), message
    # the Event follows the status write (controller/status.py, _transition_events): wait for it too
    wait_until(
        "the FloorsExceedPool warning",
        lambda: any(e["reason"] == "FloorsExceedPool" and e["type"] == "Warning" for e in stack.events("a")),
        10,
    )
    assert [stack.guest(n) for n in "abc"] == [GI, GI, GI], "nothing goes below boot memory"


def test_restart_required_is_mirrored_from_kubevirt(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack("8Gi", {"legacy": VM_1_4})
    stack.set_demand(legacy=0.5)
    stack.start_operator()
    stack.converge({"legacy": 1})
    since = stack.vmm("legacy")["metadata"]["resourceVersion"]
    # Someone lowers memory.guest below what the VM booted with: KubeVirt answers RestartRequired.
    stack.custom.patch_namespaced_custom_object(
        "kubevirt.io",
        "v1",
        stack.namespace,
        "virtualmachines",
        "legacy",
        {"spec": {"template": {"spec": {"domain": {"memory": {"guest": "512Mi"}}}}}},
    )
    # dynamem mirrors the condition in the round that sees it, and in that round takes the refused value back
    # (memory.guest to what the guest has); KubeVirt keeps RestartRequired until the VM restarts (vm.go,
    # cleanupRestartRequired only from startVMI/stopVMI) and handles no memory change meanwhile.
    seen = stack.watch_vmm("legacy", since, lambda body: condition_is(body, "RestartRequired"), 30)
    assert conditions(seen)["RestartRequired"]["reason"] == "KubeVirt"
    wait_until("memory.guest back at what the guest has", lambda: stack.guest("legacy") == GI, 30)
    reverted = [e for e in stack.events("legacy") if e["reason"] == "MemoryChangeReverted"]
    assert reverted and "not dynamem" in reverted[0]["note"], reverted
    # the refused value was the hand edit's, not dynamem's: nothing is held, but KubeVirt's refusal stands
    stack.set_demand(legacy=1.6)
    wait_until(
        "the status saying KubeVirt wants a restart",
        lambda: "KubeVirt wants a restart" in str(stack.vmm("legacy").get("status")),
        30,
    )
    rounds = stack.rounds()  # rounds go by: no change asked while KubeVirt refuses every one
    wait_until("three more rounds", lambda: stack.rounds() >= rounds + 3, timeout=60)
    assert stack.guest("legacy") == GI and stack.conditions("legacy").get("RestartRequired") == "True"
    assert stack.vmm("legacy").get("status", {}).get("hold") is None
    # the VM restarted (its owner stops and starts it): the refusal is gone, and the VM is balanced again
    first = stack.vmi("legacy")["metadata"]["uid"]
    stack.set_run_strategy("legacy", "Halted")
    wait_until("legacy stopped", lambda: not stack.has("legacy"), 30)
    stack.set_run_strategy("legacy", "Always")
    wait_until(
        "RestartRequired cleared by the restart, mirrored",
        lambda: stack.conditions("legacy").get("RestartRequired") == "False",
        60,
    )
    wait_until(
        "a grow carried out",
        lambda: (stack.has("legacy") or 0) > GI and stack.guest("legacy") == stack.has("legacy"),
        90,
    )
    assert stack.vmi("legacy")["metadata"]["uid"] != first
    assert stack.vmm("legacy").get("status", {}).get("hold") is None


def test_a_failed_hotplug_is_taken_back(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack("8Gi", {"flaky": VM_1_4})
    stack.sim.options.failing.add("flaky")  # KubeVirt will report HotMemoryChange=False for every change
    stack.set_demand(flaky=2.4)
    stack.start_operator()
    wait_until(
        "the change taken back",
        lambda: any(e["reason"] == "MemoryChangeReverted" for e in stack.events("flaky")),
        timeout=60,
    )
    wait_until("memory.guest back at the guest's size", lambda: stack.guest("flaky") == GI, timeout=30)
    hold = wait_until(
        "held until the VMI restarts, in the status",
        lambda: stack.vmm("flaky").get("status", {}).get("hold"),
        timeout=30,
    )
    assert "hotplug failed" in hold["reason"]
    assert hold["vmiUID"], "held until this VMI restarts"
    rounds = stack.rounds()  # held: no new attempt
    wait_until("three more rounds", lambda: stack.rounds() >= rounds + 3, timeout=60)
    assert stack.guest("flaky") == GI and stack.has("flaky") == GI
