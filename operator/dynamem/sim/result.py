"""What a simulation returns: per step, each VM, node and migration; the summary; and the ``--json`` document.

Both models (:mod:`dynamem.sim.kubevirt`, :mod:`dynamem.sim.hyperv`) fill the same records, so the table, the
chart, the JSON and the benchmarks read them alike. Bytes are ints; scores are GiB-steps (floats).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dynamem.sim.scenario import Scenario

__all__ = [
    "MigrationState",
    "MigrationStep",
    "Model",
    "NodeStep",
    "SimResult",
    "StepResult",
    "Summary",
    "VmStep",
]

OFF = "Off"


class Model(StrEnum):
    """How memory changes: ``kubevirt`` (a live migration to another node) or ``hyperv`` (in place)."""

    KUBEVIRT = "kubevirt"
    HYPERV = "hyperv"


class MigrationState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class VmStep:
    """One VM at the end of a step.

    ``demand``: true demand (None: off). ``seen``: the demand the policy was given at the step's start
    (kubevirt: the guest's observed used; hyperv: the true demand). ``observed``: used memory as the guest
    shows it at the end of the step (kubevirt: never above ``assigned``). ``assigned``: guest memory.
    ``moved_from``: the node it left in this step (kubevirt: the change was a migration). ``migrating_to``: a
    migration of it is in flight (its target node, or ``"?"`` while the target pod is unschedulable).
    """

    node: str
    demand: int | None
    assigned: int
    pressure: int | None
    status: str
    target: int
    reason: str
    changed: bool = False
    observed: int | None = None
    seen: int | None = None
    moved_from: str | None = None
    migrating_to: str | None = None


@dataclass(frozen=True, slots=True)
class NodeStep:
    """One node at the end of a step.

    ``assigned``: guest memory of the VMs running on it. ``requested``: every launcher pod's memory request on
    it (guest + overhead), the sources and targets of migrations in flight included; ``peak_requested``: the
    most it reached during the step. ``used``: what its guests show as used.
    """

    memory: int
    assigned: int
    reason: str
    requested: int = 0
    peak_requested: int = 0
    used: int = 0


@dataclass(frozen=True, slots=True)
class MigrationStep:
    """A live migration in flight at the end of a step, or ended during it.

    ``target`` is None while the target pod is unschedulable. ``size_from``/``size_to``: guest memory before
    and after (``bytes`` copied = ``size_from``). Times are seconds from the scenario's start: ``created_at``
    (target pod created, the migration counts against KubeVirt's limits from then), ``started_at`` (pod
    scheduled, copying), ``ended_at``.
    """

    vm: str
    source: str
    target: str | None
    bytes: int
    state: MigrationState
    size_from: int
    size_to: int
    created_at: float
    started_at: float | None
    ended_at: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class StepResult:
    step: int
    vms: dict[str, VmStep]
    nodes: dict[str, NodeStep]
    events: tuple[str, ...] = ()
    migrations: tuple[MigrationStep, ...] = ()


@dataclass(frozen=True, slots=True)
class Summary:
    """Scores, lower is better.

    ``changes``: memory changes carried out. ``migrations``: live migrations that completed (kubevirt: each
    change is one; hyperv: none). ``migrated_bytes``: guest memory they copied. ``failed_changes``: changes
    whose migration failed (target unschedulable past the pending timeout, or the VM stopped). ``refused_
    changes``: changes not attempted (hyperv: no room on the node; kubevirt: below the boot size,
    RestartRequired). ``over_capacity_steps``: steps where the requests on some node exceeded its memory
    (hyperv: the plan assigned more than the node has).
    """

    unmet_demand: float
    buffer_shortfall: float
    changes: int
    over_capacity_steps: int
    refused_starts: int = 0
    refused_changes: int = 0
    migrations: int = 0
    migrated_bytes: int = 0
    failed_changes: int = 0
    unstarted_demand: float = 0.0


@dataclass(frozen=True, slots=True)
class SimResult:
    policy: str
    scenario: Scenario
    steps: tuple[StepResult, ...]
    summary: Summary
    model: Model = Model.KUBEVIRT
    interval_s: float | None = None  # kubevirt model: seconds between the policy's rounds (None: one a step)

    def to_json(self) -> dict[str, object]:
        """The ``--json`` document: bytes as ints, scores as floats (GiB-steps)."""
        return {
            "policy": self.policy,
            "model": self.model.value,
            "interval_s": self.interval_s if self.interval_s is not None else self.scenario.step_seconds,
            "steps": [
                {
                    "step": s.step,
                    "vms": {
                        name: {
                            "node": v.node,
                            "demand": v.demand,
                            "observed": v.observed,
                            "seen": v.seen,
                            "assigned": v.assigned,
                            "pressure": v.pressure,
                            "status": v.status,
                            "reason": v.reason,
                            "moved_from": v.moved_from,
                            "migrating_to": v.migrating_to,
                        }
                        for name, v in s.vms.items()
                    },
                    "nodes": {
                        name: {
                            "memory": n.memory,
                            "assigned": n.assigned,
                            "requested": n.requested,
                            "peak_requested": n.peak_requested,
                            "used": n.used,
                        }
                        for name, n in s.nodes.items()
                    },
                    "migrations": [
                        {
                            "vm": m.vm,
                            "from": m.source,
                            "to": m.target,
                            "bytes": m.bytes,
                            "state": m.state.value,
                            "size_from": m.size_from,
                            "size_to": m.size_to,
                            "created_at": m.created_at,
                            "started_at": m.started_at,
                            "ended_at": m.ended_at,
                            "reason": m.reason,
                        }
                        for m in s.migrations
                    ],
                    "events": list(s.events),
                }
                for s in self.steps
            ],
            "summary": {
                "unmet_demand": self.summary.unmet_demand,
                "buffer_shortfall": self.summary.buffer_shortfall,
                "changes": self.summary.changes,
                "over_capacity_steps": self.summary.over_capacity_steps,
                "refused_starts": self.summary.refused_starts,
                "refused_changes": self.summary.refused_changes,
                "migrations": self.summary.migrations,
                "migrated_bytes": self.summary.migrated_bytes,
                "failed_changes": self.summary.failed_changes,
                "unstarted_demand": self.summary.unstarted_demand,
            },
        }
