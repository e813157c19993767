"""What a VirtualMachineMemory's status should say, and writing it only when that changes.

The status is the user's window on a decision: where the VM runs, what it has, what it uses, the pressure,
Hyper-V's status word (OK / Low / Warning), the decision's reason in words, and conditions: ``Ready``,
``DemandKnown``, ``RestartRequired`` (mirrored from KubeVirt) and ``NodeOverSubscribed``. A condition keeps
its ``lastTransitionTime`` until its status really changes, and a status equal to the one observed is not
written, so a settled cluster sees no writes. Every transition of ``Ready`` or ``NodeOverSubscribed`` is also
posted as an Event (each memory change gets its own, from the balancer).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from dynamem.controller.ports import ClusterWriter
from dynamem.controller.snapshot import Managed, Phase
from dynamem.kube.api import now_rfc3339
from dynamem.kube.objects import MI, ObjectKey, to_quantity
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


def desired_status(
    item: Managed,
    decision: VmDecision | None,
    plan: NodePlan | None,
    *,
    now: float,
    changed_at: float | None,
    note: str | None = None,
) -> Status:
    """The status this round's observation and decision call for (timestamps are filled in by the book).

    ``note``: why the VM is held beyond the policy's own reasons (a failed hotplug, a migration, a backoff).
    """
    if item.phase is Phase.INVALID:
        ready = ("False", "InvalidSettings", item.error or "invalid settings")
    elif decision is None and item.phase is Phase.RUNNING:
        ready = ("False", "NotBalanced", "the VM's memory is not known yet")
    else:
        ready = READY_REASONS[item.phase]
    status: Status = {
        "node": item.node,
        "assigned": None,
        "target": None,
        "demand": human_bytes(item.demand) if item.demand is not None else None,
        "pressure": None,
        "memoryStatus": "Unknown",
        "reason": ready[2],
        "observedGeneration": item.vmm.generation,
    }
    if item.phase is Phase.STOPPED and item.settings is not None:
        status.update(memoryStatus="Stopped", assigned=to_quantity(item.settings.startup))
    if decision is not None:
        requested = item.vm.guest if decision.in_flight and item.vm is not None else None
        status.update(
            assigned=to_quantity(requested or decision.assigned),
            target=to_quantity(decision.target),
            pressure=decision.pressure,
            memoryStatus=decision.status.value if decision.demand is not None else "Unknown",
            reason=decision.reason,
        )
    if note is not None:
        status["reason"] = note
    running = item.phase is Phase.RUNNING
    if not running:
        demand_known = ("Unknown", "NotRunning", "demand is measured while the VM runs")
    elif item.demand is not None:
        demand_known = ("True", "Measured", "KubeVirt's guest memory metrics are in Prometheus")
    else:
        demand_known = ("False", "NoMetrics", "no fresh kubevirt_vmi_memory_* samples: memory is held")
    restart = item.vm is not None and item.vm.restart_required
    over = plan is not None and plan.over_subscribed
    status["conditions"] = [
        _condition("Ready", *ready),
        _condition("DemandKnown", *demand_known),
        _condition(
            "RestartRequired",
            "True" if restart else "False",
            "KubeVirt" if restart else "NotRequired",
            "KubeVirt says the VM needs a restart to apply its spec" if restart else "no restart needed",
        ),
        _condition(
            "NodeOverSubscribed",
            "True" if over else "False",
            "FloorsExceedPool" if over else "Fits",
            (plan.reason if over and plan is not None else "the floors of the node's VMs fit its pool"),
        ),
    ]
    if changed_at is not None:
        status["lastChangeTime"] = now_rfc3339(changed_at)
    return status


# Measurements move a little at every scrape; alone they refresh the status at most this often.
MEASUREMENT_REFRESH_S = 60.0
MEASUREMENTS = frozenset({"demand", "pressure"})


def _measurements(status: Mapping[str, Any]) -> dict[str, Any]:
    return {k: status.get(k) for k in MEASUREMENTS}


def _comparable(status: Mapping[str, Any]) -> dict[str, Any]:
    """A status without timestamps, measurements and empty fields, to tell whether a decision changed."""
    skip = {"conditions", "lastChangeTime", *MEASUREMENTS}
    plain = {k: v for k, v in status.items() if v is not None and k not in skip}
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


@dataclass
class StatusBook:
    """Writes statuses, remembering what it wrote so a lagging watch does not cause a second write."""

    written: dict[ObjectKey, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    written_at: dict[ObjectKey, float] = field(default_factory=dict)

    def forget_all_but(self, keys: Collection[ObjectKey]) -> None:
        for memory in (self.written, self.written_at):
            for key in [k for k in memory if k not in keys]:
                del memory[key]

    def needs_write(self, item: Managed, desired: Status, now: float | None = None) -> bool:
        """A decision changed; or only the measurements did, and they were last written a while ago."""
        wanted = _comparable(desired)
        if "lastChangeTime" in desired and desired.get("lastChangeTime") != item.vmm.status.get(
            "lastChangeTime"
        ):
            return True
        if wanted == _comparable(item.vmm.status):
            if _measurements(desired) == _measurements(item.vmm.status) or now is None:
                return False
            return now - self.written_at.get(item.key, float("-inf")) >= MEASUREMENT_REFRESH_S
        version = str(item.vmm.body["metadata"].get("resourceVersion"))
        last = self.written.get(item.key)
        return not (last is not None and last[0] == version and last[1] == wanted)

    async def write(self, writer: ClusterWriter, item: Managed, desired: Status, *, now: float) -> bool:
        if not self.needs_write(item, desired, now):
            return False
        status = _with_times(desired, item.vmm.status, now)
        try:
            await writer.patch_vmm_status(item.key.namespace, item.key.name, status)
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
            if kind not in {"Ready", "NodeOverSubscribed"}:
                continue
            if kind == "NodeOverSubscribed" and kind not in before and state == "False":
                continue  # a VM that never was over-subscribed needs no "fits" Event
            warn = (kind == "Ready" and state == "False") or (
                kind == "NodeOverSubscribed" and state == "True"
            )
            try:
                await writer.create_event(
                    item.vmm.body,
                    type_="Warning" if warn else "Normal",
                    reason=condition["reason"],
                    note=condition["message"],
                    action="Observe",
                )
            except Exception as exc:  # events are best effort
                logger.debug("event for %s not posted: %s", item.key, exc)
