"""``dynamem demo``: the seed's workday, end to end, on a real local control plane.

Starts etcd + kube-apiserver and Prometheus on loopback, the KubeVirt simulator with the seed's three (later
four) VMs on an 8 GiB node, and the operator as its own process; plays the workday in accelerated time
(15 minutes of the seed in ``--step-seconds`` real seconds), shows a live table of each VM's demand and
memory, writes a chart, stops everything and exits 0 when the assignments came out as the seed tells:
3/1/2 GiB after 15 minutes, 2/1/3.5/1 GiB after 30, never more than the node's 8 GiB.
"""

from __future__ import annotations

import argparse
import contextlib
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

from dynamem.kube.objects import GI, ObjectKey
from dynamem.kubevirt_sim.controller import SimulatorOptions
from dynamem.kubevirt_sim.metrics import DemandFeed
from dynamem.kubevirt_sim.migrations import MigrationOptions
from dynamem.kubevirt_sim.runner import SimulatorRunner
from dynamem.sim.plot import PlotUnavailable, pyplot
from dynamem.sim.scenario import Scenario, parse_scenario
from dynamem.testing.controlplane import ControlPlane, free_port
from dynamem.testing.operator import OperatorProcess
from dynamem.testing.prometheus import Prometheus

NAMESPACE = "demo"
NODE = "host"
VMS = ("finance", "sales", "engineering", "service")
WORKDAY = {
    "step": "15m",
    "nodes": [{"name": NODE, "memory": "8Gi"}],
    "vms": [{"name": name, "node": NODE, "startup": "1Gi", "maximum": "4Gi"} for name in VMS],
    "demand": {
        "finance": ["0.5Gi", "2.4Gi", "1.6Gi"],
        "sales": ["0.5Gi", "0.5Gi", "0.5Gi"],
        "engineering": ["0.5Gi", "1.6Gi", "2.8Gi"],
        "service": [None, None, "0.5Gi"],
    },
}
SEED = {  # what the seed says each VM has at the end of each step, GiB
    0: {"finance": 1.0, "sales": 1.0, "engineering": 1.0},
    1: {"finance": 3.0, "sales": 1.0, "engineering": 2.0},
    2: {"finance": 2.0, "sales": 1.0, "engineering": 3.5, "service": 1.0},
}


@dataclass
class Timeline:
    """Samples for the chart: seconds since start, per VM assigned and demand bytes."""

    times: list[float] = field(default_factory=list)
    assigned: dict[str, list[float]] = field(default_factory=lambda: {n: [] for n in VMS})
    demand: dict[str, list[float]] = field(default_factory=lambda: {n: [] for n in VMS})
    peak: int = 0

    def sample(self, t: float, sim: SimulatorRunner) -> dict[str, tuple[int, int | None]]:
        seen: dict[str, tuple[int, int | None]] = {}
        total = 0
        for name in VMS:
            guest = sim.guest(NAMESPACE, name)
            has = guest.current if guest is not None else 0
            want = sim.feed.demand(ObjectKey(NAMESPACE, name)) if guest is not None else None
            seen[name] = (has, want)
            total += has
            self.assigned[name].append(has / GI)
            self.demand[name].append((want or 0) / GI)
        self.times.append(t)
        self.peak = max(self.peak, total)
        return seen


def table(step: int, seen: dict[str, tuple[int, int | None]], statuses: dict[str, str]) -> Table:
    view = Table(title=f"dynamem demo: seed workday, step {step} (+{15 * step} min), node {NODE} 8 GiB")
    for column in ("VM", "demand", "memory", "pressure", "status"):
        view.add_column(column, justify="right" if column != "VM" else "left")
    total = 0
    for name, (has, want) in seen.items():
        total += has
        if not has:
            view.add_row(name, "-", "-", "-", "Off")
            continue
        pressure = f"{round(100 * want / has)}%" if want else "-"
        demand = f"{want / GI:.2f} GiB" if want is not None else "-"
        view.add_row(name, demand, f"{has / GI:.2f} GiB", pressure, statuses.get(name, ""))
    view.add_row("[bold]node[/]", "", f"[bold]{total / GI:.2f} of 8 GiB[/]", "", "")
    return view


def plot(timeline: Timeline, path: Path, step_seconds: float) -> None:
    plt = pyplot()

    minutes = [t / step_seconds * 15 for t in timeline.times]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = list(VMS)
    ax.stackplot(minutes, [timeline.assigned[n] for n in names], labels=names, alpha=0.85)
    bottoms = [0.0] * len(minutes)
    for name in names:
        tops = [b + d for b, d in zip(bottoms, timeline.demand[name], strict=True)]
        ax.plot(minutes, tops, color="black", linewidth=0.8, linestyle=":")
        bottoms = [b + a for b, a in zip(bottoms, timeline.assigned[name], strict=True)]
    ax.plot([], [], color="black", linewidth=0.8, linestyle=":", label="demand (in use)")
    ax.axhline(8, color="red", linestyle="--", linewidth=1, label="node memory (8 GiB)")
    ax.set_xlabel("workday minutes (accelerated)")
    ax.set_ylabel("GiB")
    ax.set_ylim(0, 9)
    ax.set_title("dynamem on KubeVirt (simulated): each VM's memory, stacked, with its demand")
    ax.legend(loc="upper left", fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@contextlib.contextmanager
def stack(step_seconds: float, console: Console) -> Iterator[tuple[SimulatorRunner, ControlPlane, Scenario]]:
    scenario = parse_scenario(WORKDAY, "<seed workday>")
    with contextlib.ExitStack() as stop:
        console.print("starting etcd + kube-apiserver ...")
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
    parser = argparse.ArgumentParser(prog="dynamem demo", description=__doc__)
    parser.add_argument("--out", default="demo.png", help="chart to write (default demo.png)")
    parser.add_argument("--step-seconds", type=float, default=25.0, help="real seconds per 15-minute step")
    args = parser.parse_args(argv)
    console = Console()
    try:
        pyplot()  # fail before starting anything if the chart cannot be drawn
    except PlotUnavailable as exc:
        console.print(f"dynamem demo: {exc}")
        return 2
    timeline = Timeline()
    ends: dict[int, dict[str, float]] = {}
    with stack(args.step_seconds, console) as (sim, cp, scenario):
        started = sim.feed.started
        last_step = scenario.steps - 1
        statuses: dict[str, str] = {}
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                t = time.monotonic() - started
                step = min(sim.feed.step(), last_step)
                seen = timeline.sample(t, sim)
                if int(t * 2) % 2 == 0:
                    statuses = vmm_statuses(cp)
                live.update(table(step, seen, statuses))
                ends[step] = {n: has / GI for n, (has, _) in seen.items() if has}
                if t > scenario.steps * args.step_seconds:
                    break
                time.sleep(0.5)
    console.print()
    plot(timeline, Path(args.out), args.step_seconds)
    peak = timeline.peak / GI
    console.print(f"chart written to {args.out}; the node's guests held at most {peak:.2f} of 8 GiB")
    ok = timeline.peak <= 8 * GI
    for step, expected in SEED.items():
        got = ends.get(step, {})
        match = all(abs(got.get(n, 0) - v) < 0.01 for n, v in expected.items())
        ok = ok and match
        shown = ", ".join(f"{n} {got.get(n, 0):g}" for n in expected)
        console.print(f"step {step}: {shown} GiB {'= the seed' if match else '!= the seed ' + str(expected)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
