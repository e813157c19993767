"""A settled VM's status is not made again (:meth:`StatusBook.quiet`): it says what a triage of the full
status would say, and a round at rest makes no status for a VM whose decision stands."""

from __future__ import annotations

import copy
import random
from dataclasses import replace
from typing import Any

import pytest

from dynamem.controller import balancer as balancer_module
from dynamem.controller.snapshot import Hold, Managed
from dynamem.controller.status import (
    StatusBook,
    _measures,
    _measures_moved,
    _measures_of,
    decided,
    desired_status,
    measured,
    measurements_moved,
)
from dynamem.kube.objects import GI, MI
from dynamem.policy.model import NodePlan, VmDecision

from .builders_k8s import FakeWriter
from .test_balancer import balancer_for, run, workday
from .test_status import NOW, decision, fed_back, plan_of, running, write


def settled_item() -> tuple[Managed, StatusBook]:
    """A running VM whose written status came back through the watch, and the book that wrote it."""
    item = running(demand=GI)
    d = decision(current=GI, assigned=GI, demand=GI)
    status = desired_status(item, d, plan_of(d), now=NOW, changed_at=None)
    book, writer = StatusBook(), FakeWriter()
    assert write(book, writer, item, status) is True
    [(_, written)] = writer.statuses
    return fed_back(item, copy.deepcopy(written), "7"), book


def both(
    book: StatusBook, item: Managed, d: VmDecision, plan: NodePlan, now: float, **kw: Any
) -> tuple[bool, tuple[bool, bool]]:
    """(quiet, triage) of the same status, ``quiet`` asked first as the round asks it."""
    part = decided(item, d, plan, **kw)
    quiet = book.quiet(item, part, d, now)
    status = desired_status(item, d, plan, now=now, changed_at=None, part=part)
    return quiet, book.triage(item, status, now, part)


@pytest.mark.parametrize(
    ("change", "quiet"),
    [
        pytest.param({}, True, id="nothing-moved"),
        pytest.param({"demand": GI + 10 * MI}, True, id="demand-wobbles"),
        pytest.param({"demand": 2 * GI}, False, id="demand-moved-a-lot"),
        pytest.param({"assigned": 2 * GI}, False, id="assignment-changed"),
        pytest.param({"over": True}, False, id="node-over-subscribed"),
        pytest.param({"hold": Hold(reason="refused", vmi_uid="u")}, False, id="held"),
        pytest.param({"owners": ("argocd",)}, False, id="another-owner"),
    ],
)
def test_quiet_says_what_the_full_triage_says(change: dict[str, Any], quiet: bool) -> None:
    item, book = settled_item()
    d = decision(current=GI, assigned=GI, demand=GI)
    plan = plan_of(d)
    assert both(book, item, d, plan, NOW)[1] == (False, False)  # the triage that settles it
    later = NOW + 3600  # long past the refresh period: a measurement that moved enough is written
    demand = change.get("demand", GI)
    d = decision(current=GI, assigned=change.get("assigned", GI), demand=demand)
    moved = running(demand=demand)
    item = fed_back(moved, dict(item.vmm.status), "7")
    kw = {k: change[k] for k in ("hold", "owners") if k in change}
    got_quiet, triage = both(book, item, d, plan_of(d, over=change.get("over", False)), later, **kw)
    assert got_quiet is quiet
    if got_quiet:
        assert triage == (False, False)
    else:
        assert triage != (False, False)


def test_quiet_needs_the_version_it_settled() -> None:
    item, book = settled_item()
    d = decision(current=GI, assigned=GI, demand=GI)
    part = decided(item, d, plan_of(d))
    assert book.quiet(item, part, d, NOW) is False  # no triage settled it yet
    both(book, item, d, plan_of(d), NOW)
    assert book.quiet(item, part, d, NOW) is True
    newer = fed_back(item, dict(item.vmm.status), "8")  # the status changed since: its version too
    assert book.quiet(newer, part, d, NOW) is False


def test_a_round_at_rest_makes_no_status_for_settled_vms(monkeypatch: pytest.MonkeyPatch) -> None:
    world, demand = workday()
    writer = FakeWriter()
    balancer = balancer_for(demand, writer)
    for _ in range(3):  # settle: the first statuses written, fed back, and found the same
        run(balancer, world)
        world.apply(writer.applies)
        world.store(writer.statuses)
        writer.applies.clear()
        writer.statuses.clear()
    made: list[str] = []
    real = balancer_module.desired_status

    def counting(item: Managed, *args: Any, **kwargs: Any) -> dict[str, Any]:
        made.append(item.key.name)
        return real(item, *args, **kwargs)

    monkeypatch.setattr(balancer_module, "desired_status", counting)
    result = run(balancer, world)
    assert result.writes == 0
    assert made == []
    demand.gib["sales"] = 0.9  # its decision moves: its status is made (and written)
    result = run(balancer, world)
    assert "sales" in made
    assert result.status_writes >= 1


def test_measures_in_numbers_move_as_the_written_strings_do() -> None:
    """The quiet path compares numbers; the full triage compares the status' strings: the same verdicts."""
    rng = random.Random(12)
    for _ in range(3000):
        old_demand = rng.choice([None, rng.randrange(0, 8 * GI)])
        item = running(demand=rng.choice([None, rng.randrange(0, 8 * GI), old_demand]))
        d: VmDecision | None = None
        if rng.random() < 0.8:
            target = rng.choice([3 * GI, rng.randrange(1, 8000) * MI])
            pressure = rng.choice([None, rng.randrange(0, 200)])
            d = replace(decision(current=GI, assigned=GI, demand=GI), target=target, pressure=pressure)
        old = measured(running(demand=old_demand), decision(current=GI, assigned=GI, demand=GI))
        old["pressure"] = rng.choice([None, rng.randrange(0, 200), str(rng.randrange(0, 200))])
        if rng.random() < 0.3:
            old["target"] = rng.choice([None, f"{rng.randrange(1, 8000)}Mi"])
        numbers = _measures(old)
        assert numbers is not None
        assert _measures_moved(_measures_of(item, d), numbers) == measurements_moved(measured(item, d), old)


def test_what_is_remembered_of_a_vm_goes_with_its_virtualmachinememory() -> None:
    """Memories are swept only after a VirtualMachineMemory went (the join cache counts them), and then
    every one of them forgets it."""
    world, demand = workday()
    writer = FakeWriter()
    balancer = balancer_for(demand, writer)
    for _ in range(2):
        run(balancer, world)
        world.store(writer.statuses)
        writer.statuses.clear()
    sales = next(k for k in balancer.book.written if k.name == "sales")
    balancer.backoff[sales] = (NOW + 3600, "held")

    def memories() -> dict[str, Any]:
        return {
            "written": balancer.book.written,
            "written_at": balancer.book.written_at,
            "observed_cache": balancer.book.observed_cache,
            "settled_as": balancer.book.settled_as,
            "backoff": balancer.backoff,
            "joins": balancer.joins.joins,
        }

    assert {name for name, memory in memories().items() if sales not in memory} == set()  # each knew it
    del world.vmms["sales"]
    run(balancer, world)
    assert balancer.joins.dropped == 1
    assert {name for name, memory in memories().items() if sales in memory} == set()


@pytest.mark.parametrize("known_first", [False, True], ids=["unknown-then-known", "known-then-unknown"])
def test_the_status_word_coming_or_going_is_written_at_once(known_first: bool) -> None:
    """Right after a move the plan holds the VM for a round with its demand unknown (the last sample is of the
    guest before the change): the ``Unknown`` written then is replaced at the next round, not a refresh
    period later (``make demo`` showed it for a minute on VMs long at their demand)."""
    item = running(demand=GI)
    first = decision(current=GI, assigned=GI, demand=GI if known_first else None)
    status = desired_status(item, first, plan_of(first), now=NOW, changed_at=None)
    book, writer = StatusBook(), FakeWriter()
    assert write(book, writer, item, status) is True
    [(_, written)] = writer.statuses
    assert written["memoryStatus"] == ("OK" if known_first else "Unknown")
    item = fed_back(item, copy.deepcopy(written), "7")
    assert both(book, item, first, plan_of(first), NOW + 1)[1] == (False, False)  # settled
    then = decision(current=GI, assigned=GI, demand=None if known_first else GI)
    quiet, (needed, changed) = both(book, item, then, plan_of(then), NOW + 2)  # well within the period
    assert (quiet, needed, changed) == (False, True, True)
    assert desired_status(item, then, plan_of(then), now=NOW + 2, changed_at=None)["memoryStatus"] == (
        "Unknown" if known_first else "OK"
    )


def test_a_hold_that_ended_takes_its_held_reason_away_at_once() -> None:
    """A status written while the VM was held beyond the policy's reasons (the KubeVirt CR not read yet, a
    backoff, a migration starting) says so in its reason. The reason is otherwise a measurement, rewritten
    only when demand, target or pressure move: once the hold ended, "held: ..." stood for a day on a VM at
    rest, its Ready True. Its going is written at the next round."""
    item = running(demand=GI)
    d = decision(current=GI, assigned=GI, demand=GI)
    plan = plan_of(d)
    note = "held: the KubeVirt CR could not be read yet"
    part = decided(item, d, plan, note=note)
    status = desired_status(item, d, plan, now=NOW, changed_at=None, note=note, part=part)
    book, writer = StatusBook(), FakeWriter()
    assert write(book, writer, item, status) is True
    [(_, written)] = writer.statuses
    assert written["reason"] == note
    item = fed_back(item, copy.deepcopy(written), "7")
    held_again = decided(item, d, plan, note=note)
    again = desired_status(item, d, plan, now=NOW + 1, changed_at=None, note=note, part=held_again)
    assert book.triage(item, again, NOW + 1, held_again) == (False, False)  # still held: settled
    assert book.quiet(item, held_again, d, NOW + 2)
    quiet, (needed, changed) = both(book, item, d, plan, NOW + 3)  # the hold ended, nothing measured moved
    assert (quiet, needed, changed) == (False, True, True)
    assert not desired_status(item, d, plan, now=NOW + 3, changed_at=None)["reason"].startswith("held")


def test_measurement_refreshes_the_rate_holds_back_go_to_the_statuses_written_longest_ago() -> None:
    """Twelve VMs whose use swings every round, three status writes a minute (``--status-writes-per-second``
    0.1, rounds a minute apart): each round refreshes the statuses written longest ago. By name, as before,
    the first six were refreshed every round and the last six never after their first status."""
    from dynamem.controller.balancer import Balancer

    from .builders_k8s import make_node_body
    from .test_balancer import OPTIONS, FakeDemand, World

    world = World(nodes=[make_node_body("host", allocatable="64Gi")])
    names = [f"vm{i:02d}" for i in range(12)]
    for name in names:
        world.add(name)
    demand, writer, clock = FakeDemand(dict.fromkeys(names, 0.5)), FakeWriter(), [NOW]
    balancer = Balancer(writer, demand, replace(OPTIONS, status_writes_per_s=0.1), clock=lambda: clock[0])
    counts: dict[str, int] = dict.fromkeys(names, 0)
    for round_no in range(10):
        clock[0] = NOW + 61 * round_no
        demand.gib = dict.fromkeys(names, 0.5 if round_no % 2 else 0.7)
        writer.clear()
        run(balancer, world)
        world.store(writer.statuses)
        for name, _ in writer.statuses:
            counts[name] += 1
    assert sum(counts.values()) >= 50  # about six a round once the first statuses are out
    assert min(counts.values()) >= 3, counts
