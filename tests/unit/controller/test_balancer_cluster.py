"""dynamem's cluster plan in the operator's round (:mod:`dynamem.controller.balancer`): a paging guest is
grown though its used memory looks fine, each change names its node, and dynamem makes the migration there as
soon as the VMI's spec shows the change; a lost race is said, not fought."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import pytest

from dynamem.controller.balancer import Balancer, RoundOptions, _race_lost
from dynamem.controller.loop import OperatorState, balancing_loop
from dynamem.controller.options import OperatorOptions
from dynamem.controller.placement import Placement
from dynamem.controller.ports import DemandReading, GuestSignals
from dynamem.controller.view import Kind
from dynamem.kube.api import ApiException
from dynamem.kube.objects import GI, MI, ObjectKey, quantity_bytes
from dynamem.policy.model import BalanceConfig

from .builders_k8s import NS, FakeWriter, make_node_body
from .test_balancer import NOW, World
from .test_kubevirt_follower import Listed

BUSY = ("finance", "sales", "engineering")
CLUSTER = RoundOptions(balance=BalanceConfig(grow_headroom_percent=0))  # policy dynamem: the cluster plan


@dataclass
class PagingGuests:
    """Guests as the real ones show: a 1Gi guest uses at most ~886Mi, usable 20Mi, and pages when busy."""

    busy: set[str] = field(default_factory=lambda: set(BUSY))
    sizes: dict[str, int] = field(default_factory=dict)

    async def read(self) -> DemandReading:
        used, signals = {}, {}
        for name in BUSY:
            key, size = ObjectKey(NS, name), self.sizes.get(name, GI)
            paging = name in self.busy
            used[key] = size - 138 * MI if paging else size - 400 * MI
            signals[key] = GuestSignals(
                available=size,
                usable=20 * MI if paging else 400 * MI,
                swap_bps=4e6 if paging else 0.0,
                major_faults_ps=60.0 if paging else 0.0,
            )
        return DemandReading(by_vm=used, signals=signals)


def three_busy_on_one_node() -> World:
    world = World(
        nodes=[
            make_node_body("host", allocatable="8Gi"),
            make_node_body("b", allocatable="16Gi"),
            make_node_body("c", allocatable="8Gi"),
        ]
    )
    for name in BUSY:
        world.add(name)
    return world


def round_of(balancer: Balancer, world: World) -> None:
    asyncio.run(balancer.run_round(world.observed()))


def test_node_local_never_grows_a_paging_guest_whose_used_memory_looks_fine() -> None:
    world, writer = three_busy_on_one_node(), FakeWriter()
    options = RoundOptions(balance=CLUSTER.balance, policy="node-local")
    round_of(Balancer(writer, PagingGuests(), options, clock=lambda: NOW), world)
    assert writer.applies == [] and writer.migrations == []


def test_paging_guests_grow_and_dynamem_migrates_each_to_the_node_its_plan_chose() -> None:
    world, writer = three_busy_on_one_node(), FakeWriter()
    guests = PagingGuests()
    balancer = Balancer(writer, guests, CLUSTER, clock=lambda: NOW)
    round_of(balancer, world)
    grown = {a.name: quantity_bytes(a.guest) for a in writer.applies}
    assert len(grown) == 2  # two out of a node at once (KubeVirt's parallelOutboundMigrationsPerNode)
    assert all((size or 0) > GI for size in grown.values())  # multiplied: paging, demand unknown
    assert writer.migrations == []  # the VMI's spec does not show the change yet
    targets = {key.name: p.target for key, p in balancer.placements.items()}
    assert set(targets) == set(grown)
    # packed (best fit) on one idle node, never the source: both fit on c, the fuller one (b comes first by
    # name), and b's hole stays whole
    assert set(targets.values()) == {"c"}
    world.apply(writer.applies, hotplug_done=False)  # KubeVirt copies the new guest into the VMI's spec
    world.store(writer.statuses)
    writer.clear()
    round_of(balancer, world)
    assert sorted((vmi, node) for _, vmi, node, _ in writer.migrations) == sorted(targets.items())
    assert all("to " + node in reason for _, _, node, reason in writer.migrations)
    assert {e.reason for e in writer.events} == {"MigrationCreated"}
    # the status says the change is in flight, where it goes and why
    assert {name for name, _ in writer.statuses} >= set(targets)
    for name, status in writer.statuses:
        if name in targets:
            assert (
                status["reason"].startswith("held: change in flight: ")
                and f"to {targets[name]}" in status["reason"]
            ), status["reason"]
    assert writer.applies == []  # the third waits: two migrations are out of its node
    writer.clear()
    round_of(balancer, world)  # made once: no second migration while the first is under way
    assert writer.migrations == []
    for name, node in targets.items():  # the migrations land: the VMs run on their new nodes, grown
        world.vmis[name]["status"]["nodeName"] = node
    world.finish_hotplugs()
    guests.busy -= set(targets)  # at their new size they page no more
    guests.sizes.update({name: size or GI for name, size in grown.items()})
    writer.clear()
    round_of(balancer, world)
    (third,) = [a.name for a in writer.applies]
    assert third not in targets and balancer.placements[ObjectKey(NS, third)].target in {"b", "c"}


def test_the_status_says_where_each_change_goes() -> None:
    world, writer = three_busy_on_one_node(), FakeWriter()
    balancer = Balancer(writer, PagingGuests(), CLUSTER, clock=lambda: NOW)
    round_of(balancer, world)
    reasons = {name: status.get("reason", "") for name, status in writer.statuses}
    assert len(balancer.placements) == 2  # two out of a node at once
    for key, placement in balancer.placements.items():
        assert f"to {placement.target}" in reasons[key.name]
        assert "paging" in reasons[key.name]


def migration_refused(writer: FakeWriter) -> Balancer:
    """Two rounds on three busy VMs: the grows written, then their migrations asked of ``writer``."""
    world, balancer = three_busy_on_one_node(), Balancer(writer, PagingGuests(), CLUSTER, clock=lambda: NOW)
    round_of(balancer, world)
    world.apply(writer.applies, hotplug_done=False)
    writer.clear()
    round_of(balancer, world)
    return balancer


def test_a_migration_refused_by_admission_is_a_lost_race_the_vm_lands_where_the_scheduler_puts_it() -> None:
    writer = FakeWriter(refuse_migration={"finance"})
    balancer = migration_refused(writer)
    assert "finance" not in {vmi for _, vmi, _, _ in writer.migrations}
    lost = [e for e in writer.events if e.reason == "MigrationRaceLost"]
    assert [e.name for e in lost] == ["finance"]
    assert ObjectKey(NS, "finance") not in balancer.placements  # not fought: the next plan reads where it is


def test_a_migration_refused_for_another_reason_is_said_as_a_warning_not_a_lost_race() -> None:
    """A 403 (a ClusterRole without create on migrations), a VMI KubeVirt will not migrate, a spec refused:
    the user sees why dynamem's migration was not made, not that another came first."""
    writer = FakeWriter(forbid_migration={"finance"})
    balancer = migration_refused(writer)
    assert not [e for e in writer.events if e.reason == "MigrationRaceLost"]
    (refused,) = [e for e in writer.events if e.reason == "MigrationRefused"]
    assert refused.name == "finance" and refused.type_ == "Warning" and "403: " in refused.note, refused
    assert ObjectKey(NS, "finance") not in balancer.placements


def test_a_target_promised_to_a_change_in_flight_is_not_promised_again_in_a_later_round() -> None:
    # Seen in the fault suite under load: a change placed on node X, its target pod not bound yet (made, or
    # Pending behind a VM leaving X); the next round placed another VM on X, whose target pod took the room
    # first, and the first change's target stayed unschedulable until KubeVirt failed its migration.
    world = World(
        nodes=[
            make_node_body("host", allocatable="2Gi"),  # full: finance and sales
            make_node_body("d", allocatable="8Gi"),
            make_node_body("b", allocatable="4Gi"),
            make_node_body("c", allocatable="8Gi"),
        ]
    )
    for name in BUSY:
        world.add(name)
    world.vmis["engineering"]["status"]["nodeName"] = "d"
    writer, guests = FakeWriter(), PagingGuests(busy={"finance", "sales"})
    # grows by the guess alone (x1.5 of 1Gi), not beyond it into the memory to spare, so both fit in b
    exact = RoundOptions(balance=BalanceConfig(grow_headroom_percent=0, paging_spare_percent=0))
    balancer = Balancer(writer, guests, exact, clock=lambda: NOW)
    round_of(balancer, world)
    targets = {key.name: p.target for key, p in balancer.placements.items()}
    assert targets == {"finance": "b", "sales": "b"}  # best fit: 3Gi of b's 4Gi promised
    world.apply(writer.applies, hotplug_done=False)
    guests.busy.add("engineering")
    writer.clear()
    round_of(balancer, world)  # the migrations to b are made; their target pods are not bound yet
    assert sorted(node for _, _, node, _ in writer.migrations) == ["b", "b"]
    assert balancer.placements[ObjectKey(NS, "engineering")].target == "c"


def test_a_change_whose_vm_no_longer_asks_it_is_let_go_at_its_deadline() -> None:
    """dynamem wrote two grows; before KubeVirt copied them into the VMIs, someone put memory.guest back (a
    GitOps sync, ``kubectl edit``), so the VMIs never show them and no migration is ever made. Remembered for
    ever, each would keep a migration slot and its target's room; at the change deadline they are let go and
    the VMs, still paging, are planned afresh."""
    world, writer = three_busy_on_one_node(), FakeWriter()
    clock = [NOW]
    balancer = Balancer(writer, PagingGuests(), CLUSTER, clock=lambda: clock[0])
    round_of(balancer, world)
    first = set(balancer.placements)
    assert len(first) == 2 and writer.applies  # the grows written; the world keeps memory.guest at 1Gi
    clock[0] = NOW + 60
    writer.clear()
    round_of(balancer, world)
    assert set(balancer.placements) == first and not writer.applies  # waiting for KubeVirt, within deadline
    clock[0] = NOW + CLUSTER.change_deadline_s + 1
    writer.clear()
    round_of(balancer, world)
    assert writer.applies  # planned afresh
    assert all(p.asked_at == clock[0] for p in balancer.placements.values())


def test_a_paging_vms_status_shows_the_demand_its_pressure_is_judged_on() -> None:
    """`kubectl get vmmem`: DEMAND and PRESSURE on one row agree. A guest paging at 1Gi shows 886Mi used; the
    plan takes its demand as a guess above its size, and the status shows that guess, not the capped use."""
    world, writer = three_busy_on_one_node(), FakeWriter()
    round_of(Balancer(writer, PagingGuests(busy={"finance"}), CLUSTER, clock=lambda: NOW), world)
    status = dict(writer.statuses)["finance"]
    shown, assigned = quantity_bytes(status["demand"]), quantity_bytes(status["assigned"])
    assert shown is not None and assigned is not None
    assert shown > GI - 138 * MI  # the plan's demand, not the capped use the guest shows
    assert status["pressure"] == round(100 * shown / assigned)


@pytest.mark.parametrize("phase", ["Pending", "Scheduling", "Scheduled", "PreparingTarget", "TargetReady"])
def test_no_change_while_a_migration_of_the_vmi_is_made_but_not_copying(phase: str) -> None:
    """KubeVirt made the target pod at the size the VMI had; a change written now would be hotplugged when
    that migration ends, into a pod that asks for less (KubeVirt v1.7.0 takes the change, since the VMI is
    not migrating by its migrationState yet). finance pages but is held; another grows."""
    world, writer = three_busy_on_one_node(), FakeWriter()
    world.migrations.append(
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstanceMigration",
            "metadata": {
                "name": "kubevirt-evacuation-finance",
                "namespace": NS,
                "creationTimestamp": "2026-03-02T11:59:00Z",
                "uid": "m-finance",
            },
            "spec": {"vmiName": "finance"},
            "status": {"phase": phase},
        }
    )
    round_of(Balancer(writer, PagingGuests(), CLUSTER, clock=lambda: NOW), world)
    grown = {a.name for a in writer.applies}
    assert "finance" not in grown and grown  # another grows (the migration takes one of host's 2 out)
    assert dict(writer.statuses)["finance"]["reason"] == (
        "held: a migration of its VMI is starting (its target pod is made at the size it has)"
    )
    world.migrations[0]["status"]["phase"] = "Failed"  # over: finance may change again
    writer.clear()
    round_of(Balancer(writer, PagingGuests(), CLUSTER, clock=lambda: NOW), world)
    assert "finance" in {a.name for a in writer.applies}


def test_between_rounds_a_change_s_migration_is_made_as_soon_as_its_vmi_shows_it() -> None:
    """KubeVirt's workload-updater may take a VMI within 5 s of its showing the change, sooner while other
    migrations move: the loop has the balancer make dynamem's migration on the VMI's event, not at the next
    round. Nothing else is done there: one migration per change, no write."""
    world, writer = three_busy_on_one_node(), FakeWriter()
    balancer = Balancer(writer, PagingGuests(), CLUSTER, clock=lambda: NOW)
    round_of(balancer, world)
    applies = {a.name: a for a in writer.applies}
    targets = {key.name: p.target for key, p in balancer.placements.items()}
    assert balancer.waiting_placements() and len(targets) == 2
    writer.clear()
    assert asyncio.run(balancer.carry_out_ready(world.observed())) == 0  # no VMI shows its change yet
    first, second = sorted(targets)
    world.apply([applies[first]], hotplug_done=False)  # KubeVirt copies one change into its VMI
    assert asyncio.run(balancer.carry_out_ready(world.observed())) == 1
    assert [(vmi, node) for _, vmi, node, _ in writer.migrations] == [(first, targets[first])]
    assert [e.reason for e in writer.events] == ["MigrationCreated"] and writer.applies == []
    assert asyncio.run(balancer.carry_out_ready(world.observed())) == 0  # made once
    assert balancer.waiting_placements()
    world.apply([applies[second]], hotplug_done=False)
    assert asyncio.run(balancer.carry_out_ready(world.observed())) == 1
    assert not balancer.waiting_placements()
    writer.clear()
    round_of(balancer, world)  # the migrations are not in the view yet: still counted, none made again
    assert writer.migrations == [] and writer.applies == []  # the third waits: two out of its node


def test_the_loop_makes_the_migration_on_the_vmi_s_event_not_at_the_next_round() -> None:
    """With a gap of 10 s between rounds, the change written by the first round has its migration made as
    soon as the VMI's event shows the change (kopf's handler sets ``vmi_changed``), long before a second
    round."""

    async def scenario() -> tuple[int, list[tuple[str, str]]]:
        options = OperatorOptions(interval_s=30.0, min_gap_s=10.0, resync_period_s=3600, standalone=True)
        state = OperatorState(options=options, identity="test")
        world, writer = three_busy_on_one_node(), FakeWriter()
        balancer = Balancer(writer, PagingGuests(), CLUSTER, clock=lambda: NOW)
        loop = asyncio.create_task(balancing_loop(state, lambda: balancer, Listed(world)))
        for _ in range(300):
            await asyncio.sleep(0.01)
            if state.rounds:
                break
        applies = list(writer.applies)
        assert len(applies) == 2 and writer.migrations == []
        world.apply(applies, hotplug_done=False)  # KubeVirt copies the changes into the VMIs
        for version, change in enumerate(applies, start=100):
            body = world.vmis[change.name]
            body["metadata"]["resourceVersion"] = str(version)
            state.view.apply_event(Kind.VMI, "MODIFIED", body)  # as the handler feeds the VMI's event
            state.wake.set()
            state.vmi_changed.set()
        for _ in range(300):
            await asyncio.sleep(0.01)
            if len(writer.migrations) == 2:
                break
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        return state.rounds, [(vmi, node) for _, vmi, node, _ in writer.migrations]

    rounds, made = asyncio.run(scenario())
    assert rounds == 1
    assert len(made) == 2


@pytest.mark.parametrize(
    ("status", "message", "lost"),
    [
        pytest.param(
            400, "in-flight migration detected. Active migration job (1) is in progress", True, id="400"
        ),
        pytest.param(400, "spec.vmiName: Required value", False, id="400-other"),
        pytest.param(409, "already exists", True, id="409"),
        pytest.param(422, "unprocessable", False, id="422"),
        pytest.param(403, "forbidden", False, id="403"),
    ],
)
def test_which_refusal_of_a_migration_is_a_lost_race(status: int, message: str, lost: bool) -> None:
    exc = ApiException(status=status, reason="refused", body=json.dumps({"message": message}))
    assert _race_lost(exc) is lost


def test_a_move_whose_migration_was_deleted_lets_its_slot_go_at_the_deadline() -> None:
    """dynamem made a plain move's migration, and someone deleted it (``virtctl migrate-cancel``): the VM
    stays where it was. Counted as in flight until the watch shows the migration, the placement would keep
    its node's outbound slot and its target's room for ever; at the change deadline it is let go."""
    world, writer = three_busy_on_one_node(), FakeWriter()
    clock = [NOW]
    balancer = Balancer(writer, PagingGuests(busy=set()), CLUSTER, clock=lambda: clock[0])
    key = ObjectKey(NS, "finance")
    balancer.placements[key] = Placement(
        target="b",
        guest=GI,
        reason="make room",
        asked_at=NOW,
        source="host",
        move_only=True,
        migration="finance-dynamem-1",
    )
    round_of(balancer, world)
    assert key in balancer.placements  # not in the view yet: still under way as far as dynamem knows
    clock[0] = NOW + CLUSTER.change_deadline_s + 1
    round_of(balancer, world)
    assert key not in balancer.placements


def test_an_over_subscribed_nodes_condition_names_the_nodes_figures_only() -> None:
    """Three 1Gi VMs on a node of 2Gi: NodeOverSubscribed says the node's own figures. It also carried the
    cluster's counts (changes planned, migrations in flight), which move with every change anywhere, and
    every status on the node was rewritten each time they did."""
    from .test_balancer import FakeDemand

    world = World(nodes=[make_node_body("host", allocatable="2Gi"), make_node_body("b", allocatable="16Gi")])
    for name in BUSY:
        world.add(name)
    writer = FakeWriter()
    round_of(Balancer(writer, FakeDemand(dict.fromkeys(BUSY, 0.5)), CLUSTER, clock=lambda: NOW), world)
    messages = {
        c["message"]
        for _, status in writer.statuses
        for c in status["conditions"]
        if c["type"] == "NodeOverSubscribed" and c["status"] == "True"
    }
    assert messages == {"pod requests 3072Mi exceed the node's 2048Mi"}
