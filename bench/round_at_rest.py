"""One balancing round at rest, in process: N VMs on N/20 nodes, nothing to change, no API in the way.

The round's own cost (reading Prometheus' answers, snapshot, policy, status triage, metrics) without the API
server and a Prometheus server, which ``bench/operator_scale.py`` adds: demand is read by the operator's own
:class:`~dynamem.controller.demand.PrometheusDemand`, its seven queries answered in process with one sample
per VM each (as a Prometheus server answers them at rest: no paging, no rise), so decoding and reading those
answers is in the figures. It builds the bodies with the unit tests' builders and feeds them to the
operator's view (:class:`~dynamem.controller.view.ClusterView`) as kopf's events do, runs one round to write
every status, feeds the statuses back, then times five rounds that must write nothing, each from the making
of its view of the cluster, as the loop times it: wall time, and the CPU time of the median round (what the
round costs whatever else the cores run).
As the operator does, demand is read ahead of each round (:mod:`dynamem.controller.demand_ahead`): the
reading's CPU time is printed on its own (``read_cpu_median_s``), not in the round's; ``--read-in-round``
has each round read for itself, as rounds did before. The garbage collector is tuned as ``dynamem run``
tunes it (:mod:`dynamem.controller.gc_tuning`) and, as the operator's loop does, paused during each round
(collecting after it); ``--default-gc`` keeps CPython's defaults and collects during rounds.
``--pods``: every VMI has its launcher pod in the view (labels, node selector, requests of CPU, ephemeral
storage and KubeVirt's devices), as in a live cluster, so room in each of them and in pods, and the selector
each launcher passes on, are counted every round.
``--anti-affinity=K``: VMs in groups of K share an ``app`` label and have a required pod anti-affinity to it
on the hostname (HA pairs at K=2), so every round judges inter-pod affinity for every VM
(:mod:`dynamem.kube.pod_affinity`).
Run: ``.venv/bin/python bench/round_at_rest.py [N [POLICY]] [--default-gc] [--read-in-round]
[--anti-affinity K] [--pods]`` (default 10000, the operator's default policy).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from tests.unit.controller.builders_k8s import (
    NS,
    FakeWriter,
    make_node_body,
    make_vm_body,
    make_vmi_body,
    make_vmm_body,
)
from tests.unit.controller.test_balancer import NOW, OPTIONS

from dynamem.controller.balancer import CLUSTER_POLICY, Balancer
from dynamem.controller.demand import DEMAND_QUERY, PrometheusDemand, signal_queries
from dynamem.controller.demand_ahead import DemandAhead
from dynamem.controller.gc_tuning import collector_paused, tune_for_large_heap
from dynamem.controller.view import ClusterView, Kind
from dynamem.kube.objects import GI
from dynamem.kubevirt_sim.launcher import (
    DEVICES_PER_NODE,
    KVM_DEVICE,
    TUN_DEVICE,
    VHOST_NET_DEVICE,
    launcher_pod,
)


def prometheus_at_rest(names: list[str], namespace: str) -> httpx.MockTransport:
    """Answers to the operator's queries as Prometheus gives them at rest: 1 GiB guests using 0.7 GiB."""
    signals = signal_queries(OPTIONS.balance.shrink_window_s)
    used, size = int(0.7 * GI), GI
    values = {
        DEMAND_QUERY: used,
        signals["available"]: size,
        signals["usable"]: size - used,
        signals["used_peak"]: used,
    }

    def answer(value: int | None) -> bytes:
        result = (
            []
            if value is None
            else [
                {"metric": {"namespace": namespace, "name": n}, "value": [1795813322.09, str(value)]}
                for n in names
            ]
        )
        return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()

    bodies = {query: answer(value) for query, value in values.items()}
    empty = answer(None)  # the rates and the rise: only those above zero come back, none at rest
    return httpx.MockTransport(
        lambda request: httpx.Response(200, content=bodies.get(request.url.params["query"], empty))
    )


async def main(
    n: int,
    policy: str,
    *,
    pause_gc: bool = True,
    read_in_round: bool = False,
    anti_affinity: int = 0,
    pods: bool = False,
) -> None:
    nodes = max(1, n // 20)
    vmms, vms, vmis = {}, [], []
    pod_bodies: list[dict[str, Any]] = []
    for i in range(n):
        name = f"vm{i}"
        body = make_vmm_body(name)
        body["metadata"].update(uid=f"u{i}", resourceVersion="1")
        vmms[name] = body
        vms.append(make_vm_body(name))
        vmi = make_vmi_body(name, node=f"node{i % nodes}")
        if anti_affinity:
            app = {"app": f"app{i // anti_affinity}"}
            vmi["metadata"]["labels"] = app
            vmi["spec"]["affinity"] = {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": app}, "topologyKey": "kubernetes.io/hostname"}
                    ]
                }
            }
        vmis.append(vmi)
        if pods:  # its launcher pod, as KubeVirt renders it: the VMI's labels, selector and requests
            pod = launcher_pod(vmi, overhead=0, node_name=f"node{i % nodes}")
            resources = pod["spec"]["containers"][0]["resources"]
            resources["requests"] |= resources["limits"]  # the API server's defaulting of its device requests
            pod_bodies.append(pod)
    node_bodies = [make_node_body(f"node{k}", allocatable="100Gi") for k in range(nodes)]
    for node in node_bodies if pods else ():  # what virt-handler's device plugins and the kubelet report
        devices = {d: str(DEVICES_PER_NODE) for d in (KVM_DEVICE, TUN_DEVICE, VHOST_NET_DEVICE)}
        node["status"]["allocatable"] |= {"pods": "250", "ephemeral-storage": "100Gi", **devices}
    writer = FakeWriter()
    demand = PrometheusDemand(
        "http://prometheus.test",
        signals=signal_queries(OPTIONS.balance.shrink_window_s),
        transport=prometheus_at_rest([f"vm{i}" for i in range(n)], NS),
    )
    ahead = DemandAhead(demand, max_age_s=60.0)  # as the operator reads it: ahead of each round
    balancer = Balancer(
        writer,
        demand if read_in_round else ahead,
        replace(OPTIONS, status_writes_per_s=1e9, policy=policy),
        clock=lambda: NOW,
    )
    # the operator's view, fed as kopf feeds it (one event per object); each round reads it as the loop does
    view = ClusterView()
    for kind, bodies in (
        (Kind.VMM, vmms.values()),
        (Kind.VM, vms),
        (Kind.VMI, vmis),
        (Kind.NODE, node_bodies),
        (Kind.POD, pod_bodies),
    ):
        for body in bodies:
            view.apply_event(kind, "ADDED", body)
    await balancer.run_round(view.observed())
    for name, status in writer.statuses:
        vmms[name]["status"] = status
        vmms[name]["metadata"]["resourceVersion"] = "2"
        view.apply_event(Kind.VMM, "MODIFIED", vmms[name])
    times, cpu, reads = [], [], []
    for _ in range(5):
        if not read_in_round:  # the reading the round will use, read ahead of it (not timed as the round)
            used = time.process_time()
            await ahead.refresh()
            reads.append(time.process_time() - used)
        started, used = time.perf_counter(), time.process_time()
        with collector_paused() if pause_gc else contextlib.nullcontext():
            result = await balancer.run_round(view.observed(), started=started)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - used)
        assert result.writes == 0, "a round at rest must write nothing"
    times.sort()
    low, mid, high = times[0], times[2], times[-1]
    cpu_mid = sorted(cpu)[2]
    print(
        f"round_at_rest: policy={policy} vms={n} nodes={nodes} anti_affinity={anti_affinity} pods={pods} "
        f"min_s={low:.2f} median_s={mid:.2f} max_s={high:.2f} cpu_median_s={cpu_mid:.2f} "
        + (f"read_cpu_median_s={sorted(reads)[2]:.2f} " if reads else "demand=read_in_round ")
        + f"load1={os.getloadavg()[0]:.1f}"
    )


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/round_at_rest.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "vms", nargs="?", type=int, default=10_000, help="VMs, on VMS/20 nodes (default 10000)"
    )
    parser.add_argument("policy", nargs="?", default=CLUSTER_POLICY, help=f"default {CLUSTER_POLICY}")
    parser.add_argument("--default-gc", action="store_true", help="CPython's collector, collecting in rounds")
    parser.add_argument("--read-in-round", action="store_true", help="each round reads demand for itself")
    parser.add_argument(
        "--anti-affinity", type=int, default=0, metavar="K", help="VMs in anti-affine groups of K"
    )
    parser.add_argument("--pods", action="store_true", help="every VMI's launcher pod in the view")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = _arguments()
    if not arguments.default_gc:
        tune_for_large_heap()  # as ``dynamem run`` does
    asyncio.run(
        main(
            arguments.vms,
            arguments.policy,
            pause_gc=not arguments.default_gc,
            read_in_round=arguments.read_in_round,
            anti_affinity=arguments.anti_affinity,
            pods=arguments.pods,
        )
    )
