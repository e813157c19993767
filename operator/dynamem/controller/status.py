"""What a VirtualMachineMemory's status should say, and writing it only when that changes.

The status is the user's window on a decision: where the VM runs, what it has, what it uses, the pressure,
Hyper-V's status word (OK / Low / Warning), the decision's reason in words, and conditions: ``Ready``,
``DemandKnown``, ``RestartRequired`` (mirrored from KubeVirt) and ``NodeOverSubscribed``. A condition keeps
its ``lastTransitionTime`` until its status really changes, and a status equal to the one observed is not
written, so a settled cluster sees no writes. Every transition of ``Ready`` or ``NodeOverSubscribed`` is also
posted as an Event (each memory change gets its own, from the balancer).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from dynamem.controller.contests import Contest
from dynamem.controller.leadership import NotLeading
from dynamem.controller.ports import ClusterWriter
from dynamem.controller.snapshot import Hold, Managed, Phase
from dynamem.kube.api import now_rfc3339
from dynamem.kube.objects import MI, ObjectKey, quantity_bytes, to_quantity
from dynamem.policy.model import NodePlan, VmDecision

logger = logging.getLogger("dynamem.status")

Status = dict[str, Any]

READY_REASONS: Mapping[Phase, tuple[str, str, str]] = {
    Phase.RUNNING: ("True", "Balanced", "memory is balanced on its node"),
    Phase.STOPPED: (
        "True",
        "Stopped",
        "the VM is stopped; its memory.guest is its startup memory for the next boot",
    ),
    Phase.STARTING: ("False", "Starting", "the VM is starting; it is balanced once its VMI runs on a node"),
    Phase.NOT_RUNNING: (
        "False",
        "NotRunning",
        "no VMI, and the runStrategy may start one at any time: memory.guest is left as it is",
    ),
    Phase.MISSING: (
        "False",
        "VirtualMachineMissing",
        "no KubeVirt VirtualMachine of this name in this namespace",
    ),
    Phase.UNPLACED: ("False", "NodeUnknown", "the VMI runs on a node dynamem does not see"),
}


def human_bytes(value: int) -> str:
    """Demand is not aligned: show it to the MiB."""
    return to_quantity(value) if value % MI == 0 else f"{round(value / MI)}Mi"


def _condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


_UNKNOWN = "Unknown"  # the status word while the VM's demand is not known


class Decided(NamedTuple):
    """What a status says beyond its measurements and timestamps: all that tells whether a decision changed.

    :func:`desired_status` is made from it, so two equal ``Decided`` make statuses of equal comparable form,
    which lets the book tell a settled VM from its ``Decided`` alone (:meth:`StatusBook.settled`).
    ``assigned``: bytes; ``over``: why the node is over-subscribed, or None; ``judged``: the status word says
    something of the VM's memory (not ``Unknown``). The word is otherwise a measurement, written at most once
    a refresh period (OK and Low flip with every scrape), but its coming and going is news: right after a
    move the VM's demand is unknown for a round (its last sample is of the guest before the change), and an
    ``Unknown`` written then would stand for a whole refresh period. A named tuple: made and compared for
    every VM every round.
    """

    node: str | None
    assigned: int | None
    generation: int
    hold: Hold | None
    blocked: str | None
    ready: tuple[str, str, str]
    demand_known: tuple[str, str, str]
    restart: bool
    over: str | None
    owners: tuple[str, ...]
    judged: bool
    contest: Contest | None  # a fight over memory.guest, left to the other side for now
    held: bool = False  # the reason says the VM is held ("held..."): its coming and going is news too


def decided(
    item: Managed,
    decision: VmDecision | None,
    plan: NodePlan | None,
    *,
    hold: Hold | None = None,
    owners: tuple[str, ...] = (),
    contest: Contest | None = None,
    note: str | None = None,
) -> Decided:
    """The decided part of the status this round calls for (see :func:`desired_status`).

    ``contest``: why a tool that fought dynamem over memory.guest owns it for now
    (:mod:`dynamem.controller.contests`). ``note``: the status' reason, when the VM is held beyond the
    policy's own reasons."""
    if item.phase is Phase.INVALID:
        ready = ("False", "InvalidSettings", item.error or "invalid settings")
    elif decision is None and item.phase is Phase.RUNNING:
        ready = ("False", "NotBalanced", "the VM's memory is not known yet")
    elif owners and item.phase is Phase.RUNNING:  # not "balanced": dynamem leaves it alone (condition below)
        ready = (
            "True",
            "LeftToOtherManager",
            f"memory.guest belongs to {', '.join(owners)}: dynamem leaves this VM's memory as it is",
        )
    else:
        ready = READY_REASONS[item.phase]
    assigned = None
    if item.phase is Phase.STOPPED and item.settings is not None:
        assigned = item.settings.startup
    if decision is not None:
        requested = item.vm.guest if decision.in_flight and item.vm is not None else None
        assigned = requested or decision.assigned
    if item.phase is not Phase.RUNNING:
        demand_known = ("Unknown", "NotRunning", "demand is measured while the VM runs")
    elif item.demand is not None:
        demand_known = ("True", "Measured", "KubeVirt's guest memory metrics are in Prometheus")
    else:
        demand_known = ("False", "NoMetrics", "no fresh kubevirt_vmi_memory_* samples: memory is held")
    return Decided(
        node=item.node,
        assigned=assigned,
        generation=item.vmm.generation,
        hold=hold,
        blocked=item.blocked,
        ready=ready,
        demand_known=demand_known,
        restart=item.vm is not None and item.vm.restart_required,
        over=plan.reason if plan is not None and plan.over_subscribed else None,
        owners=owners,
        judged=decision.demand is not None
        if decision is not None
        else item.phase is Phase.STOPPED and item.settings is not None,
        contest=contest if owners else None,
        held=_held(note if note is not None else decision.reason if decision is not None else ready[2]),
    )


def _held(reason: object) -> bool:
    """Whether a status' reason says the VM is held. The reason is otherwise a measurement, rewritten only
    when demand, target or pressure move (its words move with them); a hold that ended (a backoff run out,
    the KubeVirt CR read at last, a change done) would leave "held: ..." standing for as long as they stay."""
    return isinstance(reason, str) and reason.startswith("held")


def shown_demand(item: Managed, decision: VmDecision | None) -> int | None:
    """The demand a status shows: the plan's (the window's peak use, more while the guest pages or its use
    rises), which pressure and memoryStatus are judged on; the measured use where the plan made none."""
    if decision is not None and decision.demand is not None:
        return decision.demand
    return item.demand


def measured(item: Managed, decision: VmDecision | None) -> Status:
    """The measurements of the status this round calls for: demand, target, pressure (as written)."""
    demand = shown_demand(item, decision)
    return {
        "demand": human_bytes(demand) if demand is not None else None,
        "target": to_quantity(decision.target) if decision is not None else None,
        "pressure": decision.pressure if decision is not None else None,
    }


def desired_status(
    item: Managed,
    decision: VmDecision | None,
    plan: NodePlan | None,
    *,
    now: float,
    changed_at: float | None,
    note: str | None = None,
    hold: Hold | None = None,
    owners: tuple[str, ...] = (),
    part: Decided | None = None,
) -> Status:
    """The status this round's observation and decision call for (timestamps are filled in by the book).

    ``note``: why the VM is held beyond the policy's own reasons (a failed hotplug, a migration, a backoff).
    ``part``: :func:`decided` of these, when the caller made it already.
    """
    part = part or decided(item, decision, plan, hold=hold, owners=owners, note=note)
    status: Status = {
        "node": part.node,
        "assigned": to_quantity(part.assigned) if part.assigned is not None else None,
        **measured(item, decision),
        "memoryStatus": _UNKNOWN,
        "reason": part.ready[2],
        "observedGeneration": part.generation,
        "hold": part.hold.to_status() if part.hold is not None else None,
        "contest": part.contest.to_status() if part.contest is not None else None,
        "heldBecause": part.blocked,
    }
    if item.phase is Phase.STOPPED and item.settings is not None:
        status["memoryStatus"] = "Stopped"
    if decision is not None:
        status["memoryStatus"] = decision.status.value if decision.demand is not None else _UNKNOWN
        status["reason"] = decision.reason
    if note is not None:
        status["reason"] = note
    restart, over, owners, contest = part.restart, part.over, part.owners, part.contest
    status["conditions"] = [
        _condition("Ready", *part.ready),
        _condition("DemandKnown", *part.demand_known),
        _condition(
            "RestartRequired",
            "True" if restart else "False",
            "KubeVirt" if restart else "NotRequired",
            "KubeVirt says the VM needs a restart to apply its spec" if restart else "no restart needed",
        ),
        _condition(
            "NodeOverSubscribed",
            "True" if over is not None else "False",
            "FloorsExceedPool" if over is not None else "Fits",
            over if over is not None else "the node is not over-subscribed",
        ),
        _condition(
            "FieldOwnedByOtherManager",
            "True" if owners else "False",
            ("Contested" if contest else "Conflict") if owners else "Owned",
            (contest.message() if contest is not None else None)
            or (
                f"memory.guest is owned by {', '.join(owners)}: dynamem writes nothing to this VM until that "
                "manager lets go of it, or the operator runs with --force-ownership"
                if owners
                else "dynamem may set memory.guest"
            ),
        ),
    ]
    if changed_at is not None:
        status["lastChangeTime"] = now_rfc3339(changed_at)
    return status


# Measurements move a little at every scrape (and with them the target and the reason's words). Prometheus
# keeps the fine series; the status is rewritten for them only when they move by a meaningful amount, and
# then at most this often per VM.
MEASUREMENT_REFRESH_S = 60.0
# The status word (OK / Low / Warning) is one of them: a VM right at its target flips between OK and Low with
# every scrape.
MEASUREMENTS = frozenset({"demand", "pressure", "target", "reason", "memoryStatus"})
MEANINGFUL_PERCENT = 5  # a demand or target move smaller than this percent is not news
MEANINGFUL_BYTES = 64 * MI  # ... nor one smaller than this
MEANINGFUL_PRESSURE = 5  # pressure points


@functools.lru_cache(maxsize=4096)
def _parsed(value: str) -> int | None:
    return quantity_bytes(value)


def _quantity(value: object) -> int | None:
    """A status quantity in bytes: parsed once per distinct string (demand is shown to the MiB, so a few
    hundred strings come back round after round for 10,000 VMs)."""
    return _parsed(value) if isinstance(value, str) else quantity_bytes(value)


def measurements_moved(desired: Mapping[str, Any], observed: Mapping[str, Any]) -> bool:
    """Whether a status' measurements moved meaningfully (:func:`_measures_moved`); one that does not parse
    always counts as moved."""
    new, old = _measures(desired), _measures(observed)
    return new is None or old is None or _measures_moved(new, old)


_NOT_COMPARED = frozenset({"conditions", "lastChangeTime", *MEASUREMENTS})


# A status' measurements in numbers: demand and target in bytes, pressure in points (None: not in it).
Measures = tuple[int | None, int | None, int | None]


def _measures(status: Mapping[str, Any]) -> Measures | None:
    """The measurements of an observed status in numbers, or None when one of them does not parse."""
    demand, target, pressure = status.get("demand"), status.get("target"), status.get("pressure")
    found: list[int | None] = []
    for value in (demand, target):
        number = None if value is None else _quantity(value)
        if value is not None and number is None:
            return None
        found.append(number)
    try:
        points = None if pressure is None else int(pressure)
    except (TypeError, ValueError):
        return None
    return found[0], found[1], points


def _measures_of(item: Managed, decision: VmDecision | None) -> Measures:
    """:func:`measured` in numbers: demand as written (to the MiB, :func:`human_bytes`), target, pressure."""
    demand = shown_demand(item, decision)
    if demand is not None and demand % MI:
        demand = round(demand / MI) * MI
    if decision is None:
        return demand, None, None
    return demand, decision.target, decision.pressure


def _bytes_moved(new: int | None, old: int | None) -> bool:
    """Whether a quantity moved meaningfully (appearing or vanishing always counts)."""
    if new is None or old is None:
        return (new is None) != (old is None)
    return new != old and abs(new - old) > max(MEANINGFUL_BYTES, old * MEANINGFUL_PERCENT / 100)


def _measures_moved(new: Measures, old: Measures) -> bool:
    """Whether pressure moved by :data:`MEANINGFUL_PRESSURE` points, or demand or target meaningfully."""
    new_p, old_p = new[2], old[2]
    if new_p is None or old_p is None:
        pressure = (new_p is None) != (old_p is None)
    else:
        pressure = abs(new_p - old_p) >= MEANINGFUL_PRESSURE
    return pressure or _bytes_moved(new[0], old[0]) or _bytes_moved(new[1], old[1])


def _comparable(status: Mapping[str, Any]) -> dict[str, Any]:
    """A status without timestamps, measurements and empty fields, to tell whether a decision changed."""
    plain = {k: v for k, v in status.items() if v is not None and k not in _NOT_COMPARED}
    plain["judged"] = status.get("memoryStatus", _UNKNOWN) != _UNKNOWN  # see Decided.judged
    plain["held"] = _held(status.get("reason"))  # see Decided.held
    plain["conditions"] = sorted(
        (c.get("type"), c.get("status"), c.get("reason"), c.get("message"))
        for c in status.get("conditions") or []
    )
    return plain


def _with_times(desired: Status, observed: Mapping[str, Any], now: float) -> Status:
    """Carry over lastTransitionTime of unchanged conditions, and lastChangeTime when nothing changed now."""
    before = {c.get("type"): c for c in observed.get("conditions") or []}
    stamp = now_rfc3339(now)
    for condition in desired["conditions"]:
        old = before.get(condition["type"])
        same = old is not None and old.get("status") == condition["status"]
        condition["lastTransitionTime"] = old.get("lastTransitionTime", stamp) if same and old else stamp
    if "lastChangeTime" not in desired and observed.get("lastChangeTime"):
        desired["lastChangeTime"] = observed["lastChangeTime"]
    return desired


def _version(item: Managed) -> str:
    return str(item.vmm.body["metadata"].get("resourceVersion"))


_MOST_ACCRUED_S = 60.0  # the most seconds of writes a round far from the last may make at once


@dataclass
class StatusBook:
    """Writes statuses, remembering what it wrote so a lagging watch does not cause a second write.

    At most ``per_second`` writes a second on average (a token bucket holding ``burst_s`` seconds' worth):
    what does not fit waits for a later round, decision changes before measurement refreshes.
    """

    written: dict[ObjectKey, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    written_at: dict[ObjectKey, float] = field(default_factory=dict)
    observed_cache: dict[ObjectKey, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    # per VM: the status version, the decided part that a triage found the status to say already, and the
    # status' measurements in numbers (:func:`_measures`)
    settled_as: dict[ObjectKey, tuple[str, Decided, Measures]] = field(default_factory=dict)
    per_second: float = 20.0
    burst_s: float = 5.0
    tokens: float = -1.0  # full at the first round
    refilled_at: float | None = None

    def refill(self, now: float) -> None:
        """Add what accrued since the last round. The bucket holds ``burst_s`` seconds' worth, or what accrued
        since the last round when rounds are further apart (at most a minute's): capped at 5 s while rounds
        come every 11 s (``--interval`` 10 s, ``--min-gap`` 1 s), 20 writes a second were 9."""
        if self.tokens < 0 or self.refilled_at is None:
            self.tokens = self.per_second * self.burst_s
        else:
            elapsed = max(0.0, now - self.refilled_at)
            top = self.per_second * max(self.burst_s, min(elapsed, _MOST_ACCRUED_S))
            self.tokens = min(top, self.tokens + elapsed * self.per_second)
        self.refilled_at = now

    def decision_changed(self, item: Managed, desired: Status) -> bool:
        return _comparable(desired) != self._observed(item)

    def _observed(self, item: Managed) -> dict[str, Any]:
        """The observed status' comparable form, kept per resourceVersion (most statuses do not change)."""
        version = str(item.vmm.body["metadata"].get("resourceVersion"))
        held = self.observed_cache.get(item.key)
        if held is None or held[0] != version:
            held = self.observed_cache[item.key] = (version, _comparable(item.vmm.status))
        return held[1]

    def triage(
        self, item: Managed, desired: Status, now: float, part: Decided | None = None
    ) -> tuple[bool, bool]:
        """(needs a write, a decision changed), computing each comparable form once. ``part``: the
        :func:`decided` part ``desired`` was made from, remembered for :meth:`quiet` when it is what the
        observed status says."""
        wanted = _comparable(desired)
        changed = wanted != self._observed(item)
        observed = _measures(item.vmm.status) if part is not None and not changed else None
        if part is not None and observed is not None:
            self.settled_as[item.key] = (_version(item), part, observed)
        else:
            self.settled_as.pop(item.key, None)
        return self._needs_write(item, desired, wanted, changed, now), changed

    def quiet(self, item: Managed, part: Decided, decision: VmDecision | None, now: float) -> bool:
        """Whether :meth:`triage` would say (no write, no change) of the status made of ``part`` and
        ``decision`` with no change time, told without making it: a triage found the observed status, at this
        very version, to say this ``part`` already, and the measurements (:func:`measured`) did not move
        enough, or were written within the refresh period.

        A round at rest at 10,000 VMs makes no status for a VM whose decision stands (half of the round's
        status work was making statuses only to find them the same as before).
        """
        held = self.settled_as.get(item.key)
        if held is None or held[1] != part or held[0] != _version(item):
            return False
        if not _measures_moved(_measures_of(item, decision), held[2]):
            return True
        return now - self.written_at.get(item.key, float("-inf")) < MEASUREMENT_REFRESH_S

    def forget_all_but(self, keys: Collection[ObjectKey]) -> None:
        for memory in (self.written, self.written_at, self.observed_cache, self.settled_as):
            for key in memory.keys() - keys:  # a set difference: no Python loop over every VM
                del memory[key]

    def needs_write(self, item: Managed, desired: Status, now: float | None = None) -> bool:
        """A decision changed; or only the measurements did, and they were last written a while ago."""
        wanted = _comparable(desired)
        return self._needs_write(item, desired, wanted, wanted != self._observed(item), now)

    def _needs_write(
        self, item: Managed, desired: Status, wanted: dict[str, Any], changed: bool, now: float | None
    ) -> bool:
        if "lastChangeTime" in desired and desired.get("lastChangeTime") != item.vmm.status.get(
            "lastChangeTime"
        ):
            return True
        if not changed:
            if now is None or not measurements_moved(desired, item.vmm.status):
                return False
            return now - self.written_at.get(item.key, float("-inf")) >= MEASUREMENT_REFRESH_S
        version = str(item.vmm.body["metadata"].get("resourceVersion"))
        last = self.written.get(item.key)
        return not (last is not None and last[0] == version and last[1] == wanted)

    async def write(
        self, writer: ClusterWriter, item: Managed, desired: Status, *, now: float, checked: bool = False
    ) -> bool:
        """Write ``desired`` if it needs writing (``checked``: :meth:`triage` said so already) and the rate
        allows."""
        if not checked and not self.needs_write(item, desired, now):
            return False
        if self.tokens < 1 and self.refilled_at is not None:
            return False  # over the rate: a later round writes it
        self.tokens -= 1
        status = _with_times(desired, item.vmm.status, now)
        try:
            await writer.patch_vmm_status(item.key.namespace, item.key.name, status)
        except NotLeading:
            raise
        except Exception as exc:  # a deleted VMM or a conflict: the next round tries again
            logger.warning("status of %s not written: %s", item.key, exc)
            return False
        version = str(item.vmm.body["metadata"].get("resourceVersion"))
        self.written[item.key] = (version, _comparable(desired))
        self.written_at[item.key] = now
        await self._transition_events(writer, item, desired)
        return True

    async def _transition_events(self, writer: ClusterWriter, item: Managed, desired: Status) -> None:
        before = {c.get("type"): c.get("status") for c in item.vmm.status.get("conditions") or []}
        for condition in desired["conditions"]:
            kind, state = condition["type"], condition["status"]
            if before.get(kind) == state:
                continue
            if kind not in {"Ready", "NodeOverSubscribed", "FieldOwnedByOtherManager"}:
                continue
            if kind != "Ready" and kind not in before and state == "False":
                continue  # a VM that never was over-subscribed (or in conflict) needs no "all fine" Event
            warn = (kind == "Ready" and state == "False") or (kind != "Ready" and state == "True")
            reason = None
            if kind == "FieldOwnedByOtherManager" and warn:  # "Contested": another manager fought back
                reason = "MemoryFieldContested" if condition["reason"] == "Contested" else kind
            try:
                await writer.create_event(
                    item.vmm.body,
                    type_="Warning" if warn else "Normal",
                    reason=reason or condition["reason"],
                    note=condition["message"],
                    action="Observe",
                )
            except NotLeading:
                raise
            except Exception as exc:  # events are best effort
                logger.debug("event for %s not posted: %s", item.key, exc)
