"""The KubeVirt CR's settings followed while the operator runs (:mod:`dynamem.controller.kubevirt_follower`,
:mod:`dynamem.kube.kubevirt_config`): read at start and with every periodic LIST, applied from the next
round, kept through a read that fails, KubeVirt's defaults back when the CR sets nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from dynamem.controller.balancer import Balancer, RoundResult, update_hold
from dynamem.controller.kubevirt_follower import KubeVirtFollower
from dynamem.controller.loop import OperatorState, balancing_loop
from dynamem.controller.options import OperatorOptions
from dynamem.controller.snapshot import Observed
from dynamem.controller.view import Kind
from dynamem.kube.kubevirt_config import KubeVirtSettings, configuration_of, kubevirt_settings
from dynamem.kube.objects import vmi_view

from .builders_k8s import FakeWriter, make_vmi_body
from .test_balancer import NOW, OPTIONS, World, applied, run, workday
from .test_demand_ahead import EmptyCluster

LIMITS = {"migrations": {"parallelMigrationsPerCluster": 1, "parallelOutboundMigrationsPerNode": 1}}
POOL = {"developerConfiguration": {"nodeSelectors": {"pool": "vms"}}}


def test_the_settings_of_a_kubevirt_cr() -> None:
    assert kubevirt_settings({**LIMITS, **POOL}) == KubeVirtSettings(1, 1, (("pool", "vms"),))
    assert kubevirt_settings({}) == KubeVirtSettings()
    odd = {"migrations": {"parallelMigrationsPerCluster": 0, "parallelOutboundMigrationsPerNode": True}}
    assert kubevirt_settings({**odd, "developerConfiguration": None}) == KubeVirtSettings()
    over = {"developerConfiguration": {"memoryOvercommit": 150, "cpuAllocationRatio": 5}}
    assert kubevirt_settings(over) == KubeVirtSettings(memory_overcommit=150, cpu_allocation_ratio=5)
    for bad in (0, -10, "150", True, None):  # KubeVirt refuses 0 and below (validateConfig)
        for key in ("memoryOvercommit", "cpuAllocationRatio"):
            assert kubevirt_settings({"developerConfiguration": {key: bad}}) == KubeVirtSettings()


def test_the_crs_memory_overcommit_and_cpu_ratio_reach_the_round_and_go_back_to_defaults_when_unset() -> None:
    halved = {"developerConfiguration": {"memoryOvercommit": 200, "cpuAllocationRatio": 4}}
    answers: list[Mapping[str, Any] | None] = [halved, None, {}]

    async def read() -> Mapping[str, Any] | None:
        return answers.pop(0)

    follower = KubeVirtFollower(read, OPTIONS)

    def ratios() -> tuple[int, int]:
        return follower.options.memory_overcommit, follower.options.cpu_allocation_ratio

    assert (OPTIONS.memory_overcommit, OPTIONS.cpu_allocation_ratio) == (100, 10)
    assert asyncio.run(follower.refresh()) and ratios() == (200, 4)
    assert not asyncio.run(follower.refresh()) and ratios() == (200, 4)  # unreadable now: kept
    assert asyncio.run(follower.refresh()) and ratios() == (100, 10)


def test_a_change_of_the_cr_changes_the_options_a_failed_read_keeps_them() -> None:
    answers: list[Mapping[str, Any] | None] = [{}, {**LIMITS, **POOL}, None, {}]

    async def read() -> Mapping[str, Any] | None:
        return answers.pop(0)

    follower = KubeVirtFollower(read, OPTIONS)
    defaults = OPTIONS.balance.max_parallel_migrations, OPTIONS.balance.max_outbound_migrations

    def limits() -> tuple[int, int]:
        return (
            follower.options.balance.max_parallel_migrations,
            follower.options.balance.max_outbound_migrations,
        )

    assert follower.options.kubevirt_unread  # not read yet: no running VM changed (update_hold)
    assert asyncio.run(follower.refresh()) and follower.options == OPTIONS  # read: KubeVirt's defaults
    assert asyncio.run(follower.refresh())
    assert limits() == (1, 1) and follower.options.launcher_node_selectors == (("pool", "vms"),)
    assert not asyncio.run(follower.refresh()) and limits() == (1, 1)  # unreadable now: kept
    assert asyncio.run(follower.refresh()) and limits() == defaults  # set no more: KubeVirt's defaults
    assert follower.options.launcher_node_selectors == ()


def test_the_flag_wins_over_the_crs_parallel_migrations_per_cluster() -> None:
    async def read() -> Mapping[str, Any] | None:
        return LIMITS

    flagged = replace(OPTIONS, balance=replace(OPTIONS.balance, max_parallel_migrations=7))
    follower = KubeVirtFollower(read, flagged, migrations_given=True)
    assert asyncio.run(follower.refresh())
    assert follower.options.balance.max_parallel_migrations == 7
    assert follower.options.balance.max_outbound_migrations == 1


def test_the_loop_reads_the_cr_again_with_the_periodic_list_and_the_next_round_follows_it() -> None:
    """The running balancer's options change between rounds, after the LIST of everything; a round never
    sees them change under it."""
    answers: list[Mapping[str, Any]] = [{}, {}, LIMITS]  # at start, before the first round, after it
    seen: list[int] = []

    async def read() -> Mapping[str, Any] | None:
        return answers.pop(0) if len(answers) > 1 else answers[0]

    class Watched(Balancer):
        async def run_round(self, observed: Observed, *, started: float | None = None) -> RoundResult:
            seen.append(self.options.balance.max_parallel_migrations)
            return await super().run_round(observed, started=started)

    async def scenario() -> None:
        options = OperatorOptions(interval_s=0.02, min_gap_s=0.0, resync_period_s=0.01, standalone=True)
        state = OperatorState(options=options, identity="test")
        follower = KubeVirtFollower(read, OPTIONS)
        await follower.refresh()
        _, demand = workday()
        balancer = Watched(FakeWriter(), demand, follower.options, clock=lambda: NOW)
        loop = asyncio.create_task(balancing_loop(state, lambda: balancer, EmptyCluster(), None, follower))
        for _ in range(500):
            await asyncio.sleep(0.01)
            if state.rounds >= 3:
                break
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)

    asyncio.run(scenario())
    # the first round with KubeVirt's default; the LIST after it read the CR's 1, which every later round has
    assert seen[0] == OPTIONS.balance.max_parallel_migrations != 1 and set(seen[1:]) == {1}, seen


def listed(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"items": [{"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "spec": spec}]}


def test_workload_update_methods_come_from_the_crs_spec_beside_its_configuration() -> None:
    evict = {"workloadUpdateStrategy": {"workloadUpdateMethods": ["Evict"]}}
    assert kubevirt_settings(
        configuration_of(listed({**evict, "configuration": LIMITS}))
    ) == KubeVirtSettings(1, 1, update_methods=("Evict",))
    assert kubevirt_settings(configuration_of(listed(evict))).evicts
    both = {"workloadUpdateStrategy": {"workloadUpdateMethods": ["Evict", "LiveMigrate"]}}
    assert not kubevirt_settings(configuration_of(listed(both))).evicts  # migratable VMIs are migrated
    for unset in (
        {},
        {"workloadUpdateStrategy": {}},
        {"workloadUpdateStrategy": {"workloadUpdateMethods": None}},
    ):
        assert kubevirt_settings(configuration_of(listed(unset))) == KubeVirtSettings()  # KubeVirt's own CR


def test_a_cr_that_would_evict_for_a_memory_change_holds_every_running_vm_until_it_lists_live_migrate() -> (
    None
):
    """KubeVirt's workload-updater evicts (restarts) a VMI whose hotplug has no migration when its CR lists
    Evict without LiveMigrate (workload-updater.go, getUpdateData): no running VM is changed then, and its
    status says why; once the CR lists LiveMigrate the paging VM is grown."""
    evict = configuration_of(listed({"workloadUpdateStrategy": {"workloadUpdateMethods": ["Evict"]}}))
    live = configuration_of(listed({"workloadUpdateStrategy": {"workloadUpdateMethods": ["LiveMigrate"]}}))
    answers: list[Mapping[str, Any] | None] = [evict, live]

    async def read() -> Mapping[str, Any] | None:
        return answers.pop(0)

    follower = KubeVirtFollower(read, OPTIONS)
    assert asyncio.run(follower.refresh()) and follower.options.evict_updates
    world, demand = workday(finance=2.4)
    writer = FakeWriter()
    run(Balancer(writer, demand, follower.options, clock=lambda: NOW), world)
    assert applied(writer) == []
    assert "Evict without LiveMigrate" in str(dict(writer.statuses)["finance"])
    assert asyncio.run(follower.refresh()) and not follower.options.evict_updates
    writer = FakeWriter()
    run(Balancer(writer, demand, follower.options, clock=lambda: NOW), world)
    assert [name for name, _, _ in applied(writer)] == ["finance"]


def test_under_evict_a_vm_whose_eviction_strategy_migrates_is_changed_others_are_held() -> None:
    """KubeVirt's eviction webhook migrates a VMI whose strategy is LiveMigrate or LiveMigrateIfPossible
    instead of evicting it (pod-eviction-admitter.go, admitLauncherPod); None lets the eviction stop it,
    External leaves it to another controller. The VMI's own strategy wins over the CR's."""
    evicting = replace(OPTIONS, evict_updates=True)
    vmi = make_vmi_body("finance")
    assert "eviction strategy None lets that stop it" in str(update_hold(evicting, vmi_view(vmi)))
    for strategy in ("LiveMigrate", "LiveMigrateIfPossible"):
        assert update_hold(replace(evicting, eviction_strategy=strategy), vmi_view(vmi)) is None
        assert (
            update_hold(evicting, vmi_view({**vmi, "spec": {**vmi["spec"], "evictionStrategy": strategy}}))
            is None
        )
    own_none = vmi_view({**vmi, "spec": {**vmi["spec"], "evictionStrategy": "None"}})
    assert update_hold(replace(evicting, eviction_strategy="LiveMigrate"), own_none) is not None
    external = update_hold(replace(evicting, eviction_strategy="External"), vmi_view(vmi))
    assert external is not None and "leaves it to another controller" in external
    assert update_hold(OPTIONS, vmi_view(vmi)) is None  # LiveMigrate listed, or no automated updates


@dataclass
class Listed:
    """The unit tests' World as the loop's LISTs see it."""

    world: World

    async def list_objects(
        self, kind: str, namespaces: Sequence[str] = ()
    ) -> tuple[int, list[Mapping[str, Any]]]:
        by_kind = {
            Kind.VMM: self.world.vmms.values(),
            Kind.VM: self.world.vms.values(),
            Kind.VMI: self.world.vmis.values(),
            Kind.NODE: self.world.nodes,
            Kind.MIGRATION: self.world.migrations,
        }
        return 1, list(by_kind.get(Kind(kind), []))


def test_until_the_cr_is_read_no_running_vm_is_changed_and_each_round_reads_it_again() -> None:
    """An unreadable CR at start (not allowed, the API server down past the retries) leaves it unknown
    whether KubeVirt would evict a VM to change it: running VMs are held, and the loop reads the CR before
    each round (not only with the periodic LIST) until it answers."""
    answers: list[Mapping[str, Any] | None] = [None, None, None, {}]  # at start, with the LIST, before rounds
    applied_per_round: list[int] = []

    async def read() -> Mapping[str, Any] | None:
        return answers.pop(0) if len(answers) > 1 else answers[0]

    class Watched(Balancer):
        async def run_round(self, observed: Observed, *, started: float | None = None) -> RoundResult:
            result = await super().run_round(observed, started=started)
            applied_per_round.append(result.memory_writes)
            return result

    async def scenario() -> None:
        options = OperatorOptions(interval_s=0.02, min_gap_s=0.0, resync_period_s=3600, standalone=True)
        state = OperatorState(options=options, identity="test")
        follower = KubeVirtFollower(read, OPTIONS, retry_base_s=0.001)
        assert not await follower.refresh() and follower.options.kubevirt_unread
        world, demand = workday(finance=2.4)
        writer = FakeWriter()
        balancer = Watched(writer, demand, follower.options, clock=lambda: NOW)
        # the round held finance while unread; once read, the next round grows it
        loop = asyncio.create_task(balancing_loop(state, lambda: balancer, Listed(world), None, follower))
        for _ in range(500):
            await asyncio.sleep(0.01)
            if any(applied_per_round):  # the round that applied has ended (not cancelled midway)
                break
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        assert [a.name for a in writer.applies] == ["finance"]
        assert not follower.options.kubevirt_unread and not answers[1:]

    asyncio.run(scenario())
    assert applied_per_round[0] == 0 and applied_per_round[-1] == 1, applied_per_round


def test_an_unreadable_cr_is_asked_again_less_and_less_often() -> None:
    """A CR that stays unreadable (403) is not read, and warned of, every round: each failed read waits twice
    as long as the one before, up to the periodic LIST's default."""
    now = [0.0]

    async def read() -> Mapping[str, Any] | None:
        return None

    follower = KubeVirtFollower(read, OPTIONS, clock=lambda: now[0])
    waits = []
    for _ in range(12):
        assert follower.due()
        asyncio.run(follower.refresh())
        start = now[0]
        while not follower.due():
            now[0] += 0.5
        waits.append(now[0] - start)
    assert waits[:4] == [1.0, 2.0, 4.0, 8.0] and waits[-1] == 300.0
