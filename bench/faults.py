"""The fault suite: the operator on a busy cluster, faults injected one at a time, an independent checker.

Real parts: kube-apiserver and etcd (``dynamem.testing.controlplane``), Prometheus (the Debian package), the
KubeVirt stand-in (``dynamem.kubevirt_sim``), and the operator as its own processes (``dynamem run``, two
replicas sharing a Lease, as the Deployment runs them). Faults, one at a time:

- ``sigkill-mid-round``: SIGKILL the leader while it is in a round (N times); a new replica replaces it, as
  the Deployment's ReplicaSet would;
- ``apiserver-restart`` and ``etcd-restart``: the process is stopped, stays down a few seconds, comes back;
- ``prometheus-stopped``: Prometheus frozen (SIGSTOP: queries hang, so timeouts are exercised) for a while;
- ``two-replicas-at-once``: every replica stopped, two started at the same instant;
- ``sigkill-leader``: SIGKILL the leader between rounds;
- ``second-field-manager``: a GitOps-like manager server-side-applies ``memory.guest`` of one VM every 10 s;
- ``vmm-deleted``: one VirtualMachineMemory is deleted (its VM must never be written again).

Before each fault, demand moves (so that there is work to do during it) and then holds still. The checker
reads the API server every half second and counts violations:

- ``over-allocatable``: a node whose launcher pods (or, for a VMI without one, its memory) request more
  than its allocatable memory;
- ``below-floor``: a running VM whose guest has less than its VirtualMachineMemory's minimum;
- ``unmanaged-write``: a write by dynamem (its managedFields time) to a VM without a VirtualMachineMemory, or
  more than ``GRACE_S`` after its VirtualMachineMemory was seen deleted;
- ``owned-write``: a write by dynamem to ``memory.guest`` while another manager applies it;
- ``two-writers``: Events of two replicas in the same second;
- ``lost-status``: once settled, a VirtualMachineMemory whose status is missing or behind its generation.

The KubeVirt stand-in makes every memory change a live migration to another node (launcher pods placed by
the real kube-scheduler, run by kwok), so the cluster has one node more than its VMs start on, and the
operator's cluster plan creates the migrations. A fault has converged when, after it ended, every running
managed VM has what it asked for (memory.guest = the guest's memory), at least what its demand calls for
(its target less the dead band) and no more than its maximum (the plan grows a paging VM x1.5 and shrinks
only after use stayed low for its shrink window, so a VM may end above its target), and every status is
current (and, when the leader was lost, a new leader holds the Lease), within two rounds (plus the Lease's
expiry when the leader was lost, and one migration). Prints one line per fault, then
``faults: injected=N violations=V converged_within_2_rounds=C/N``.

Each fault is injected into a steady cluster: both replicas up (a killed leader's replacement started and
campaigning for the Lease), as a Deployment keeps them; the time waited for that is printed at the end. The
``two-replicas-at-once`` fault ends when both new replicas are up (their start-up time is on its line).

Usage: ``python bench/faults.py`` (the full suite: 20 SIGKILLs, Prometheus frozen 2 minutes) or
``--short`` (what CI runs: 3 SIGKILLs, Prometheus frozen 15 s); ``--only NAME,...`` injects only those faults
(after the warm-up).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
from kubernetes import client as k8s

from dynamem.kube.objects import GI, MI, pod_view, quantity_bytes, vmi_view
from dynamem.kubevirt_sim.controller import SimulatorOptions
from dynamem.kubevirt_sim.metrics import DemandFeed
from dynamem.kubevirt_sim.migrations import MigrationOptions
from dynamem.kubevirt_sim.runner import SimulatorRunner
from dynamem.settings import SettingsError, VmSettings
from dynamem.sim.scenario import Scenario, parse_scenario
from dynamem.testing.controlplane import ControlPlane
from dynamem.testing.operator import OperatorProcess
from dynamem.testing.prometheus import Prometheus

FAULTS = (
    "sigkill-mid-round",
    "apiserver-restart",
    "etcd-restart",
    "prometheus-stopped",
    "two-replicas-at-once",
    "sigkill-leader",
    "second-field-manager",
    "vmm-deleted",
)
NAMESPACE = "faults"
INTERVAL_S = 2.0
LEASE_S = 6.0
MIGRATION_S = 1.0  # one live migration: target pod scheduled and run, memory copied, source ended
GROWS_PER_FAULT = 3  # VMs below their maximum whose demand rises before each fault (the others hold theirs)
SCRAPE_S = 1.0
GRACE_S = 2.0
GITOPS = "gitops-tool"
GUEST_PATH = ("f:spec", "f:template", "f:spec", "f:domain", "f:memory", "f:guest")


def busy_cluster(nodes: int = 3, vms_per_node: int = 4) -> Scenario:
    """VMs on ``nodes`` nodes, and one empty node more: every change is a migration to another node, which
    needs room there (12 VMs at their 4Gi maximum hold 48Gi of the 64Gi)."""
    names = [f"vm{i:02d}" for i in range(nodes * vms_per_node)]
    return parse_scenario(
        {
            "step": "1m",
            "nodes": [{"name": f"node-{n}", "memory": "16Gi"} for n in range(nodes + 1)],
            "vms": [
                {
                    "name": name,
                    "node": f"node-{i % nodes}",
                    "startup": "1Gi",
                    "minimum": "1Gi",
                    "maximum": "4Gi",
                }
                for i, name in enumerate(names)
            ],
            "demand": {name: ["768Mi"] for name in names},
        }
    )


@dataclass
class Violations:
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    examples: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, example: str) -> None:
        with self.lock:
            self.counts[kind] += 1
            self.examples.setdefault(kind, example)

    def total(self) -> int:
        return sum(self.counts.values())


def _time(value: object) -> float | None:
    import datetime as dt

    if not isinstance(value, str):
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _guest_owner_times(vm: Mapping[str, Any]) -> dict[str, tuple[str, float | None]]:
    found = {}
    for entry in vm.get("metadata", {}).get("managedFields") or []:
        node: Any = entry.get("fieldsV1") or {}
        for step in GUEST_PATH:
            node = node.get(step) if isinstance(node, Mapping) else None
        if node is not None:
            found[str(entry.get("manager"))] = (str(entry.get("operation")), _time(entry.get("time")))
    return found


def acceptable(settings: VmSettings, demand: int) -> tuple[int, int]:
    """The memory dynamem's cluster plan may leave a VM with for this demand when the cluster has room: at
    least its target (demand plus buffer, within minimum and maximum) less the dead band, at most its maximum
    (a paging VM grows x1.5 past its target, and shrinks only after its use stayed low for the shrink
    window, longer than the suite)."""
    target = min(settings.maximum, max(settings.minimum, round(demand * 100 / (100 - settings.buffer))))
    dead = max(128 * MI, target * 5 // 100)
    return target - dead - 2 * MI, settings.maximum


class Checker(threading.Thread):
    """Reads the API server every half second; counts what must never happen."""

    def __init__(self, cp: ControlPlane) -> None:
        super().__init__(name="checker", daemon=True)
        self.api = cp.api_client()
        self.custom = k8s.CustomObjectsApi(self.api)
        self.core = k8s.CoreV1Api(self.api)
        self.violations = Violations()
        self.stop_event = threading.Event()
        self.deleted_vmm_at: dict[str, float] = {}
        self.seen_vmms: set[str] = set()
        self.dynamem_write: dict[str, float] = {}  # last dynamem managedFields time per VM
        self.gitops_owned: set[str] = set()
        self.event_seconds: dict[int, set[str]] = defaultdict(set)
        self.reads = 0
        self.migration_seen: dict[str, float] = {}  # monotonic time a migration was first read
        self.migration_done: dict[str, float] = {}  # ... and first read Succeeded
        self.migration_failed: set[str] = set()  # ... read Failed (KubeVirt retries the change itself)

    def _list(self, plural: str) -> list[dict[str, Any]]:
        found: Any = self.custom.list_namespaced_custom_object(
            "kubevirt.io" if plural != "virtualmachinememories" else "dynamem.io",
            "v1" if plural != "virtualmachinememories" else "v1alpha1",
            NAMESPACE,
            plural,
            _request_timeout=5,
        )
        return cast(list[dict[str, Any]], found["items"])

    def run(self) -> None:
        while not self.stop_event.wait(0.5):
            with contextlib.suppress(Exception):  # the API server may be down: that is a fault, not ours
                self.check_once()
                self.reads += 1

    def longest_migration(self, since: float) -> float:
        """The longest migration first read after ``since``, from its first read to its first read as
        Succeeded (KubeVirt's part of a change: target pod scheduled and run, memory copied, source ended; a
        failed one grants nothing); 0 if none."""
        return max(
            (
                self.migration_done[name] - seen
                for name, seen in self.migration_seen.items()
                if seen >= since and name in self.migration_done
            ),
            default=0.0,
        )

    def check_once(self) -> None:
        read_at = time.monotonic()
        for migration in self._list("virtualmachineinstancemigrations"):
            name = migration["metadata"]["name"]
            self.migration_seen.setdefault(name, read_at)
            phase = (migration.get("status") or {}).get("phase")
            if phase == "Succeeded":
                self.migration_done.setdefault(name, read_at)
            elif phase == "Failed":
                self.migration_failed.add(name)
        vmms = {v["metadata"]["name"]: v for v in self._list("virtualmachinememories")}
        vms = {v["metadata"]["name"]: v for v in self._list("virtualmachines")}
        vmis = {v["metadata"]["name"]: v for v in self._list("virtualmachineinstances")}
        nodes = self.core.list_node(_request_timeout=5).items
        raw_pods = self.core.list_pod_for_all_namespaces(_request_timeout=5).items
        serialized: Any = self.api.sanitize_for_serialization(raw_pods)  # type: ignore[no-untyped-call]
        pods = [pod_view(p) for p in serialized]
        now = time.time()
        for name in self.seen_vmms - vmms.keys():
            self.deleted_vmm_at.setdefault(name, now)
        self.seen_vmms |= vmms.keys()

        # a node's requests above its allocatable
        requested: dict[str, int] = defaultdict(int)
        with_pod: set[str] = set()
        for pod in pods:
            if pod.node and not pod.finished:
                requested[pod.node] += pod.request
                if pod.launcher and pod.vmi:
                    with_pod.add(pod.vmi)
        for name, body in vmis.items():
            vmi = vmi_view(body)
            if vmi.active and vmi.node and name not in with_pod:
                spec = vmi.spec_guest or 0
                requested[vmi.node] += max(vmi.current or 0, spec)
        for node in nodes:
            node_name = str(node.metadata.name) if node.metadata else ""
            allocatable = quantity_bytes(((node.status and node.status.allocatable) or {}).get("memory")) or 0
            if requested[node_name] > allocatable:
                self.violations.add("over-allocatable", f"{node_name}: {requested[node_name] / GI:.2f}Gi")

        # a running VM below its floor
        for name, body in vmis.items():
            vmi = vmi_view(body)
            vmm = vmms.get(name)
            if vmm is None or not vmi.active or vmi.current is None:
                continue
            try:
                floor = VmSettings.from_spec(name, vmm.get("spec") or {}).minimum
            except SettingsError:
                continue
            if vmi.current < floor:
                self.violations.add("below-floor", f"{name}: {vmi.current / MI:.0f}Mi < {floor / MI:.0f}Mi")

        # writes by dynamem: never to a VM without a VirtualMachineMemory, never to a field another applies
        for name, vm in vms.items():
            owners = _guest_owner_times(vm)
            mine = owners.get("dynamem")
            if mine is None or mine[1] is None:
                continue
            written = mine[1]
            if self.dynamem_write.get(name) == written:
                continue
            first_sight = name not in self.dynamem_write
            self.dynamem_write[name] = written
            if first_sight:
                continue  # written before the checker looked
            deleted = self.deleted_vmm_at.get(name)
            if name not in vmms and (deleted is None or written > deleted + GRACE_S):
                self.violations.add("unmanaged-write", f"{name} written at {written:.0f}")
            gitops = owners.get(GITOPS)
            if gitops is not None and gitops[1] is not None and written > gitops[1] + GRACE_S:
                self.violations.add("owned-write", f"{name}: dynamem wrote memory.guest {GITOPS} applies")

        # two replicas writing in the same second (their Events name them)
        found: Any = self.custom.list_namespaced_custom_object(
            "events.k8s.io", "v1", NAMESPACE, "events", _request_timeout=5
        )
        events: list[dict[str, Any]] = found["items"]
        for event in events:
            if event.get("reportingController") != "dynamem.io/operator":
                continue
            moment = _time(event.get("eventTime"))
            if moment is None:
                continue
            second = int(moment)
            instances = self.event_seconds[second]
            instances.add(str(event.get("reportingInstance")))
            if len(instances) == 2:
                self.violations.add("two-writers", f"{sorted(instances)} at {second}")

    def settled(self, skip: set[str], demand: Mapping[str, int]) -> str | None:
        """None when every running managed VM has what it asked for, what its demand calls for (no shortage
        in this cluster), and a current status; else why not."""
        vmms = {v["metadata"]["name"]: v for v in self._list("virtualmachinememories")}
        vms = {v["metadata"]["name"]: v for v in self._list("virtualmachines")}
        vmis = {v["metadata"]["name"]: v for v in self._list("virtualmachineinstances")}
        for name, vmm in vmms.items():
            status = vmm.get("status") or {}
            if status.get("observedGeneration") != vmm["metadata"].get("generation"):
                return f"{name}: status behind its generation"
            if name in skip or name not in vmis:
                continue
            vmi = vmi_view(vmis[name])
            guest = quantity_bytes(vms[name]["spec"]["template"]["spec"]["domain"]["memory"].get("guest"))
            if guest != vmi.current:
                return f"{name}: asked {guest} has {vmi.current}"
            wanted = demand.get(name)
            if wanted is not None and vmi.current is not None:
                low, high = acceptable(VmSettings.from_spec(name, vmm.get("spec") or {}), wanted)
                if not low <= vmi.current <= high:
                    return f"{name}: has {vmi.current / MI:.0f}Mi for demand {wanted / MI:.0f}Mi"
            if quantity_bytes(status.get("assigned")) != vmi.current:
                return f"{name}: status says {status.get('assigned')}, the guest has {vmi.current}"
        return None

    def lost_statuses(self) -> None:
        for name, vmm in {v["metadata"]["name"]: v for v in self._list("virtualmachinememories")}.items():
            if not vmm.get("status"):
                self.violations.add("lost-status", name)


@dataclass
class Outcome:
    fault: str
    converged_s: float | None
    budget_s: float
    violations: int


class Suite:
    def __init__(self, short: bool, seed: int, only: frozenset[str] = frozenset()) -> None:
        self.short = short
        self.rng = random.Random(seed)
        self.cp = ControlPlane().start()
        self.prom = Prometheus(scrape_interval=SCRAPE_S).start()
        core = k8s.CoreV1Api(self.cp.api_client())
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NAMESPACE)))
        self.scenario = busy_cluster()
        self.sim = SimulatorRunner(
            self.cp.kubeconfig_path,
            SimulatorOptions(
                namespace=NAMESPACE,
                poll_s=0.3,
                # pending_timeout_s: KubeVirt's is 300 s. A plan may place a change where room frees once
                # another VM has left (its target pod waits Pending meanwhile); under heavy load that other
                # migration takes more than 5 s, and a 5 s timeout failed the waiting one (KubeVirt then
                # retries it, which the budget of one migration does not cover). 30 s outlasts a migration
                # under load and keeps the suite short.
                migration=MigrationOptions(
                    bandwidth=8 * GI, updater_delay_s=0.3, pending_timeout_s=30.0, backoff_s=2.0
                ),
            ),
            DemandFeed(speed=0.0),
        )
        self.sim.start(self.scenario, NAMESPACE)
        self.prom.set_targets([self.sim.metrics_target])
        self.custom = k8s.CustomObjectsApi(self.cp.api_client())
        self.replicas: list[OperatorProcess] = []
        self.checker = Checker(self.cp)
        self.names = [vm.name for vm in self.scenario.vms]
        self.skip: set[str] = set()
        self.demand: dict[str, int] = {}
        self.outcomes: list[Outcome] = []
        self._serial = 0
        self._starting = threading.Lock()
        self._next_grow = 0
        self.only = only
        self.note = ""  # what a fault adds to its line
        self.waits: list[float] = []  # seconds waited for a replacement replica before a fault
        self.exited: list[OperatorProcess] = []  # replicas that exited on their own (not killed by a fault)

    # --- the operator's replicas -----------------------------------------------------------------------
    def start_replica(self) -> OperatorProcess:
        with self._starting:  # two started at once get two names (the Events' reportingInstance)
            self._serial += 1
            os.environ["POD_NAME"] = f"replica-{self._serial}"
            replica = self._replica().start()  # the process takes its environment now
            self.replicas.append(replica)
        return replica

    def _replica(self) -> OperatorProcess:
        return OperatorProcess(
            self.cp.kubeconfig_path,
            self.prom.url,
            NAMESPACE,
            "--lease-duration",
            str(LEASE_S),
            "--log-level",
            "INFO",
            interval=INTERVAL_S,
            standalone=False,
        )

    def replicas_up(self, timeout: float = 180.0) -> float:
        """Wait until every replica serves its metrics: it is campaigning for the Lease (the metrics server
        and the Lease's task start together), as a Deployment's pods are Ready. Returns the seconds waited."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            for replica in [r for r in self.replicas if not r.alive()]:  # exited: the ReplicaSet replaces it
                self.replicas.remove(replica)
                self.exited.append(replica)
                self.start_replica()
            if all(r.gauge("dynamem_balancer_active") is not None for r in self.replicas):
                return time.monotonic() - started
            time.sleep(0.2)
        raise RuntimeError("replicas not up")

    def leader(self, timeout: float = 60.0) -> OperatorProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for replica in self.replicas:
                if replica.alive() and replica.gauge("dynamem_balancer_active") == 1.0:
                    return replica
            time.sleep(0.2)
        raise RuntimeError("no leader")

    def _active_leader(self) -> OperatorProcess | None:
        for replica in self.replicas:
            if replica.alive() and replica.gauge("dynamem_balancer_active") == 1.0:
                return replica
        return None

    def kill(self, replica: OperatorProcess) -> None:
        assert replica.process is not None
        replica.process.send_signal(signal.SIGKILL)
        replica.process.wait()
        self.replicas.remove(replica)

    # --- demand ----------------------------------------------------------------------------------------
    def move_demand(self) -> None:
        """New demand that calls for exactly one change each for the next ``GROWS_PER_FAULT`` VMs below their
        maximum (round robin, skipping the ones a fault takes over): such a guest wants all it has less 64Mi,
        more than a guest shows used (~86 %), so it pages and the plan grows it once, x1.5 (capped at its
        maximum), which covers that demand; a guest at its maximum passed on the way falls to 30 % (no change:
        the plan shrinks only after the shrink window). The other VMs hold their demand. (The full suite's 20
        kills outlast the grows: its last faults have little work.)"""
        grown = 0
        for _ in range(len(self.names)):
            if grown == GROWS_PER_FAULT:
                break
            name = self.names[self._next_grow % len(self.names)]
            self._next_grow += 1
            guest = self.sim.guest(NAMESPACE, name)
            if name in self.skip or guest is None:
                continue
            size = guest.current
            self.demand[name] = size - 64 * MI if size < 4 * GI else int(0.3 * size)
            grown += size < 4 * GI
            self.sim.set_demand(NAMESPACE, name, self.demand[name])
        for name in self.names:
            self.demand.setdefault(name, 768 * MI)  # the scenario's

    # --- one fault ---------------------------------------------------------------------------------------
    def fault(self, name: str, inject: Callable[[], bool]) -> None:
        """``inject`` runs the fault and returns whether leadership was lost (the budget adds a Lease).

        A fault is injected into a steady cluster: both replicas up (a SIGKILLed leader's replacement has
        started and campaigns), as a Deployment's ReplicaSet keeps them; else a second kill would find no
        standby, two faults at once."""
        if self.only and name != "warm-up" and name not in self.only:
            return
        waited = self.replicas_up()
        if name != "warm-up":
            self.waits.append(waited)
        began = time.monotonic()
        before = self.checker.violations.total()
        self.note = ""
        self.move_demand()
        lost_leader = inject()
        ended = time.monotonic()
        at = time.strftime("%H:%M:%S", time.gmtime())

        # two rounds, one scrape, one migration and a second of slack; when the leader was lost, first the
        # Lease must expire and a candidate's next try (retry = 2/15 of the duration) take it. The migration
        # is KubeVirt's: the longest one this fault's changes took, as the checker read it (MIGRATION_S at
        # least)
        def budget_for(migration_s: float) -> float:
            lease = LEASE_S * 17 / 15 + 1.0 if lost_leader else 0.0
            return 2 * INTERVAL_S + SCRAPE_S + max(MIGRATION_S, migration_s) + 1.0 + lease

        budget = budget_for(MIGRATION_S)
        converged: float | None = None
        deadline = ended + max(budget * 4, 60.0)
        last = "not checked"
        while time.monotonic() < deadline:
            try:
                why = self.checker.settled(self.skip, self.demand)
            except Exception as exc:  # the API server is still coming back
                why = f"unreadable: {exc.__class__.__name__}"
            if why is None and lost_leader and self._active_leader() is None:
                why = "no leader yet"  # the settled state is the old leader's: the new one must take over
            if why is None:
                converged = time.monotonic() - ended
                break
            last = why
            time.sleep(0.25)
        time.sleep(1.0)  # let the checker see the settled state
        migration = self.checker.longest_migration(began)
        budget = budget_for(migration)
        added = self.checker.violations.total() - before
        self.outcomes.append(Outcome(name, converged, budget, added))
        took = f"{converged:.1f}s" if converged is not None else f"never ({last}; {self._why_not(last)})"
        ok = converged is not None and converged <= budget
        print(
            f"fault {name}: converged in {took} (budget {budget:.1f}s) "
            f"{'ok' if ok else 'SLOW'} violations={added} (ended {at}; longest migration {migration:.1f}s"
            f"{self.note})",
            flush=True,
        )

    def _why_not(self, last: str) -> str:
        """What the operator's status says of the VM a fault did not converge on (its reason, its hold)."""
        name = last.split(":", 1)[0]
        try:
            vmm: Any = self.custom.get_namespaced_custom_object(
                "dynamem.io", "v1alpha1", NAMESPACE, "virtualmachinememories", name
            )
        except Exception as exc:  # not a VM's name, or the API server is down
            return f"no status: {exc.__class__.__name__}"
        status = vmm.get("status") or {}
        return f"its status: {status.get('reason')!r}, heldBecause {status.get('heldBecause')!r}"

    def run(self) -> int:
        self.checker.start()
        self.start_replica()
        self.start_replica()
        self.replicas_up()  # under heavy load a replica takes a minute or more to start
        self.leader()
        self.fault("warm-up", lambda: False)
        self.outcomes.clear()  # the warm-up is not a fault

        kills = 3 if self.short else 20
        for _ in range(kills):
            self.fault("sigkill-mid-round", self._sigkill_mid_round)
        self.fault("apiserver-restart", lambda: self._restart("kube-apiserver"))
        self.fault("etcd-restart", lambda: self._restart("etcd"))
        self.fault("prometheus-stopped", self._prometheus_stopped)
        self.fault("two-replicas-at-once", self._two_at_once)
        self.fault("sigkill-leader", self._sigkill_leader)
        self.fault("second-field-manager", self._second_field_manager)
        self.fault("vmm-deleted", self._vmm_deleted)

        self.checker.lost_statuses()
        injected = len(self.outcomes)
        converged = sum(1 for o in self.outcomes if o.converged_s is not None and o.converged_s <= o.budget_s)
        total = self.checker.violations.total()
        for kind, count in sorted(self.checker.violations.counts.items()):
            print(f"violation {kind}: {count} (e.g. {self.checker.violations.examples[kind]})")
        print(f"checker: {self.checker.reads} reads of the API server")
        print(
            f"migrations: {len(self.checker.migration_done)} succeeded, "
            f"{len(self.checker.migration_failed)} failed"
        )
        for replica in self.exited:
            print(f"replica exited on its own (replaced); its log: {replica.log}")
        if self.waits:
            print(
                f"replicas: waited for a replacement to be up before a fault {max(self.waits):.1f}s at most, "
                f"{sum(self.waits):.0f}s in all"
            )
        print(
            f"faults: injected={injected} violations={total} converged_within_2_rounds={converged}/{injected}"
        )
        return 0 if total == 0 and converged == injected else 1

    # --- the faults --------------------------------------------------------------------------------------
    def _sigkill_mid_round(self) -> bool:
        """SIGKILL the leader right after it patched a VM's memory, before the round wrote the statuses."""
        leader = self.leader()
        before = _patches(leader)
        deadline = time.monotonic() + INTERVAL_S * 3
        while time.monotonic() < deadline and _patches(leader) == before:
            time.sleep(0.005)
        self.kill(leader)
        self.start_replica()  # the ReplicaSet's replacement
        return True

    def _sigkill_leader(self) -> bool:
        self.kill(self.leader())
        self.start_replica()
        return True

    def _restart(self, component: str) -> bool:
        self.cp.restart(component, down_s=3.0)
        return False

    def _prometheus_stopped(self) -> bool:
        self.prom.pause()
        time.sleep(15.0 if self.short else 120.0)
        self.prom.resume()
        return False

    def _two_at_once(self) -> bool:
        for replica in list(self.replicas):
            replica.stop()
            self.replicas.remove(replica)
        first = threading.Thread(target=self.start_replica)
        first.start()
        self.start_replica()
        first.join()
        # the fault ends when both run (their metrics served, campaigning): the processes' start-up on this
        # machine is not the operator's convergence, and is printed apart
        self.note = f"; both replicas up {self.replicas_up():.1f}s after their start"
        return True

    def _second_field_manager(self) -> bool:
        name = self.names[0]
        self.skip.add(name)
        for i in range(3 if self.short else 6):
            size = f"{self.rng.choice([1, 2, 3])}Gi"
            self._apply_guest(name, {"memory": {"guest": size}})
            if i == 0 and not self._conflict_reported(name, within=2 * INTERVAL_S + 2):
                self.checker.violations.add("conflict-unreported", f"{name}: no FieldOwnedByOtherManager")
            time.sleep(10.0)
        self._hand_over(name)
        self.skip.discard(name)
        return False

    def _conflict_reported(self, name: str, within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            vmm: Any = self.custom.get_namespaced_custom_object(
                "dynamem.io", "v1alpha1", NAMESPACE, "virtualmachinememories", name
            )
            conditions = {c["type"]: c["status"] for c in (vmm.get("status") or {}).get("conditions") or []}
            if conditions.get("FieldOwnedByOtherManager") == "True":
                return True
            time.sleep(0.2)
        return False

    def _hand_over(self, name: str) -> None:
        """The tool is told to stop managing memory.guest: its managedFields entry is dropped (the documented
        way to take a manager off an object), leaving the value in place."""
        vm: Any = self.custom.get_namespaced_custom_object(
            "kubevirt.io", "v1", NAMESPACE, "virtualmachines", name
        )
        kept = [m for m in vm["metadata"]["managedFields"] if m.get("manager") != GITOPS]
        self.custom.patch_namespaced_custom_object(
            "kubevirt.io",
            "v1",
            NAMESPACE,
            "virtualmachines",
            name,
            [{"op": "replace", "path": "/metadata/managedFields", "value": kept}],
            _content_type="application/json-patch+json",
        )

    def _apply_guest(self, name: str, domain: dict[str, Any]) -> None:
        body = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"template": {"spec": {"domain": domain}}},
        }
        self.custom.patch_namespaced_custom_object(
            "kubevirt.io",
            "v1",
            NAMESPACE,
            "virtualmachines",
            name,
            body,
            field_manager=GITOPS,
            force=True,
            _content_type="application/apply-patch+yaml",
        )

    def _vmm_deleted(self) -> bool:
        name = self.names[-1]
        self.custom.delete_namespaced_custom_object(
            "dynamem.io", "v1alpha1", NAMESPACE, "virtualmachinememories", name
        )
        self.skip.add(name)
        time.sleep(2 * INTERVAL_S)
        self.sim.set_demand(NAMESPACE, name, 3 * GI)  # would call for a grow, were it managed
        time.sleep(3 * INTERVAL_S)
        return False

    def close(self) -> None:
        self.checker.stop_event.set()
        for replica in self.replicas:
            replica.stop()
        self.sim.stop()
        self.prom.resume()
        self.prom.stop()
        self.cp.stop()


def _patches(operator: OperatorProcess) -> float:
    """memory.guest patches the replica made so far (both directions)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=1).text
    except httpx.HTTPError:
        return -1.0
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("dynamem_vm_memory_patches_total{")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--short", action="store_true", help="the CI version: fewer and shorter faults")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated faults to inject (after the warm-up), e.g. second-field-manager; default all",
    )
    parser.add_argument(
        "--sim-log",
        default="",
        help="write the KubeVirt stand-in's log (its migrations, their failures) to this file",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop everything it started on the way out
    sim_logger = logging.getLogger("dynamem.kubevirt_sim")
    if args.sim_log:
        handler = logging.FileHandler(args.sim_log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        sim_logger.addHandler(handler)
        sim_logger.setLevel(logging.INFO)
        sim_logger.propagate = False
    else:
        sim_logger.setLevel(logging.CRITICAL)  # it complains while the API is down
    only = frozenset(name for name in args.only.split(",") if name)
    unknown = only - set(FAULTS)
    if unknown:
        parser.error(f"--only: unknown fault(s) {', '.join(sorted(unknown))}; known: {', '.join(FAULTS)}")
    suite = Suite(args.short, args.seed, only)
    try:
        return suite.run()
    finally:
        suite.close()


if __name__ == "__main__":
    sys.exit(main())
