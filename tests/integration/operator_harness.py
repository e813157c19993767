"""Running the real operator process, the KubeVirt simulator and Prometheus together, for end-to-end tests.

`OperatorProcess` starts `dynamem run` as its own process (as it runs in a cluster) against the test
kubeconfig; `Stack` ties one test's namespace, its scenario, the simulator and Prometheus' targets together
and offers the waits the tests need.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import pytest
from kubernetes import client as k8s_client
from kubernetes import watch as k8s_watch

from dynamem.kube.objects import GI, HOSTNAME_LABEL, MI, quantity_bytes
from dynamem.kubevirt_sim.controller import SimulatorOptions
from dynamem.kubevirt_sim.metrics import DemandFeed
from dynamem.kubevirt_sim.migrations import MigrationOptions
from dynamem.kubevirt_sim.runner import SimulatorRunner
from dynamem.sim.scenario import Scenario, parse_scenario
from dynamem.testing.controlplane import ControlPlane
from dynamem.testing.operator import OperatorProcess
from dynamem.testing.prometheus import Prometheus

T = TypeVar("T")
QUIET_ROUND = re.compile(r"round \d+: 0 memory writes, \d+ status writes, 0 deferred")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\S+) (\S+) ")


def _telling(line: str) -> bool:
    """Whether an operator log line says something about a failure (:meth:`Stack.log_tail`)."""
    found = LOG_LINE.match(line)
    if found is None:
        return True  # a traceback's or a message's continuation
    logger, level = found.groups()
    if level in ("WARNING", "ERROR", "CRITICAL"):
        return True
    return logger.startswith("dynamem") and not QUIET_ROUND.search(line)


def wait_until(what: str, check: Callable[[], T | None], timeout: float = 60.0, every: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")


def workday(node: str, steps: int = 3) -> Scenario:
    """The seed's workday starting on one 8Gi node, with a second 8Gi node to migrate to (every memory change
    in KubeVirt is a live migration to another node); demand is steered by the tests, step by step."""
    vms = ["finance", "sales", "engineering", "service"]
    return parse_scenario(
        {
            "step": "15m",
            "nodes": [{"name": node, "memory": "8Gi"}, {"name": f"{node}-b", "memory": "8Gi"}],
            "vms": [{"name": n, "node": node, "startup": "1Gi", "maximum": "4Gi"} for n in vms],
            "demand": {
                "finance": ["512Mi"] * steps,
                "sales": ["512Mi"] * steps,
                "engineering": ["512Mi"] * steps,
                "service": [None] * steps,
            },
        }
    )


def from_first_node(nodes: Mapping[str, str], vms: Mapping[str, Mapping[str, Any]]) -> Scenario:
    """A scenario of VMs all starting on the first of ``nodes`` (name to memory), the others theirs to move
    to; each VM's demand 512Mi until the test steers it."""
    home = next(iter(nodes))
    return parse_scenario(
        {
            "step": "1m",
            "nodes": [{"name": name, "memory": memory} for name, memory in nodes.items()],
            "vms": [{"name": name, "node": home, **spec} for name, spec in vms.items()],
            "demand": {name: ["512Mi"] for name in vms},
        }
    )


def first_node_stack(
    request: pytest.FixtureRequest,
    nodes: Mapping[str, str],
    vms: Mapping[str, Mapping[str, Any]],
    **options: float,
) -> Iterator[tuple[Stack, list[str]]]:
    """A fixture's body: a :class:`Stack` of ``vms`` starting on the first of ``nodes`` (role to memory;
    each named ``unique_name(role)``), on the session's control plane and Prometheus, in the test's
    namespace, yielded with the node names and closed afterwards. ``options``: the Stack's
    (``hotplug_delay``, ``bandwidth_gib``: GiB a migration copies per second, ``overhead_mib``: what every
    launcher pod requests beyond its guest; the stand-in renders launchers under the cluster's KubeVirt CR, as
    KubeVirt does)."""
    unique_name: Callable[[str], str] = request.getfixturevalue("unique_name")
    names = [unique_name(role) for role in nodes]
    scenario = from_first_node(dict(zip(names, nodes.values(), strict=True)), vms)
    for stack in scenario_stack(request, scenario, **options):
        yield stack, names


def scenario_stack(request: pytest.FixtureRequest, scenario: Scenario, **options: float) -> Iterator[Stack]:
    """A fixture's body: a :class:`Stack` of ``scenario`` on the session's control plane and Prometheus, in
    the test's namespace, closed afterwards."""
    stack = Stack(
        request.getfixturevalue("control_plane"),
        request.getfixturevalue("prometheus"),
        request.getfixturevalue("namespace"),
        scenario,
        **options,
    )
    try:
        yield stack
    finally:
        stack.close()


def hog(
    api: k8s_client.ApiClient, namespace: str, node: str, requests: Mapping[str, str], name: str = "hog"
) -> Any:
    """A pod of another workload bound to ``node`` and asking ``requests`` (kwok runs it); returns it."""
    return k8s_client.CoreV1Api(api).create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": f"{name}-"},
            "spec": {
                "nodeName": node,
                "containers": [{"name": "c", "image": "busybox", "resources": {"requests": dict(requests)}}],
            },
        },
    )


def the_leader(replicas: Sequence[OperatorProcess], timeout: float = 60.0) -> OperatorProcess:
    """Wait until exactly one replica balances (``dynamem_balancer_active`` 1) and every other is idle."""

    def leaders() -> list[OperatorProcess] | None:
        active = [r for r in replicas if r.gauge("dynamem_balancer_active") == 1.0]
        idle = [r for r in replicas if r.gauge("dynamem_balancer_active") in (None, 0.0)]
        return active if len(active) == 1 and len(idle) == len(replicas) - 1 else None

    return wait_until("exactly one leader", leaders, timeout=timeout)[0]


def one_node(node: str, memory: str, vms: Mapping[str, Mapping[str, Any]], running: bool = True) -> Scenario:
    """A scenario of VMs starting on one node, all running (demand is steered by the tests), with a second
    node of the same memory for their memory changes to migrate to."""
    return parse_scenario(
        {
            "step": "1m",
            "nodes": [{"name": node, "memory": memory}, {"name": f"{node}-b", "memory": memory}],
            "vms": [{"name": name, "node": node, **spec} for name, spec in vms.items()],
            "demand": {name: ["512Mi" if running else None] for name in vms},
        }
    )


class KubeVirtReads:
    """Reads of the KubeVirt objects in one test's namespace (``custom``: its CustomObjectsApi)."""

    namespace: str
    custom: k8s_client.CustomObjectsApi

    def vmi(self, name: str) -> Mapping[str, Any]:
        return self.custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
            "kubevirt.io", "v1", self.namespace, "virtualmachineinstances", name
        )

    def migrations(self) -> list[Mapping[str, Any]]:
        """Every VirtualMachineInstanceMigration in the namespace, whoever made it."""
        found = self.custom.list_namespaced_custom_object(
            "kubevirt.io", "v1", self.namespace, "virtualmachineinstancemigrations"
        )
        return list(found["items"])


class Stack(KubeVirtReads):
    """One test's world: its namespace, a scenario set up by the simulator, Prometheus scraping it."""

    def __init__(
        self,
        control_plane: ControlPlane,
        prometheus: Prometheus,
        namespace: str,
        scenario: Scenario,
        *,
        hotplug_delay: float = 0.3,
        bandwidth_gib: float = 8.0,
        overhead_mib: float = 0.0,
    ) -> None:
        self.cp = control_plane
        self.total_memory = sum(node.memory for node in scenario.nodes)
        self.prometheus = prometheus
        self.namespace = namespace
        self.api = control_plane.api_client()
        self.custom = k8s_client.CustomObjectsApi(self.api)
        self.sim = SimulatorRunner(
            control_plane.kubeconfig_path,
            SimulatorOptions(
                namespace=namespace,
                poll_s=0.2,
                overhead=int(overhead_mib * MI),
                migration=MigrationOptions(
                    bandwidth=int(bandwidth_gib * GI),
                    updater_delay_s=hotplug_delay,
                    pending_timeout_s=5.0,
                    backoff_s=2.0,
                ),
            ),
            DemandFeed(speed=0.0),
        )
        self.sim.start(scenario, namespace, pool=namespace)
        prometheus.set_targets([self.sim.metrics_target])
        self.operator: OperatorProcess | None = None
        self.operators: list[OperatorProcess] = []
        self.placements: dict[str, tuple[str, int]] = {}  # VM -> (node, size) last seen
        self.moves: list[tuple[str, str, str, int, int]] = []  # (VM, from, to, size before, size after)

    def start_replicas(self, lease_s: str, count: int = 2) -> list[OperatorProcess]:
        """``count`` operator replicas sharing a Lease of ``lease_s`` seconds, started together."""
        return [self.start_operator("--lease-duration", lease_s, standalone=False) for _ in range(count)]

    def start_operator(self, *extra: str, standalone: bool = True) -> OperatorProcess:
        operator = OperatorProcess(
            self.cp.kubeconfig_path, self.prometheus.url, self.namespace, *extra, standalone=standalone
        ).start()
        self.operators.append(operator)
        self.operator = operator
        return operator

    def close(self) -> None:
        for operator in self.operators:
            operator.stop()
        self.sim.stop()
        self.prometheus.set_targets([])
        self.api.close()

    # --- reading the cluster -------------------------------------------------------------------------------
    def vm(self, name: str) -> Mapping[str, Any]:
        return self.custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
            "kubevirt.io", "v1", self.namespace, "virtualmachines", name
        )

    def grown_by_dynamem_to(self, name: str, node: str) -> None:
        """Wait until ``name`` is grown by a migration, and check that no migration failed, that dynamem made
        every one, pinned to ``node``, and that the VM runs there."""
        done = self.grown_by_migration(name)
        everything = self.migrations()
        assert not [m for m in everything if m.get("status", {}).get("phase") == "Failed"], everything
        for m in everything:
            assert m["metadata"]["labels"].get("dynamem.io/migration") == "true", m
            assert m["spec"]["addedNodeSelector"] == {HOSTNAME_LABEL: node}, m
        assert self.vmi(name)["status"]["nodeName"] == node
        assert done

    def grown_by_migration(self, name: str, timeout: float = 90.0) -> list[Mapping[str, Any]]:
        """Wait until the guest is above 1 GiB, carried there by a migration that succeeded; returns the
        migrations that succeeded (the operator's log with the migrations if it does not happen)."""

        def moved() -> list[Mapping[str, Any]] | None:
            done = [m for m in self.migrations() if m.get("status", {}).get("phase") == "Succeeded"]
            return done if (self.has(name) or 0) > GI and done else None

        try:
            return wait_until(f"{name} grown by a migration", moved, timeout=timeout, every=0.5)
        except AssertionError:
            logs = self.log_tail(6000)
            raise AssertionError(f"not grown: {self.migrations()}\n{logs}") from None

    def vmm(self, name: str) -> Mapping[str, Any]:
        return self.custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
            "dynamem.io", "v1alpha1", self.namespace, "virtualmachinememories", name
        )

    def watch_vmm(
        self, name: str, since: str, check: Callable[[Mapping[str, Any]], bool], timeout: float
    ) -> Mapping[str, Any]:
        """The first version of VirtualMachineMemory ``name`` after resourceVersion ``since`` that passes
        ``check``, from a watch: every write is seen, also a state that lasts less than a poll."""
        stream = k8s_watch.Watch()
        last: Mapping[str, Any] | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in stream.stream(
                self.custom.list_namespaced_custom_object,
                "dynamem.io",
                "v1alpha1",
                self.namespace,
                "virtualmachinememories",
                field_selector=f"metadata.name={name}",
                resource_version=since,
                timeout_seconds=max(1, int(deadline - time.monotonic())),
            ):
                last = event["object"]
                since = last["metadata"]["resourceVersion"]
                if check(last):
                    stream.stop()
                    return last
        status = last.get("status") if last is not None else None
        raise AssertionError(f"timed out after {timeout:.0f}s watching {name}; last status seen: {status!r}")

    def guest(self, name: str) -> int | None:
        """memory.guest of the VM (what dynamem asked for)."""
        memory = self.vm(name)["spec"]["template"]["spec"]["domain"].get("memory", {})
        return quantity_bytes(memory.get("guest"))

    def has(self, name: str) -> int | None:
        """What the simulated guest has now."""
        guest = self.sim.guest(self.namespace, name)
        return guest.current if guest is not None else None

    def set_demand(self, **demand: float) -> None:
        for name, gib in demand.items():
            self.sim.set_demand(self.namespace, name, int(gib * GI))

    def set_run_strategy(self, name: str, strategy: str) -> None:
        """Stop (``Halted``) or start (``Always``) a VM, as its owner would (``virtctl stop/start``)."""
        self.custom.patch_namespaced_custom_object(
            "kubevirt.io", "v1", self.namespace, "virtualmachines", name, {"spec": {"runStrategy": strategy}}
        )

    def check_kubevirt_invariants(self) -> None:
        """What KubeVirt guarantees, checked on the live cluster at this moment (call it often):

        - the launcher pods' memory requests on a node never exceed its allocatable memory (the scheduler's
          fit filter; migration targets and sources both count while a migration runs);
        - a guest's size changes only together with its node: every memory change is a move.
        """
        core = k8s_client.CoreV1Api(self.api)
        pods = core.list_namespaced_pod(self.namespace, label_selector="kubevirt.io=virt-launcher").items
        requested: dict[str, int] = {}
        for pod in pods:
            if pod.spec.node_name and pod.status.phase not in ("Succeeded", "Failed"):
                asked = quantity_bytes(pod.spec.containers[0].resources.requests.get("memory")) or 0
                requested[pod.spec.node_name] = requested.get(pod.spec.node_name, 0) + asked
        for node, total in requested.items():
            allocatable = quantity_bytes(core.read_node(node).status.allocatable["memory"]) or 0
            assert total <= allocatable, f"node {node}: launcher requests {total} > allocatable {allocatable}"
        for guest in self.sim.guests():
            if guest.key.namespace != self.namespace:
                continue
            before = self.placements.get(guest.key.name)
            now = (guest.node, guest.current)
            if before is not None and before[1] != now[1]:
                assert before[0] != now[0], f"{guest.key.name} changed size on {now[0]} without moving"
                self.moves.append((guest.key.name, before[0], now[0], before[1], now[1]))
            self.placements[guest.key.name] = now

    def settle_near(self, demand: Mapping[str, float], timeout: float = 150.0) -> dict[str, float]:
        """Wait until every named VM is near its demand (GiB) and has what dynamem asked for, checking
        KubeVirt's invariants on the way. Near: at least the demand, at most demand / 0.8 (the default
        buffer) plus 0.25 GiB, or its 1 GiB startup size when that is more."""

        def check() -> dict[str, float] | None:
            self.check_kubevirt_invariants()
            seen = {n: (self.has(n) or 0) / GI for n in demand}
            near = all(d <= seen[n] <= max(1.0, d / 0.8) + 0.25 for n, d in demand.items())
            settled = all(self.guest(n) == self.has(n) for n in demand)
            return seen if near and settled else None

        try:
            return wait_until(f"VMs near their demand {dict(demand)}", check, timeout=timeout, every=0.3)
        except AssertionError:
            logs = self.log_tail()
            raise AssertionError(
                f"not near {dict(demand)}: has {[(n, self.has(n)) for n in demand]}\n{logs}"
            ) from None

    def held_total(self) -> int:
        """Memory the node's guests hold: each at the larger of what it has and what it was asked for."""
        total = 0
        for guest in self.sim.guests():
            if guest.key.namespace == self.namespace:
                total += max(guest.current, self.guest(guest.key.name) or 0)
        return total

    def conditions(self, name: str) -> dict[str, str]:
        status = self.vmm(name).get("status", {})
        return {c["type"]: c["status"] for c in status.get("conditions", [])}

    def patch_vmm(self, name: str, spec: Mapping[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            "dynamem.io", "v1alpha1", self.namespace, "virtualmachinememories", name, {"spec": dict(spec)}
        )

    def events(self, name: str) -> list[Mapping[str, Any]]:
        found = self.custom.list_namespaced_custom_object("events.k8s.io", "v1", self.namespace, "events")
        return [e for e in found["items"] if e.get("regarding", {}).get("name") == name]

    def converge(
        self,
        expected: Mapping[str, float],
        timeout: float = 120.0,
        limit: int | None = None,
        tolerance: int = MI,
    ) -> None:
        """Wait until every named guest has the expected GiB, checking KubeVirt's invariants on the way
        (``limit``: the most all guests may hold at once, the scenario's total node memory by default)."""
        peak = 0
        limit = self.total_memory if limit is None else limit

        def check() -> dict[str, float] | None:
            nonlocal peak
            self.check_kubevirt_invariants()
            peak = max(peak, self.held_total())
            assert peak <= limit, f"guests over the cluster's memory: {peak / GI:.3f} GiB > {limit / GI} GiB"
            seen = {n: (self.has(n) or 0) / GI for n in expected}
            done = all(abs(seen[n] - expected[n]) <= tolerance / GI for n in expected)
            done = done and all(self.guest(n) == self.has(n) for n in expected)
            return seen if done else None

        try:
            wait_until(f"assignments {dict(expected)}", check, timeout=timeout, every=0.3)
        except AssertionError:
            logs = self.log_tail()
            raise AssertionError(
                f"not converged to {dict(expected)}: has {[(n, self.has(n)) for n in expected]}\n{logs}"
            ) from None

    def rounds(self) -> int:
        """Balancing rounds the operator's replicas ran so far (a standby runs none)."""
        return sum(int(o.gauge("dynamem_balance_rounds_total") or 0) for o in self.operators if o.alive())

    def reach(
        self,
        at_least: Mapping[str, float],
        timeout: float = 120.0,
        tolerance: int = MI,
        quiet_rounds: int = 3,
        quiet_s: float = 4.0,
    ) -> dict[str, int]:
        """Wait until every named guest has at least the given GiB and what dynamem asked for, and keeps it
        while the operator runs ``quiet_rounds`` rounds over at least ``quiet_s`` seconds (a few scrapes),
        checking KubeVirt's invariants on the way; returns what each has. The cluster plan grows a paging
        guest multiplicatively (its demand is unknown while it pages), so it may end above its demand's size;
        and the change that brings a guest to its demand may be followed by a grow for its buffer, decided
        once a sample of its new size shows its use: the first moment a guest reaches its demand is not yet
        where the operator leaves it."""
        quiet: tuple[dict[str, int], int, float] | None = None  # sizes, rounds and time when first seen

        def check() -> dict[str, int] | None:
            nonlocal quiet
            self.check_kubevirt_invariants()
            has = {n: self.has(n) or 0 for n in at_least}
            done = all(has[n] >= at_least[n] * GI - tolerance and self.guest(n) == has[n] for n in at_least)
            rounds = self.rounds()
            if not done or quiet is None or quiet[0] != has or rounds < quiet[1]:
                quiet = (has, rounds, time.monotonic()) if done else None
                return None
            still = rounds - quiet[1] >= quiet_rounds and time.monotonic() - quiet[2] >= quiet_s
            return has if still else None

        try:
            return wait_until(f"at least {dict(at_least)}, and kept", check, timeout=timeout, every=0.3)
        except AssertionError:
            raise AssertionError(f"not reached {dict(at_least)}: {self.diagnosis(at_least)}") from None

    def diagnosis(self, names: Iterable[str]) -> str:
        """For a failure: what each VM has, the moves so far, each VM's status reason, the operator's log."""
        names = list(names)
        logs = self.log_tail()
        return (
            f"has {[(n, self.has(n)) for n in names]}\n"
            f"moves (VM, from, to, before, after): {self.moves}\n{self.reasons(names)}\n{logs}"
        )

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the operator's log for a failure: dynamem's own lines (its changes and their reasons)
        but the rounds that wrote nothing, every warning and error, and tracebacks; a minute of quiet rounds
        and kopf's handler lines would push the changes out of the tail."""
        if self.operator is None:
            return ""
        lines = self.operator.logs().splitlines(keepends=True)
        return "".join(line for line in lines if _telling(line))[-chars:]

    def reasons(self, names: Iterable[str]) -> str:
        """Each VM's node, size and the reason its VirtualMachineMemory's status gives, for a failure."""
        lines = []
        for name in names:
            status = self.vmm(name).get("status", {})
            lines.append(f"{name}: {status.get('node')} {status.get('assigned')} {status.get('reason')}")
        return "\n".join(lines)
