"""How fast the operator reacts, at scale, on the real local control plane.

1,000 VMs on 50 nodes (20 per node, 1 GiB each, up to 4 GiB) are created by the KubeVirt simulator; the
operator runs as its own process (`dynamem run`, balancing every second) with Prometheus scraping the
simulated guests every second per 200 VMs (`--scrape-interval`: the simulator's exporter serves every VM's
KubeVirt series from this process, 1.3 MB at 1,000 VMs, and a scrape that outlasts its interval fails, leaving
every demand unknown). Once everything is settled, demand steps up on a batch of VMs spread over the
nodes, several times. For each VM it measures the time from the moment Prometheus answers with the new demand
to the moment the VM's memory.guest is patched, and prints p50 and p99. It also counts the operator's API
writes per round while nothing needs to change (from the operator's own /metrics), which must be zero.

The clock starts when Prometheus answers with the new demand, so the scrape interval is not in the figures;
the operator's migration budget is the batch size (KubeVirt's default, 5, would make most of a batch wait for
the simulator's migrations to finish).
Goal: p99 under 2 s; zero writes when nothing changes.
Run: `.venv/bin/python bench/operator_latency.py [--vms 1000 --nodes 50 --batches 5 --batch 20]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import httpx
from kubernetes import client

from dynamem.kube.objects import GI, quantity_bytes
from dynamem.kubevirt_sim.controller import SimulatorOptions
from dynamem.kubevirt_sim.metrics import DemandFeed
from dynamem.kubevirt_sim.migrations import MigrationOptions
from dynamem.kubevirt_sim.runner import SimulatorRunner
from dynamem.sim.scenario import parse_scenario
from dynamem.testing.controlplane import ControlPlane
from dynamem.testing.operator import OperatorProcess
from dynamem.testing.prometheus import Prometheus

NAMESPACE = "latency"
USED = "max by (name) (kubevirt_vmi_memory_available_bytes - kubevirt_vmi_memory_usable_bytes)"


def scenario(vms: int, nodes: int) -> Any:
    per_node = vms // nodes
    names = [f"vm-{n:03d}-{i:02d}" for n in range(nodes) for i in range(per_node)]
    return parse_scenario(
        {
            "step": "1h",
            "nodes": [{"name": f"node-{n:03d}", "memory": f"{per_node * 2}Gi"} for n in range(nodes)],
            "vms": [
                {"name": name, "node": f"node-{name[3:6]}", "startup": "1Gi", "maximum": "4Gi"}
                for name in names
            ],
            "demand": {name: ["512Mi"] for name in names},
        }
    )


def guests(custom: client.CustomObjectsApi) -> dict[str, int | None]:
    found = custom.list_namespaced_custom_object("kubevirt.io", "v1", NAMESPACE, "virtualmachines")
    return {
        vm["metadata"]["name"]: quantity_bytes(
            vm["spec"]["template"]["spec"]["domain"]["memory"].get("guest")
        )
        for vm in found["items"]
    }


def guest_of(custom: client.CustomObjectsApi, name: str) -> int | None:
    vm: Any = custom.get_namespaced_custom_object("kubevirt.io", "v1", NAMESPACE, "virtualmachines", name)
    return quantity_bytes(vm["spec"]["template"]["spec"]["domain"]["memory"].get("guest"))


def migrations_done(custom: client.CustomObjectsApi, names: list[str], timeout: float) -> float:
    """Wait until every VirtualMachineInstanceMigration is Succeeded or Failed and each of ``names`` runs at
    the memory its VM asks for (the operator makes a change's migration a round or two after its write);
    returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        found: Any = custom.list_namespaced_custom_object(
            "kubevirt.io", "v1", NAMESPACE, "virtualmachineinstancemigrations"
        )
        phases = [(m.get("status") or {}).get("phase") for m in found["items"]]
        if all(phase in {"Succeeded", "Failed"} for phase in phases) and all(
            guest_of(custom, name) == current_of(custom, name) for name in names
        ):
            break
        time.sleep(1)
    return time.monotonic() - started


def current_of(custom: client.CustomObjectsApi, name: str) -> int | None:
    vmi: Any = custom.get_namespaced_custom_object(
        "kubevirt.io", "v1", NAMESPACE, "virtualmachineinstances", name
    )
    return quantity_bytes(((vmi.get("status") or {}).get("memory") or {}).get("guestCurrent"))


def operator_counter(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--scrape-interval", type=float, default=None, help="seconds; default 1 per 200 VMs")
    args = parser.parse_args()
    scrape_s = args.scrape_interval or max(1.0, args.vms / 200)
    world = scenario(args.vms, args.nodes)
    started = time.monotonic()
    with ControlPlane() as cp, Prometheus(scrape_interval=scrape_s) as prom:
        with cp.api_client() as api:
            client.CoreV1Api(api).create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE))
            )
        sim = SimulatorRunner(
            cp.kubeconfig_path,
            SimulatorOptions(
                namespace=NAMESPACE,
                poll_s=0.5,
                migration=MigrationOptions(bandwidth=8 * GI, updater_delay_s=0.5),
            ),
            DemandFeed(speed=0.0),
        )
        operator: OperatorProcess | None = None
        try:
            sim.start(world, NAMESPACE)
            prom.set_targets([sim.metrics_target])
            while len(sim.guests()) < args.vms:
                time.sleep(1)
            print(f"{args.vms} VMs running on {args.nodes} nodes after {time.monotonic() - started:.0f}s")
            prom.wait_for(f"count(kubevirt_vmi_memory_available_bytes) == {args.vms}", timeout=60)
            # The first round writes every VirtualMachineMemory's status once; a high cap lets that go quickly
            # (the default, 20/s, is for a cluster at rest), so the measurement starts on a settled operator.
            # KubeVirt's default budget is 5 migrations in the cluster at once (parallelMigrationsPerCluster),
            # and every change is a migration: a batch larger than that would wait for the simulator's
            # migrations, not for the operator. The budget is the batch, so every VM of a batch is timed.
            operator = OperatorProcess(
                cp.kubeconfig_path,
                prom.url,
                NAMESPACE,
                "--status-writes-per-second",
                "500",
                "--max-parallel-migrations",
                str(args.batch),
                interval=1.0,
            ).start()
            api = cp.api_client()
            custom = client.CustomObjectsApi(api)
            port = operator.metrics_port

            def settled_writes(seconds: float) -> tuple[float, float]:
                w0 = operator_counter(port, "dynamem_api_writes_total")
                r0 = operator_counter(port, "dynamem_balance_rounds_total")
                time.sleep(seconds)
                w1 = operator_counter(port, "dynamem_api_writes_total")
                r1 = operator_counter(port, "dynamem_balance_rounds_total")
                return w1 - w0, r1 - r0

            # First rounds write every VMM's status once; wait until a round writes nothing.
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                try:
                    writes, rounds = settled_writes(3)
                except httpx.HTTPError:
                    continue
                if rounds >= 1 and writes == 0:
                    break
            writes, rounds = settled_writes(10)
            per_round = writes / max(rounds, 1)
            print(f"settled: {writes:.0f} API writes in {rounds:.0f} rounds ({per_round:.2f} per round)")

            names = sorted(guests(custom))
            latencies: list[float] = []
            for batch in range(args.batches):
                chosen = names[batch :: max(1, len(names) // args.batch)][: args.batch]
                before = guests(custom)
                for name in chosen:
                    sim.set_demand(NAMESPACE, name, int(2.4 * GI))
                visible: dict[str, float] = {}
                patched: dict[str, float] = {}
                deadline = time.monotonic() + 60
                while len(patched) < len(chosen) and time.monotonic() < deadline:
                    now = time.monotonic()
                    for sample in prom.query(f"{USED} > {0.6 * GI:.0f}"):
                        name = sample.labels.get("name", "")
                        if name in chosen and name not in visible:
                            visible[name] = now
                    # one GET per VM still waiting, not a LIST of every VM: this process also serves the
                    # guests' metrics, and a scrape that outlasts its interval fails
                    for name in chosen:
                        if name not in patched and guest_of(custom, name) != before[name]:
                            patched[name] = time.monotonic()
                    time.sleep(0.1)
                batch_latency = [patched[n] - visible[n] for n in chosen if n in patched and n in visible]
                latencies += batch_latency
                median = f"{statistics.median(batch_latency):.2f}s" if batch_latency else "-"
                print(f"batch {batch}: {len(batch_latency)}/{len(chosen)} patched, median {median}")
                for name in chosen:  # back to rest, and let it settle before the next batch
                    sim.set_demand(NAMESPACE, name, GI // 2)
                # this batch's migrations run in the simulator (tens of seconds each on a busy machine): the
                # next batch starts once they are done, or it would time the simulator, not the operator
                settled = migrations_done(custom, chosen, timeout=300)
                print(f"batch {batch}: migrations done after {settled:.0f}s", flush=True)
                time.sleep(8)
            api.close()
        finally:
            if operator is not None:
                operator.stop()
            sim.stop()
    if not latencies:
        print("operator_latency: no VM was patched within 60 s of its new demand")
        return 1
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(
        f"samples {len(latencies)}: p50 {p50:.2f}s p99 {p99:.2f}s "
        f"(scrape interval {scrape_s:g}s, balancing interval 1s, load1 {os.getloadavg()[0]:.1f})"
    )
    per_round = writes / max(rounds, 1)
    print(
        f"operator_latency: vms={args.vms} nodes={args.nodes} p50_s={p50:.3f} p99_s={p99:.3f} "
        f"settled_writes_per_round={per_round:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
