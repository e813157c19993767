"""``dynamem demo``: the seed's workday, end to end, on a real local control plane, as KubeVirt plays it.

Starts etcd, kube-apiserver, kube-scheduler and kwok (the nodes' kubelet), and Prometheus on loopback;
the KubeVirt v1.7.0 stand-in with the seed's three (later four) VMs, starting on the first of three 8 GiB
nodes; and the operator as its own process. It plays the workday in accelerated time (15 minutes of the
seed in ``--step-seconds`` real seconds) and shows a live table of each VM's node, demand and memory. In
KubeVirt every memory change is a live migration to another node, so the VMs spread over the nodes as they
change; the chart (one panel per node) and the closing summary show where they went. It exits 0 when
KubeVirt's invariants held throughout: every change was a move to another node, the launcher pods' requests
never exceeded a node's allocatable memory, and every running VM ended the day with at least its demand (so
no guest pages) and at most its maximum. A VM may keep more than demand plus buffer: dynamem grows a paging
guest x1.5 per change (its demand is hidden while it pages) and gives memory back only after its use stayed
low for the shrink window (an hour), longer than the accelerated day.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from rich.console import Console
from rich.live import Live
from rich.table import Table

from dynamem.arguments import ArgumentParser, typed_number
from dynamem.kube.objects import GI, ObjectKey, dig, quantity_bytes
from dynamem.kubevirt_sim.controller import SimulatorOptions
from dynamem.kubevirt_sim.metrics import DemandFeed
from dynamem.kubevirt_sim.migrations import MigrationOptions
from dynamem.kubevirt_sim.runner import SimulatorRunner
from dynamem.sim.plot import PlotUnavailable, chart_problem, pyplot
from dynamem.sim.scenario import Scenario, parse_scenario
from dynamem.testing.controlplane import ControlPlane, free_port
from dynamem.testing.operator import OperatorProcess
from dynamem.testing.prometheus import Prometheus

NAMESPACE = "demo"
NODES = ("host-a", "host-b", "host-c")
NODE_GIB = 8
VMS = ("finance", "sales", "engineering", "service")
WORKDAY = {
    "step": "15m",
    "nodes": [{"name": node, "memory": f"{NODE_GIB}Gi"} for node in NODES],
    "vms": [{"name": name, "node": NODES[0], "startup": "1Gi", "maximum": "4Gi"} for name in VMS],
    "demand": {
        "finance": ["0.5Gi", "2.4Gi", "1.6Gi"],
        "sales": ["0.5Gi", "0.5Gi", "0.5Gi"],
        "engineering": ["0.5Gi", "1.6Gi", "2.8Gi"],
        "service": [None, None, "0.5Gi"],
    },
}
# What the seed (one Hyper-V host, in place) gives each VM at the end of each step, GiB: shown for comparison.
SEED = {
    0: {"finance": 1.0, "sales": 1.0, "engineering": 1.0},
    1: {"finance": 3.0, "sales": 1.0, "engineering": 2.0},
    2: {"finance": 2.0, "sales": 1.0, "engineering": 3.5, "service": 1.0},
}
STARTUP = GI
MAXIMUM = 4 * GI  # every VM of the workday


def served(size: int, demand: int) -> bool:
    """A VM ends a step served: it has at least what it uses (its guest does not page), within its maximum."""
    return demand <= size <= MAXIMUM


@dataclass
class Timeline:
    """Samples for the chart and the checks: seconds since start, per VM its node, memory and demand."""

    times: list[float] = field(default_factory=list)
    nodes: dict[str, list[str | None]] = field(default_factory=lambda: {n: [] for n in VMS})
    assigned: dict[str, list[float]] = field(default_factory=lambda: {n: [] for n in VMS})
    demand: dict[str, list[float]] = field(default_factory=lambda: {n: [] for n in VMS})
    placements: dict[str, tuple[str, int]] = field(default_factory=dict)
    moves: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def sample(self, t: float, sim: SimulatorRunner) -> dict[str, tuple[str | None, int, int | None]]:
        seen: dict[str, tuple[str | None, int, int | None]] = {}
        for name in VMS:
            guest = sim.guest(NAMESPACE, name)
            node = guest.node if guest is not None else None
            has = guest.current if guest is not None else 0
            want = sim.feed.demand(ObjectKey(NAMESPACE, name)) if guest is not None else None
            seen[name] = (node, has, want)
            self.nodes[name].append(node)
            self.assigned[name].append(has / GI)
            self.demand[name].append((want or 0) / GI)
            if node is not None:
                before = self.placements.get(name)
                if before is not None and before[1] != has:
                    if before[0] == node:
                        self.problems.append(f"{name} changed size on {node} without moving")
                    self.moves.append(
                        f"+{t:5.1f}s {name}: {before[0]} {before[1] / GI:g} GiB -> {node} {has / GI:g} GiB"
                    )
                self.placements[name] = (node, has)
        self.times.append(t)
        return seen

    def check_requests(self, cp: ControlPlane) -> None:
        """The scheduler's promise: launcher requests on a node never exceed its allocatable memory."""
        with cp.api_client() as api:
            core = client.CoreV1Api(api)
            nodes = [n.to_dict(serialize=True) for n in core.list_node().items]
            pods = [
                p.to_dict(serialize=True)
                for p in core.list_namespaced_pod(NAMESPACE, label_selector="kubevirt.io=virt-launcher").items
            ]
        allocatable = {
            str(dig(n, "metadata", "name")): quantity_bytes(dig(n, "status", "allocatable", "memory")) or 0
            for n in nodes
        }
        requested: dict[str, int] = {}
        for pod in pods:
            node = dig(pod, "spec", "nodeName")
            if node and dig(pod, "status", "phase") not in ("Succeeded", "Failed"):
                container = (dig(pod, "spec", "containers") or [{}])[0]
                asked = quantity_bytes(dig(container, "resources", "requests", "memory")) or 0
                requested[node] = requested.get(node, 0) + asked
        for node, total in requested.items():
            if total > allocatable.get(node, 0):
                self.problems.append(f"{node}: launcher requests {total / GI:.2f} GiB > allocatable")


def table(step: int, seen: dict[str, tuple[str | None, int, int | None]], statuses: dict[str, str]) -> Table:
    view = Table(
        title=f"dynamem demo: seed workday on KubeVirt, step {step} (+{15 * step} min), 3 x 8 GiB nodes"
    )
    for column in ("VM", "node", "demand", "memory", "pressure", "status"):
        view.add_column(column, justify="right" if column not in ("VM", "node") else "left")
    per_node: dict[str, int] = {}
    for name, (node, has, want) in seen.items():
        if not has or node is None:
            view.add_row(name, "-", "-", "-", "-", "Off")
            continue
        per_node[node] = per_node.get(node, 0) + has
        pressure = f"{round(100 * want / has)}%" if want else "-"
        demand = f"{want / GI:.2f} GiB" if want is not None else "-"
        view.add_row(name, node, demand, f"{has / GI:.2f} GiB", pressure, statuses.get(name, ""))
    for node in NODES:
        view.add_row(
            f"[bold]{node}[/]", "", "", f"[bold]{per_node.get(node, 0) / GI:.2f} of {NODE_GIB} GiB[/]"
        )
    return view


def plot(timeline: Timeline, path: Path, step_seconds: float) -> None:
    """One panel per node: the memory of the VMs running there, stacked, with their demand dotted."""
    plt = pyplot()
    minutes = [t / step_seconds * 15 for t in timeline.times]
    fig, axes = plt.subplots(1, len(NODES), figsize=(13, 4.2), sharey=True)
    for ax, node in zip(axes, NODES, strict=True):
        series = {
            name: [
                a if n == node else 0.0
                for a, n in zip(timeline.assigned[name], timeline.nodes[name], strict=True)
            ]
            for name in VMS
        }
        ax.stackplot(minutes, [series[n] for n in VMS], labels=VMS, alpha=0.85)
        bottoms = [0.0] * len(minutes)
        for name in VMS:
            here = [n == node for n in timeline.nodes[name]]
            tops = [
                b + (d if h else 0.0) for b, d, h in zip(bottoms, timeline.demand[name], here, strict=True)
            ]
            ax.plot(minutes, tops, color="black", linewidth=0.6, linestyle=":")
            bottoms = [b + v for b, v in zip(bottoms, series[name], strict=True)]
        ax.axhline(NODE_GIB, color="red", linestyle="--", linewidth=1)
        ax.set_title(node)
        ax.set_xlabel("workday minutes (accelerated)")
        ax.set_ylim(0, NODE_GIB + 1)
    axes[0].set_ylabel("GiB")
    axes[0].plot([], [], color="black", linewidth=0.6, linestyle=":", label="demand (in use)")
    axes[0].plot([], [], color="red", linestyle="--", linewidth=1, label=f"node memory ({NODE_GIB} GiB)")
    axes[0].legend(loc="upper left", fontsize=7, ncol=2)
    fig.suptitle("dynamem on KubeVirt (simulated): every memory change is a live migration to another node")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@contextlib.contextmanager
def stack(step_seconds: float, console: Console) -> Iterator[tuple[SimulatorRunner, ControlPlane, Scenario]]:
    scenario = parse_scenario(WORKDAY, "<seed workday>")
    with contextlib.ExitStack() as stop:
        console.print("starting etcd, kube-apiserver, kube-scheduler and kwok ...")
        cp = stop.enter_context(ControlPlane())
        console.print("starting Prometheus ...")
        prometheus = stop.enter_context(Prometheus(scrape_interval=1.0))
        with cp.api_client() as api:
            client.CoreV1Api(api).create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE))
            )
        console.print("starting the KubeVirt simulator and creating the VMs ...")
        sim = SimulatorRunner(
            cp.kubeconfig_path,
            SimulatorOptions(
                namespace=NAMESPACE,
                poll_s=0.2,
                migration=MigrationOptions(bandwidth=4 * GI, updater_delay_s=1.0),
            ),
            DemandFeed(speed=15 * 60 / step_seconds),
        )
        stop.callback(sim.stop)
        sim.start(scenario, NAMESPACE)
        prometheus.set_targets([sim.metrics_target])
        console.print("starting the operator (dynamem run) ...")
        operator = OperatorProcess(cp.kubeconfig_path, prometheus.url, NAMESPACE, metrics_port=free_port())
        stop.callback(operator.stop)
        operator.start()
        yield sim, cp, scenario


def vmm_statuses(cp: ControlPlane) -> dict[str, str]:
    with cp.api_client() as api:
        found = client.CustomObjectsApi(api).list_namespaced_custom_object(
            "dynamem.io", "v1alpha1", NAMESPACE, "virtualmachinememories"
        )
    items: list[dict[str, Any]] = found["items"] if isinstance(found, dict) else []
    return {i["metadata"]["name"]: i.get("status", {}).get("memoryStatus", "") for i in items}


def main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="dynamem demo", description=(__doc__ or "").replace("``", "`"))
    parser.add_argument("--out", default="demo.png", help="chart to write (default demo.png)")
    parser.add_argument(
        "--step-seconds", type=typed_number, default=25.0, help="real seconds per 15-minute step (default 25)"
    )
    parser.add_argument(
        "--settle-seconds",
        type=typed_number,
        default=90.0,
        help="after the last step, how long the VMs may take to reach their demand (default 90)",
    )
    args = parser.parse_args(argv)
    console = Console()
    problem = None
    if not (math.isfinite(args.step_seconds) and args.step_seconds > 0):
        problem = f"--step-seconds {args.step_seconds!r}: must be a number of seconds greater than 0"
    elif not (math.isfinite(args.settle_seconds) and args.settle_seconds >= 0):
        problem = f"--settle-seconds {args.settle_seconds!r}: must be a number of seconds, 0 or more"
    else:
        try:  # fail before starting anything if the chart cannot be drawn
            found = chart_problem(args.out)
        except PlotUnavailable as exc:
            found = str(exc)
        problem = None if found is None else f"--out {args.out!r}: {found}"
    if problem is not None:
        console.print(f"dynamem demo: {problem}", markup=False)
        return 2
    timeline = Timeline()
    ends: dict[int, dict[str, tuple[int, int | None]]] = {}
    with stack(args.step_seconds, console) as (sim, cp, scenario):
        started = sim.feed.started
        last_step = scenario.steps - 1
        statuses: dict[str, str] = {}
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                t = time.monotonic() - started
                step = min(sim.feed.step(), last_step)
                seen = timeline.sample(t, sim)
                timeline.check_requests(cp)
                if int(t * 2) % 2 == 0:
                    statuses = vmm_statuses(cp)
                live.update(table(step, seen, statuses))
                ends[step] = {n: (has, want) for n, (_, has, want) in seen.items() if has}
                if t > scenario.steps * args.step_seconds:
                    settled = all(served(has, want or 0) for has, want in ends[step].values())
                    if settled or t > scenario.steps * args.step_seconds + args.settle_seconds:
                        break
                time.sleep(0.5)
        migrations = sim.simulator.migrations if sim.simulator is not None else None
    console.print()
    plot(timeline, Path(args.out), args.step_seconds)
    console.print(f"chart written to {args.out}")
    console.print("where the VMs went (every change a live migration):")
    for move in timeline.moves:
        console.print(f"  {move}")
    if migrations is not None:
        console.print(f"migrations: {migrations.succeeded} succeeded, {migrations.failed} failed")
    ok = not timeline.problems and bool(timeline.moves)
    for problem in timeline.problems:
        console.print(f"[red]KubeVirt invariant broken: {problem}[/]")
    for step in sorted(ends):
        got = ends[step]
        near = all(served(has, want or 0) for has, want in got.values())
        shown = ", ".join(f"{n} {has / GI:.2f}" for n, (has, _) in got.items())
        seed = ", ".join(f"{n} {v:g}" for n, v in SEED.get(step, {}).items())
        verdict = "demand served" if near else "demand not yet served"
        console.print(f"end of step {step}: {shown} GiB ({verdict}; the seed, in place on one host: {seed})")
    final = ends[max(ends)] if ends else {}
    ended_near = bool(final) and all(served(has, want or 0) for has, want in final.values())
    console.print(
        f"end of the day: every VM {'has' if ended_near else 'does NOT have'} at least its demand "
        f"(no guest pages; at most its maximum, {MAXIMUM / GI:g} GiB)"
    )
    return 0 if ok and ended_near else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
