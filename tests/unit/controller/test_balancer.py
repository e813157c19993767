"""One balancing round (:mod:`dynamem.controller.balancer`) against a fake cluster writer and fake demand.

The world is a handful of raw bodies (the seed's workday: finance, sales and engineering at 1Gi on an 8Gi
host, 1Gi..4Gi each, 20 % buffer); after a round, what the writer recorded can be fed back into the bodies as
KubeVirt and the API server would, so several rounds can be run in a row.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from dynamem.controller.balancer import Balancer, RoundOptions, RoundResult, grows_that_fit
from dynamem.controller.demand import DemandReading
from dynamem.controller.snapshot import Observed, build_snapshot
from dynamem.kube.objects import GI, MI, ObjectKey, quantity_bytes
from dynamem.policy.model import BalanceConfig, MemoryStatus, NodePlan, VmDecision

from .builders_k8s import (
    NS,
    Apply,
    FakeWriter,
    make_node_body,
    make_vm_body,
    make_vmi_body,
    make_vmm_body,
    observed,
)

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC).timestamp()
# the operator's defaults (``dynamem run``): no grow headroom, so targets are the seed's numbers
# These tests pin the per-node plan (the seed's one-node workday); the cluster plan has its own below.
OPTIONS = RoundOptions(balance=BalanceConfig(grow_headroom_percent=0), policy="node-local")
WORKDAY = ("finance", "sales", "engineering")


@dataclass
class FakeDemand:
    """Demand in GiB per VM name (namespace ``NS``); ``error`` makes every demand unknown."""

    gib: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    reads: int = 0

    async def read(self) -> DemandReading:
        self.reads += 1
        if self.error:
            return DemandReading(error=self.error)
        return DemandReading(by_vm={ObjectKey(NS, n): round(v * GI) for n, v in self.gib.items()})


@dataclass
class World:
    """Raw bodies by name, and what KubeVirt and the API server do with the writes."""

    vms: dict[str, dict[str, Any]] = field(default_factory=dict)
    vmis: dict[str, dict[str, Any]] = field(default_factory=dict)
    vmms: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: list[dict[str, Any]] = field(default_factory=lambda: [make_node_body("host", allocatable="8Gi")])
    migrations: list[dict[str, Any]] = field(default_factory=list)

    def add(self, name: str, gib: str = "1Gi", *, running: bool = True, **vmm: Any) -> None:
        self.vmms[name] = make_vmm_body(name, **vmm)
        self.vms[name] = make_vm_body(name, guest=gib, run_strategy="Always" if running else "Halted")
        if running:
            self.vmis[name] = make_vmi_body(name, guest=gib, current=gib)

    def observed(self) -> Observed:
        return observed(
            vmms=self.vmms.values(),
            vms=self.vms.values(),
            vmis=self.vmis.values(),
            nodes=self.nodes,
            migrations=self.migrations,
        )

    def apply(self, applies: list[Apply], *, hotplug_done: bool = True) -> None:
        """The VM's spec takes the new guest; KubeVirt copies it to the VMI and may finish the hotplug."""
        for a in applies:
            memory = self.vms[a.name]["spec"]["template"]["spec"]["domain"]["memory"]
            memory["guest"] = a.guest
            if a.max_guest is None:  # dynamem's running-VM apply owns the placement and hold annotations
                annotations = self.vms[a.name]["metadata"].setdefault("annotations", {})
                for key, value in (("dynamem.io/placement", a.placement), ("dynamem.io/hold", a.hold)):
                    if value is None:
                        annotations.pop(key, None)
                    else:
                        annotations[key] = value
            if a.max_guest is not None:
                memory["maxGuest"] = a.max_guest
            if a.name in self.vmis:
                self.vmis[a.name]["spec"]["domain"]["memory"]["guest"] = a.guest
                if hotplug_done:
                    self.vmis[a.name]["status"]["memory"]["guestCurrent"] = a.guest

    def finish_hotplugs(self) -> None:
        for name, vmi in self.vmis.items():
            vmi["status"]["memory"]["guestCurrent"] = self.guest(name)

    def store(self, statuses: list[tuple[str, dict[str, Any]]]) -> None:
        """A JSON merge patch of each status (None deletes a field), and a new resourceVersion."""
        for name, patch in statuses:
            body = self.vmms[name]
            status = body.setdefault("status", {})
            for k, v in patch.items():
                if v is None:
                    status.pop(k, None)
                else:
                    status[k] = v
            meta = body["metadata"]
            meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)

    def guest(self, name: str) -> str:
        return str(self.vms[name]["spec"]["template"]["spec"]["domain"]["memory"]["guest"])

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.vmms[name].get("status") or {})


def workday(**gib: float) -> tuple[World, FakeDemand]:
    world = World()
    for name in WORKDAY:
        world.add(name)
    return world, FakeDemand({"finance": 0.5, "sales": 0.5, "engineering": 0.5, **gib})


def run(balancer: Balancer, world: World) -> RoundResult:
    return asyncio.run(balancer.run_round(world.observed()))


def balancer_for(demand: FakeDemand, writer: FakeWriter, options: RoundOptions = OPTIONS) -> Balancer:
    return Balancer(writer, demand, options, clock=lambda: NOW)


def applied(writer: FakeWriter) -> list[tuple[str, str, str | None]]:
    return [(a.name, a.guest, a.max_guest) for a in writer.applies]


def settle(balancer: Balancer, world: World, writer: FakeWriter, rounds: int = 5) -> list[RoundResult]:
    """Rounds until one writes nothing, feeding every write back; the results of every round run."""
    results = []
    for _ in range(rounds):
        writer.clear()
        result = run(balancer, world)
        results.append(result)
        if result.writes == 0:
            return results
        world.apply(writer.applies)
        world.store(writer.statuses)
    raise AssertionError(f"not settled after {rounds} rounds: {[r.writes for r in results]}")


def test_workday_step_1_grows_finance_and_engineering() -> None:
    # finance 2.4 / 0.8 = 3Gi; engineering 1.6 / 0.8 = 2Gi; sales 0.5 / 0.8 = 0.625 < floor 1Gi stays
    # grows, largest first: finance +2 (held 3 + 2 = 5 <= 8), engineering +1 (5 + 1 = 6 <= 8)
    world, demand = workday(finance=2.4, engineering=1.6)
    writer = FakeWriter()
    result = run(balancer_for(demand, writer), world)
    assert applied(writer) == [("finance", "3Gi", None), ("engineering", "2Gi", None)]
    assert all(a.namespace == NS and a.dry_run is False for a in writer.applies)
    assert (result.memory_writes, result.status_writes, result.deferred) == (2, 3, 0)
    assert result.plans["host"].assigned_total == 6 * GI
    changes = [(e.name, e.type_, e.reason, e.note) for e in writer.events if e.action == "Balance"]
    assert changes == [
        ("finance", "Normal", "MemoryIncreased", "memory.guest 1Gi -> 3Gi: grow to meet demand"),
        ("engineering", "Normal", "MemoryIncreased", "memory.guest 1Gi -> 2Gi: grow to meet demand"),
    ]
    statuses = dict(writer.statuses)
    assert statuses["finance"]["assigned"] == "3Gi"
    assert statuses["finance"]["lastChangeTime"] == "2026-03-02T12:00:00Z"
    assert "lastChangeTime" not in statuses["sales"]
    assert demand.reads == 1


def test_workday_step_2_shrinks_before_grows() -> None:
    # from step 1's 3/1/2: finance 1.6 / 0.8 = 2Gi (shrink 1Gi >= shrink band 512Mi), engineering
    # 2.8 / 0.8 = 3.5Gi; the shrink is requested first; held 3 + 1 + 2 = 6, + 1.5 = 7.5 <= 8: both now
    world, demand = workday(finance=1.6, engineering=2.8)
    world.add("finance", "3Gi")
    world.add("engineering", "2Gi")
    writer = FakeWriter()
    result = run(balancer_for(demand, writer), world)
    assert applied(writer) == [("finance", "2Gi", None), ("engineering", "3584Mi", None)]
    assert result.deferred == 0
    reasons = [e.reason for e in writer.events if e.action == "Balance"]
    assert reasons == ["MemoryDecreased", "MemoryIncreased"]


def test_grow_waits_until_the_shrink_has_freed_the_room() -> None:
    # a 7Gi host: targets 2 + 1 + 3.5 = 6.5 fit, but now finance holds 3: 3 + 1 + 2 = 6, + 1.5 = 7.5 > 7
    world, demand = workday(finance=1.6, engineering=2.8)
    world.nodes = [make_node_body("host", allocatable="7Gi")]
    world.add("finance", "3Gi")
    world.add("engineering", "2Gi")
    writer = FakeWriter()
    balancer = balancer_for(demand, writer)

    first = run(balancer, world)
    assert applied(writer) == [("finance", "2Gi", None)]
    assert first.deferred == 1
    waiting = dict(writer.statuses)["engineering"]
    assert waiting["assigned"] == "2Gi"  # still what it has
    assert waiting["target"] == "3584Mi"
    assert waiting["reason"].endswith("; waiting for room")
    assert "lastChangeTime" not in waiting

    # the shrink is in flight (spec 2Gi, guest still 3Gi): finance counts at 3Gi, so engineering grows
    # only into what is physically free: 7 - 3 - 1 = 3Gi (1Gi up, held 3 + 1 + 2 + 1 = 7 <= 7)
    world.apply(writer.applies, hotplug_done=False)
    world.store(writer.statuses)
    writer.clear()
    second = run(balancer, world)
    assert applied(writer) == [("engineering", "3Gi", None)]
    assert second.deferred == 0

    # both hotplugs done: 2 + 1 + 3 = 6; engineering's last 0.5Gi (>= dead band 153.6Mi) fits: 6.5 <= 7
    world.apply(writer.applies)
    world.finish_hotplugs()
    world.store(writer.statuses)
    writer.clear()
    third = run(balancer, world)
    assert applied(writer) == [("engineering", "3584Mi", None)]
    assert third.deferred == 0


def test_grows_that_fit_counts_a_shrink_in_flight_at_its_old_size() -> None:
    # finance asked 2Gi but still has 3Gi; a grow of engineering 2 -> 3.5 on a 7Gi pool:
    # held 3 (not 2) + 1 + 2 = 6, + 1.5 = 7.5 > 7: it waits (at finance's new size: 6.5 would fit)
    world, demand = workday(finance=1.6, engineering=2.8)
    world.nodes = [make_node_body("host", allocatable="7Gi")]
    world.add("finance", "3Gi")
    world.add("engineering", "2Gi")
    world.apply([Apply(NS, "finance", "2Gi", "4Gi", False)], hotplug_done=False)
    snapshot = build_snapshot(world.observed(), asyncio.run(demand.read()))
    [node] = snapshot.nodes
    assert [(vm.name, vm.assigned, vm.in_flight_to) for vm in node.vms] == [
        (f"{NS}/engineering", 2 * GI, None),
        (f"{NS}/finance", 3 * GI, 2 * GI),
        (f"{NS}/sales", GI, None),
    ]
    grow = VmDecision(
        f"{NS}/engineering", 2 * GI, 3584 * MI, GI, None, 3584 * MI, None, MemoryStatus.OK, "grow"
    )
    small = replace(grow, name=f"{NS}/sales", current=GI, assigned=GI + 512 * MI)
    plan = NodePlan("host", node.pool, (grow, small), False, "fits")
    now, wait = grows_that_fit(plan, snapshot)
    # largest grow first: engineering +1.5 does not fit (7.5 > 7); sales +0.5 does (6.5 <= 7)
    assert ([d.name for d in now], [d.name for d in wait]) == ([f"{NS}/sales"], [f"{NS}/engineering"])


def test_stopped_vm_is_reset_to_startup_with_max_guest_at_maximum() -> None:
    world, demand = workday()
    world.add("service", "3Gi", running=False, startup="1Gi", maximum="6Gi")
    del world.vms["service"]["spec"]["template"]["spec"]["domain"]["memory"]["maxGuest"]
    writer = FakeWriter()
    result = run(balancer_for(demand, writer), world)
    assert applied(writer) == [("service", "1Gi", "6Gi")]
    assert result.memory_writes == 1
    status = dict(writer.statuses)["service"]
    assert (status["memoryStatus"], status["assigned"]) == ("Stopped", "1Gi")
    assert [e.reason for e in writer.events if e.name == "service" and e.action == "Balance"] == [
        "MemoryDecreased"
    ]


def test_stopped_vm_already_at_startup_is_left_alone() -> None:
    world, demand = workday()
    world.add("service", "1Gi", running=False)  # guest 1Gi = startup, maxGuest 4Gi = maximum
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert [a for a in writer.applies if a.name == "service"] == []


def test_settled_cluster_makes_no_writes() -> None:
    world, demand = workday(finance=2.4, engineering=1.6)
    world.add("service", "2Gi", running=False)
    writer = FakeWriter()
    results = settle(balancer_for(demand, writer), world, writer)
    # round 1: 3 memory changes (finance, engineering, service reset) and 4 statuses; round 2: nothing at
    # all (the reasons' words move from "grow to meet demand" to "on target", but no decision changed and no
    # measurement moved: the status keeps the reason of the last decision)
    assert [(r.memory_writes, r.status_writes) for r in results] == [(3, 4), (0, 0)]
    assert (writer.applies, writer.statuses, writer.events) == ([], [], [])
    assert {n: world.guest(n) for n in (*WORKDAY, "service")} == {
        "finance": "3Gi",
        "sales": "1Gi",
        "engineering": "2Gi",
        "service": "1Gi",
    }
    assert world.status("finance")["reason"] == "grow to meet demand"
    assert world.status("finance")["lastChangeTime"] == "2026-03-02T12:00:00Z"  # kept from round 1


def test_settled_from_the_start_writes_statuses_once() -> None:
    world, demand = workday()
    writer = FakeWriter()
    results = settle(balancer_for(demand, writer), world, writer)
    assert [(r.memory_writes, r.status_writes) for r in results] == [(0, 3), (0, 0)]


def test_dry_run_is_passed_through() -> None:
    world, demand = workday(finance=2.4, engineering=1.6)
    writer = FakeWriter()
    balancer = balancer_for(demand, writer, replace(OPTIONS, dry_run=True))
    run(balancer, world)
    assert [(a.name, a.dry_run) for a in writer.applies] == [("finance", True), ("engineering", True)]
    planned = [(e.name, e.reason, e.note) for e in writer.events if e.action == "Balance"]
    assert planned == [
        ("finance", "MemoryChangePlanned", "dry run: memory.guest 1Gi -> 3Gi: grow to meet demand"),
        ("engineering", "MemoryChangePlanned", "dry run: memory.guest 1Gi -> 2Gi: grow to meet demand"),
    ]
    assert all("lastChangeTime" not in status for _, status in writer.statuses)
    run(balancer, world)  # nothing changed in the cluster: the same plan, not reported again
    assert len([e for e in writer.events if e.action == "Balance"]) == 2


def test_a_refused_write_does_not_stop_the_round() -> None:
    world, demand = workday(finance=2.4, engineering=1.6)
    writer = FakeWriter(fail_apply={"finance"})
    result = run(balancer_for(demand, writer), world)
    assert applied(writer) == [("engineering", "2Gi", None)]
    assert result.memory_writes == 1
    failed = [e for e in writer.events if e.reason == "MemoryChangeRefused"]
    assert [(e.name, e.type_) for e in failed] == [("finance", "Warning")]
    assert failed[0].note == "memory.guest 3Gi refused: admission webhook denied finance"
    statuses = dict(writer.statuses)
    assert "lastChangeTime" not in statuses["finance"]  # nothing changed for finance
    assert statuses["engineering"]["lastChangeTime"] == "2026-03-02T12:00:00Z"
    assert len(statuses) == 3  # every status still written


def test_unknown_demand_holds_memory() -> None:
    world, demand = workday()
    world.add("finance", "3Gi")
    demand.error = "Prometheus at http://p unreachable: ConnectError"
    writer = FakeWriter()
    clock = [NOW]
    balancer = Balancer(writer, demand, OPTIONS, clock=lambda: clock[0])
    result = run(balancer, world)
    assert writer.applies == []
    assert result.memory_writes == 0
    # statuses wait out a short outage; a minute on, they say demand is unknown
    assert writer.statuses == []
    clock[0] = NOW + OPTIONS.demand_error_grace_s
    result = run(balancer, world)
    assert writer.applies == [] and result.memory_writes == 0
    finance = dict(writer.statuses)["finance"]
    assert (finance["assigned"], finance["memoryStatus"], finance["reason"]) == (
        "3Gi",
        "Unknown",
        "held: demand unknown",
    )
    conds = {c["type"]: c["status"] for c in finance["conditions"]}
    assert conds["DemandKnown"] == "False"


def test_a_hold_made_during_a_prometheus_outage_is_written_at_once() -> None:
    """Statuses wait out a short outage, but not a hold: it must survive a restart. KubeVirt's hotplug
    failed for finance, and even the write taking its request back is refused: held, with nothing written
    to the VM, and the status says so at once."""
    world, demand = workday()
    world.add("finance", "1Gi")
    world.vms["finance"]["spec"]["template"]["spec"]["domain"]["memory"]["guest"] = "3Gi"
    world.vmis["finance"] = make_vmi_body("finance", guest="3Gi", current="1Gi", hotplug="False")
    demand.error = "Prometheus at http://p unreachable: ConnectError"
    writer = FakeWriter(fail_apply={"finance"})
    run(Balancer(writer, demand, OPTIONS, clock=lambda: NOW), world)
    assert applied(writer) == []
    statuses = dict(writer.statuses)
    assert set(statuses) == {"finance"}  # the others wait out the outage
    assert statuses["finance"]["hold"]["reason"] == "KubeVirt refused memory.guest 1Gi"


def test_a_prometheus_hiccup_rewrites_no_status() -> None:
    """One read of Prometheus that failed (a busy server timing out) changes no status: before, every VM's
    DemandKnown went to False and back, two status writes per VM (10,000 VMs: the warm-up never settled)."""
    world, demand = workday(finance=0.7)
    world.add("finance", "1Gi")
    writer = FakeWriter()
    clock = [NOW]
    balancer = Balancer(writer, demand, OPTIONS, clock=lambda: clock[0])
    settle(balancer, world, writer)
    demand.error = "Prometheus at http://p unreachable: ReadTimeout('')"
    for step in range(1, 4):  # rounds over most of a minute
        clock[0] = NOW + 15 * step
        writer.clear()
        result = run(balancer, world)
        assert result.status_writes == 0 and writer.statuses == []
    demand.error = None
    clock[0] = NOW + 60
    writer.clear()
    assert run(balancer, world).writes == 0


def test_one_vm_without_metrics_is_held_while_others_move() -> None:
    # finance at 3Gi, above its startup: a missing demand read as none would shrink it
    world, demand = workday(finance=2.4, engineering=1.6)
    world.add("finance", "3Gi")
    del demand.gib["finance"]
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert applied(writer) == [("engineering", "2Gi", None)]


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown policy 'magic'"):
        Balancer(FakeWriter(), FakeDemand(), RoundOptions(policy="magic"))


def test_every_applied_size_is_an_exact_quantity() -> None:
    # 1.7 / 0.8 = 2.125Gi = 2176Mi: aligned to 2Mi, written as an exact quantity
    world, demand = workday(finance=1.7)
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert applied(writer) == [("finance", "2176Mi", None)]
    assert quantity_bytes("2176Mi") == 2176 * 2**20


# --- what KubeVirt does not carry out, and its hotplug ceiling ------------------------------------------


def test_a_failed_hotplug_is_taken_back_and_the_vm_held() -> None:
    # KubeVirt copied 3Gi into the VMI, then HotMemoryChange=False: the guest stays at 2Gi for good.
    world, demand = workday(finance=2.4)
    world.vms["finance"]["spec"]["template"]["spec"]["domain"]["memory"]["guest"] = "3Gi"
    world.vmis["finance"] = make_vmi_body("finance", guest="3Gi", current="2Gi", hotplug="False")
    writer = FakeWriter()
    balancer = balancer_for(demand, writer)
    run(balancer, world)
    assert ("finance", "2Gi", None) in applied(writer)  # back to what the guest has
    reverted = [e for e in writer.events if e.reason == "MemoryChangeReverted"]
    assert [(e.name, e.type_) for e in reverted] == [("finance", "Warning")]
    statuses = dict(writer.statuses)
    assert statuses["finance"]["reason"].startswith("held: KubeVirt did not apply memory.guest")
    assert statuses["finance"]["hold"]["vmiUID"] == "uid-finance"  # persisted: held until the VMI restarts
    # next rounds, even by a new operator (nothing in memory): memory.guest is 2Gi again, finance stays held
    world.apply([a for a in writer.applies if a.name == "finance"])
    world.store(writer.statuses)
    for fresh in (balancer, balancer_for(demand, writer)):
        writer.clear()
        run(fresh, world)
        assert "finance" not in [a.name for a in writer.applies]
    assert world.status("finance")["hold"]["reason"].startswith("KubeVirt did not apply 3Gi")
    # the VMI restarts (a new uid): the hold is over and finance grows
    world.vmis["finance"] = make_vmi_body("finance", guest="2Gi", current="2Gi", at_boot="2Gi")
    world.vmis["finance"]["metadata"]["uid"] = "uid-finance-2"
    writer.clear()
    run(balancer_for(demand, writer), world)
    assert ("finance", "3Gi", None) in applied(writer)
    assert dict(writer.statuses)["finance"]["hold"] is None  # cleared (a merge patch deletes it)


def test_a_refused_value_is_backed_off_with_one_event() -> None:
    world, demand = workday(finance=2.4)
    writer = FakeWriter(fail_apply={"finance"})
    balancer = balancer_for(demand, writer)
    run(balancer, world)
    world.store(writer.statuses)
    writer.clear()
    assert world.status("finance")["hold"]["reason"] == "KubeVirt refused memory.guest 3Gi"
    for _ in range(3):  # the refused VM is held, not retried every round, and not announced again
        run(balancer_for(demand, writer), world)
        world.store(writer.statuses)
    assert writer.events == [] and writer.applies == []
    assert [name for name, _ in writer.statuses] == ["finance"]  # once: the hold's reason, then nothing
    assert (
        world.status("finance")["reason"] == "held until its VMI restarts: KubeVirt refused memory.guest 3Gi"
    )


def test_growth_stops_at_the_vmis_hotplug_ceiling() -> None:
    # The VMI booted with maxGuest 2Gi (fixed at boot); the VMM's maximum (4Gi) was raised later.
    world, demand = workday(finance=2.4)
    world.vmis["finance"]["spec"]["domain"]["memory"]["maxGuest"] = "2Gi"
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert ("finance", "2Gi", None) in applied(writer)  # not 3Gi: KubeVirt would refuse it


def test_a_migrating_vm_is_held() -> None:
    world, demand = workday(finance=2.4)
    world.vmis["finance"]["status"]["migrationState"] = {"startTimestamp": "2026-03-02T11:59:00Z"}
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert "finance" not in [a.name for a in writer.applies]
    assert dict(writer.statuses)["finance"]["reason"].startswith("held: live migration in progress")


def test_stopped_reset_is_aligned_for_kubevirt() -> None:
    # 1.5G = 1500000000 bytes = 715.3 x 2Mi: up to 716 x 2Mi = 1432Mi; 3.5G = 1668.9 x 2Mi: down to 3336Mi.
    world, demand = workday()
    world.add("service", running=False, startup="1.5G", maximum="3.5G")
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert ("service", "1432Mi", "3336Mi") in applied(writer)


def test_stopped_reset_with_1gi_pages_never_puts_max_guest_below_the_guest() -> None:
    # startup = maximum = 1.5Gi on 1Gi pages: the guest rounds up to 2Gi, the maximum down to 1Gi; KubeVirt
    # refuses a maxGuest below the guest, so the ceiling is the guest's 2Gi.
    world, demand = workday()
    world.add("service", running=False, startup="1.5Gi", maximum="1.5Gi")
    world.vms["service"] = make_vm_body("service", guest="1Gi", run_strategy="Halted", page_size="1Gi")
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert ("service", "2Gi", "2Gi") in applied(writer)


def test_measurements_alone_refresh_the_status_at_most_once_a_minute() -> None:
    world, demand = workday()
    writer = FakeWriter()
    clock = [NOW]
    balancer = Balancer(writer, demand, OPTIONS, clock=lambda: clock[0])
    run(balancer, world)
    world.store(writer.statuses)
    demand.gib["sales"] = 0.55  # the guest's use moves a little: no decision changes
    writer.clear()
    clock[0] += 10
    assert run(balancer, world).status_writes == 0
    clock[0] += 60
    assert run(balancer, world).status_writes == 1
