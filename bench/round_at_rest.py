"""One balancing round at rest, in process: N VMs on N/20 nodes, nothing to change, no API in the way.

The round's own cost (snapshot, policy, status triage, metrics) without the API server and Prometheus, which
``bench/operator_scale.py`` adds. It builds the bodies with the unit tests' builders, runs one round to write
every status, feeds the statuses back, then times five rounds that must write nothing: wall time, and the
CPU time of the median round (what the round costs whatever else the cores run).
The garbage collector is tuned as ``dynamem run`` tunes it (:mod:`dynamem.controller.gc_tuning`);
``--default-gc`` keeps CPython's defaults.
Run: ``.venv/bin/python bench/round_at_rest.py [N [POLICY]] [--default-gc]`` (default 10000, the operator's
default policy).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.unit.controller.builders_k8s import (
    FakeWriter,
    make_node_body,
    make_vm_body,
    make_vmi_body,
    make_vmm_body,
    observed,
)
from tests.unit.controller.test_balancer import NOW, OPTIONS, FakeDemand

from dynamem.controller.balancer import CLUSTER_POLICY, Balancer
from dynamem.controller.gc_tuning import tune_for_large_heap


async def main(n: int, policy: str) -> None:
    nodes = max(1, n // 20)
    vmms, vms, vmis = {}, [], []
    for i in range(n):
        name = f"vm{i}"
        body = make_vmm_body(name)
        body["metadata"].update(uid=f"u{i}", resourceVersion="1")
        vmms[name] = body
        vms.append(make_vm_body(name))
        vmis.append(make_vmi_body(name, node=f"node{i % nodes}"))
    node_bodies = [make_node_body(f"node{k}", allocatable="100Gi") for k in range(nodes)]
    writer = FakeWriter()
    demand = FakeDemand({f"vm{i}": 0.7 for i in range(n)})
    balancer = Balancer(
        writer, demand, replace(OPTIONS, status_writes_per_s=1e9, policy=policy), clock=lambda: NOW
    )
    await balancer.run_round(observed(vmms=vmms.values(), vms=vms, vmis=vmis, nodes=node_bodies))
    for name, status in writer.statuses:
        vmms[name]["status"] = status
        vmms[name]["metadata"]["resourceVersion"] = "2"
    world = observed(vmms=vmms.values(), vms=vms, vmis=vmis, nodes=node_bodies)
    times, cpu = [], []
    for _ in range(5):
        started, used = time.perf_counter(), time.process_time()
        result = await balancer.run_round(world)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - used)
        assert result.writes == 0, "a round at rest must write nothing"
    times.sort()
    low, mid, high = times[0], times[2], times[-1]
    cpu_mid = sorted(cpu)[2]
    print(
        f"round_at_rest: policy={policy} vms={n} nodes={nodes} "
        f"min_s={low:.2f} median_s={mid:.2f} max_s={high:.2f} cpu_median_s={cpu_mid:.2f} "
        f"load1={os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    if "--default-gc" not in sys.argv:
        tune_for_large_heap()  # as ``dynamem run`` does
    sys.argv = [a for a in sys.argv if a != "--default-gc"]
    asyncio.run(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 10_000,
            sys.argv[2] if len(sys.argv) > 2 else CLUSTER_POLICY,
        )
    )
