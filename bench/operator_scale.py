"""The operator at scale: 10,000 VMs on 500 nodes, local control plane, demand wobbling +-1 % per scrape.

The objects are created straight in the real kube-apiserver (Nodes, VirtualMachines, running
VirtualMachineInstances with KubeVirt's status, VirtualMachineMemories); a small exporter serves KubeVirt's
guest memory series for every VM (Prometheus' text format written directly, 0.08 s of CPU a scrape: it shares
the cores the operator is measured on, which virt-handlers on 500 other nodes would not), each scrape moving
every VM's demand by up to +-1 % around its own level;
Prometheus (the Debian package) scrapes it; the operator runs as its own process (``dynamem run``).

After a warm-up (the first status of every VirtualMachineMemory), it watches the operator's own /metrics for
``--minutes`` and prints, from each round's change of ``dynamem_balance_duration_seconds`` and
``dynamem_api_writes_total``:

    scale: vms=10000 nodes=500 round_p50_s=... round_p99_s=... writes_per_round=... status_writes_per_min=...
    rss_mib=... cpu_s_per_round=... load1=...

Demand is read ahead of each round (:mod:`dynamem.controller.demand_ahead`); a round that finds no fresh
reading waits for one, and that wait is in its duration. ``demand: reads=... read_mean_s=...
rounds_waited=W/N`` says how many readings were taken, how long one took, and how many rounds waited.

``cpu_s_per_round`` is the operator's own CPU time (all of it, kopf's watches and /metrics included) per
round, and ``load1`` the machine's load: on a machine shared with other work a round's wall time is longer
than its CPU time.

Then ``--changes`` VMs start paging (KubeVirt's "short of memory" signal: little usable memory, swap-in and
major faults climbing), which the cluster plan answers with a grow each, and it prints how many memory writes
followed, against that count: ``changes: planned=N written=M``. (Demand merely rising above the buffer is
not enough: the plan does not grow a VM for buffer alone when each change is a live migration.)

Goals (issue 10): round p99 < 1 s, memory writes at rest 0 (= the plan's changes), status writes under 2 % of
the VMs per minute while demand only wobbles, operator RSS < 1 GiB.
Run: ``.venv/bin/python bench/operator_scale.py [--vms 10000 --nodes 500 --minutes 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import sys
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from kubernetes.aio import client as aio_client
from kubernetes.aio import config as aio_config

from dynamem.kube.objects import GI, MI
from dynamem.testing.controlplane import ControlPlane, free_port
from dynamem.testing.operator import OperatorProcess
from dynamem.testing.prometheus import Prometheus

NAMESPACE = "scale"
SCRAPE_S = 10.0
INTERVAL_S = 10.0


_SERIES = (
    # (name, help, type): KubeVirt exports swap traffic as a gauge that only grows, the faults as a counter
    ("kubevirt_vmi_memory_available_bytes", "guest memory", "gauge"),
    ("kubevirt_vmi_memory_usable_bytes", "MemAvailable", "gauge"),
    ("kubevirt_vmi_memory_swap_in_traffic_bytes", "swapped in", "gauge"),
    ("kubevirt_vmi_memory_pgmajfault", "major page faults", "counter"),
)


class WobblingGuests:
    """KubeVirt's memory series per VM; every scrape moves each demand by up to +-1 %.

    A guest made to page (:meth:`page`) shows what KubeVirt's "short of memory" alert reads: under 5 % of its
    memory usable, and swap-in traffic and major faults climbing (4 MiB/s, 20/s).

    It stands in for 500 virt-handlers, which in a cluster run on 500 other nodes; here it shares the two
    cores the operator is measured on, so it writes Prometheus' text format itself, each VM's labels formatted
    once: prometheus_client's ``generate_latest`` took 0.4 to 0.8 s of CPU for each scrape of these 40,000
    samples, and a round that met a scrape was slowed by it.
    """

    def __init__(self, vms: list[tuple[str, str]], seed: int = 10) -> None:
        self.rng = random.Random(seed)
        self.vms = vms  # (name, node)
        self.size = {name: GI for name, _ in vms}
        self.level = {name: self.rng.uniform(600, 800) * MI for name, _ in vms}
        self.paging: dict[str, float] = {}  # name -> when it started paging (monotonic)
        self.lock = threading.Lock()
        self.labels = {name: f'{{node="{node}",namespace="{NAMESPACE}",name="{name}"}}' for name, node in vms}

    def page(self, names: Iterable[str]) -> None:
        with self.lock:
            for name in names:
                self.paging[name] = time.monotonic()

    def exposition(self) -> bytes:
        """Every VM's four samples now, in Prometheus' text format (0.0.4)."""
        # a counter's samples, HELP and TYPE are named with _total, as prometheus_client writes them
        sample = [n + ("_total" if t == "counter" else "") for n, _, t in _SERIES]
        lines = [[f"# HELP {n} {h}", f"# TYPE {n} {t}"] for n, (_, h, t) in zip(sample, _SERIES, strict=True)]
        now = time.monotonic()
        with self.lock:
            for name, _ in self.vms:
                size, since = self.size[name], self.paging.get(name)
                if since is None:
                    used = min(self.level[name] * self.rng.uniform(0.99, 1.01), size - 64 * MI)
                    paged = 0.0
                else:
                    used = size - 20 * MI
                    paged = now - since
                labels = self.labels[name]
                lines[0].append(f"{sample[0]}{labels} {size}")
                lines[1].append(f"{sample[1]}{labels} {size - used}")
                lines[2].append(f"{sample[2]}{labels} {paged * 4 * MI}")
                lines[3].append(f"{sample[3]}{labels} {paged * 20}")
        return ("\n".join("\n".join(family) for family in lines) + "\n").encode()

    def serve(self, port: int) -> None:
        """Serve :meth:`exposition` at any path on 127.0.0.1:``port``, from a thread."""
        guests = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = guests.exposition()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True, name="exporter").start()


def node_body(name: str, memory: str) -> dict[str, Any]:
    resources = {"memory": memory, "cpu": "64", "pods": "250"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        # kubevirt.io/schedulable: virt-handler's label, which every launcher pod (a migration target's too)
        # selects; without it no node may take a VM, and no change (each a migration) can be made
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "kubevirt.io/schedulable": "true"},
        },
        "status": {"capacity": resources, "allocatable": resources},
    }


def vm_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "runStrategy": "Always",
            "template": {"spec": {"domain": {"memory": {"guest": "1Gi", "maxGuest": "4Gi"}, "devices": {}}}},
        },
    }


def vmi_body(name: str, node: str) -> dict[str, Any]:
    """A running VMI, status and all: KubeVirt's VMI CRD has no status subresource (virt-handler writes the
    whole object), so one create sets it."""
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"domain": {"memory": {"guest": "1Gi", "maxGuest": "4Gi"}, "devices": {}}},
        "status": {
            "phase": "Running",
            "nodeName": node,
            "memory": {"guestAtBoot": "1Gi", "guestCurrent": "1Gi", "guestRequested": "1Gi"},
            "conditions": [{"type": "LiveMigratable", "status": "True"}],
        },
    }


def vmm_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "dynamem.io/v1alpha1",
        "kind": "VirtualMachineMemory",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"startup": "1Gi", "maximum": "4Gi", "buffer": 20},
    }


async def populate(kubeconfig: Path, vms: list[tuple[str, str]], nodes: list[str], per_node_gi: int) -> float:
    """Create everything with a few dozen requests in flight, three per VM; returns the seconds it took."""
    configuration = aio_client.Configuration()
    await aio_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = 64
    api = aio_client.ApiClient(configuration)
    core = aio_client.CoreV1Api(api)
    custom = aio_client.CustomObjectsApi(api)
    semaphore = asyncio.Semaphore(48)
    started = time.monotonic()

    async def limited(coro: Any) -> None:
        async with semaphore:
            await coro

    await core.create_namespace({"metadata": {"name": NAMESPACE}})
    await asyncio.gather(*(limited(core.create_node(node_body(n, f"{per_node_gi}Gi"))) for n in nodes))

    async def one(name: str, node: str) -> None:
        await custom.create_namespaced_custom_object(
            "kubevirt.io", "v1", NAMESPACE, "virtualmachines", vm_body(name)
        )
        await custom.create_namespaced_custom_object(
            "kubevirt.io", "v1", NAMESPACE, "virtualmachineinstances", vmi_body(name, node)
        )
        await custom.create_namespaced_custom_object(
            "dynamem.io", "v1alpha1", NAMESPACE, "virtualmachinememories", vmm_body(name)
        )

    await asyncio.gather(*(limited(one(name, node)) for name, node in vms))
    await api.close()  # type: ignore[no-untyped-call]
    return time.monotonic() - started


class OperatorWatch:
    """Per-round figures from the operator's own /metrics, sampled often enough to see each round."""

    def __init__(self, operator: OperatorProcess) -> None:
        # only the round's counters: the 40,000 per-VM series are not made for a sample every second
        names = (
            "dynamem_balance_duration_seconds_sum",
            "dynamem_balance_duration_seconds_count",
            "dynamem_demand_read_duration_seconds_sum",
            "dynamem_demand_read_duration_seconds_count",
            "dynamem_demand_round_waits_total",
        )
        query = "&".join(f"name[]={n}" for n in (*names, "dynamem_api_writes_total"))
        self.url = f"http://127.0.0.1:{operator.metrics_port}/metrics?{query}"
        self.operator = operator

    def sample(self) -> dict[str, float]:
        text = httpx.get(self.url, timeout=30).text  # a busy operator serves /metrics slowly
        wanted = {
            "dynamem_balance_duration_seconds_sum": "sum",
            "dynamem_balance_duration_seconds_count": "rounds",
            'dynamem_api_writes_total{kind="memory"}': "memory",
            'dynamem_api_writes_total{kind="status"}': "status",
            "dynamem_demand_read_duration_seconds_sum": "read_sum",
            "dynamem_demand_read_duration_seconds_count": "reads",
            "dynamem_demand_round_waits_total": "waits",
        }
        found = {v: 0.0 for v in wanted.values()}
        for line in text.splitlines():
            for prefix, key in wanted.items():
                if line.startswith(prefix + " "):
                    found[key] = float(line.split()[-1])
        return found

    def rounds(self, seconds: float) -> list[dict[str, float]]:
        """Each round seen in ``seconds``: its duration and its writes."""
        found = []
        last = self.sample()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(1.0)
            try:
                now = self.sample()
            except httpx.HTTPError:
                continue
            if now["rounds"] > last["rounds"]:
                n = now["rounds"] - last["rounds"]
                found.append(
                    {
                        "duration": (now["sum"] - last["sum"]) / n,
                        "memory": now["memory"] - last["memory"],
                        "status": now["status"] - last["status"],
                        "n": n,
                        "reads": now["reads"] - last["reads"],
                        "read_s": now["read_sum"] - last["read_sum"],
                        "waits": now["waits"] - last["waits"],
                    }
                )
                last = now
        return found

    def cpu_s(self) -> float:
        """CPU seconds the operator has used (user + system): its own cost, whatever else the cores run."""
        assert self.operator.process is not None
        fields = Path(f"/proc/{self.operator.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        assert self.operator.process is not None
        for line in Path(f"/proc/{self.operator.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--status-writes-per-second", type=float, default=200.0, help="the operator's cap")
    args = parser.parse_args(argv)
    # SIGTERM (and SIGINT, ignored in a background job) unwinds: the operator, Prometheus and the control
    # plane are stopped by their context managers, not orphaned
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    per_node = max(1, args.vms // args.nodes)
    nodes = [f"node-{n:04d}" for n in range(args.nodes)]
    vms = [(f"vm-{i:05d}", nodes[i % args.nodes]) for i in range(args.vms)]

    with ControlPlane(start_timeout=120) as cp, Prometheus(scrape_interval=SCRAPE_S) as prom:
        took = asyncio.run(populate(cp.kubeconfig_path, vms, nodes, per_node * 4 + 8))
        print(
            f"created {args.vms} VMs, VMIs and VirtualMachineMemories on {args.nodes} nodes in {took:.0f}s",
            flush=True,
        )
        guests = WobblingGuests(vms)
        port = free_port()
        guests.serve(port)
        prom.set_targets([f"127.0.0.1:{port}"])
        prom.wait_for("count(kubevirt_vmi_memory_usable_bytes) > 0", timeout=60)
        operator = OperatorProcess(
            cp.kubeconfig_path,
            prom.url,
            NAMESPACE,
            "--log-level",
            "WARNING",
            "--status-writes-per-second",
            str(args.status_writes_per_second),
            interval=INTERVAL_S,
        ).start()
        try:
            watch = OperatorWatch(operator)
            deadline = time.monotonic() + 1800
            while time.monotonic() < deadline:  # warm-up: every status written once
                try:
                    rounds = watch.rounds(INTERVAL_S * 2.5)
                except httpx.HTTPError:
                    time.sleep(2)
                    continue
                if (
                    rounds
                    and all(r["status"] == 0 and r["memory"] == 0 for r in rounds[-2:])
                    and len(rounds) >= 2
                ):
                    break
            print(f"warm-up done after {1800 - (deadline - time.monotonic()):.0f}s", flush=True)
            cpu_before = watch.cpu_s()
            rounds = watch.rounds(args.minutes * 60)
            cpu_per_round = (watch.cpu_s() - cpu_before) / max(1, sum(r["n"] for r in rounds))
            durations = [r["duration"] for r in rounds]
            memory = sum(r["memory"] for r in rounds) / max(1, sum(r["n"] for r in rounds))
            status_per_min = sum(r["status"] for r in rounds) / args.minutes
            reads = sum(r["reads"] for r in rounds)
            read_s = sum(r["read_s"] for r in rounds) / max(1, reads)
            waited = sum(r["waits"] for r in rounds)
            print(
                f"scale: vms={args.vms} nodes={args.nodes} round_p50_s={statistics.median(durations):.3f} "
                f"round_p99_s={percentile(durations, 0.99):.3f} writes_per_round={memory:.2f} "
                f"status_writes_per_min={status_per_min:.1f} rss_mib={watch.rss_mib():.0f} "
                f"cpu_s_per_round={cpu_per_round:.3f} load1={os.getloadavg()[0]:.1f}",
                flush=True,
            )
            print(
                f"demand: reads={reads:.0f} read_mean_s={read_s:.3f} "
                f"rounds_waited={waited:.0f}/{sum(r['n'] for r in rounds):.0f}",
                flush=True,
            )
            jumped = [name for name, _ in vms[:: max(1, args.vms // args.changes)]][: args.changes]
            guests.page(jumped)  # paging: the cluster plan grows every one of them (a live migration each)
            after = watch.rounds(SCRAPE_S * 2 + INTERVAL_S * 3)
            written = sum(r["memory"] for r in after)
            print(f"changes: planned={len(jumped)} written={written:.0f}", flush=True)
        finally:
            operator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
