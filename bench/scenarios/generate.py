"""Seeded generator of realistic demand traces: the scenarios the policies are compared on.

The seed's workday shows the idea with three VMs; real nodes carry tens of guests whose memory use follows a
few recognisable shapes. Each generated scenario is one day in 15-minute steps on a few nodes, with VMs whose
settings are drawn like an operator would set them (startup 1-4 GiB, maximum 2-4x startup, buffer 10-30 %,
priorities low/medium/high), and demand following one shape per scenario:

- ``office``: diurnal load, quiet at night, ramps at 8:00, peaks around 13:00, gone by 19:00;
- ``batch``: a low base with bursts of 1-3 hours at random times (reports, builds, analysis jobs);
- ``leak``: slow leaks that grow until the service is restarted (demand falls back, a restart gap of null);
- ``steady``: a noisy steady state (a few percent of jitter around a level), plus late starts and early stops;
- ``mixed``: all of the above on the same nodes.

Every scenario has two or more nodes: on KubeVirt a running VM's memory changes only by a live migration to
another node, so a one-node scenario could change nothing (``generate`` refuses fewer than two). Nodes are
sized from the traces, not from any policy: the memory of a node is 95 % of the peak of the sum of
its VMs' demand (at least 110 % of their startup memory), so the busiest hours are tight and quiet hours are
loose, as on a consolidated host. Run ``python bench/scenarios/generate.py`` to rewrite the files; the seed
makes them reproducible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

import yaml

MI = 1 << 20
STEPS = 96  # one day in 15-minute steps
HERE = Path(__file__).resolve().parent

Shape = Callable[[random.Random, int, int], list[int | None]]


def _noise(rng: random.Random, value: float, percent: float) -> float:
    return value * (1 + rng.uniform(-percent, percent) / 100)


def office(rng: random.Random, base: int, peak: int) -> list[int | None]:
    start, end = rng.uniform(7.5, 9.0), rng.uniform(17.0, 19.0)
    out: list[int | None] = []
    for step in range(STEPS):
        hour = step / 4
        level = 0.0
        if start <= hour <= end:
            level = math.sin(math.pi * (hour - start) / (end - start)) ** 0.7
        out.append(int(_noise(rng, base + (peak - base) * level, 3)))
    return out


def batch(rng: random.Random, base: int, peak: int) -> list[int | None]:
    out = [base * 1.0] * STEPS
    for _ in range(rng.randint(1, 4)):
        at, length = rng.randrange(STEPS), rng.randint(4, 12)
        height = rng.uniform(0.5, 1.0) * (peak - base)
        for step in range(at, min(STEPS, at + length)):
            out[step] = base + height
    return [int(_noise(rng, v, 2)) for v in out]


def leak(rng: random.Random, base: int, peak: int) -> list[int | None]:
    out: list[int | None] = []
    level = base * rng.uniform(1.0, 1.5)
    rate = (peak - base) / rng.uniform(30, 80)
    down = 0
    for _ in range(STEPS):
        if down:
            out.append(None)
            down -= 1
            if not down:
                level = base
            continue
        out.append(int(_noise(rng, level, 1)))
        level += rate
        if level > peak:
            down = rng.randint(1, 2)  # restarted by its owner
    return out


def steady(rng: random.Random, base: int, peak: int) -> list[int | None]:
    level = rng.uniform(base, peak)
    out: list[int | None] = [int(_noise(rng, level, 5)) for _ in range(STEPS)]
    if rng.random() < 0.25:  # starts late
        late = rng.randint(8, 40)
        out[:late] = [None] * late
    if rng.random() < 0.15:  # stops early
        early = rng.randint(60, 90)
        out[early:] = [None] * (STEPS - early)
    return out


SHAPES: dict[str, list[Shape]] = {
    "office": [office],
    "batch": [batch],
    "leak": [leak],
    "steady": [steady],
    "mixed": [office, batch, leak, steady],
}


def generate(name: str, seed: int, nodes: int = 3, vms_per_node: int = 10) -> dict[str, object]:
    if nodes < 2:
        raise ValueError(f"nodes: {nodes}: a KubeVirt scenario needs two or more (a change is a migration)")
    rng = random.Random(f"{name}:{seed}")
    shapes = SHAPES[name]
    node_rows: list[dict[str, object]] = []
    vm_rows: list[dict[str, object]] = []
    demand: dict[str, list[str | None]] = {}
    for n in range(nodes):
        node = f"node-{n + 1}"
        totals = [0] * STEPS
        startups = 0
        for v in range(vms_per_node):
            vm = f"{name}-{n + 1}-{v + 1:02d}"
            startup = rng.choice([1, 1, 2, 2, 4]) * 1024
            maximum = startup * rng.choice([2, 3, 4])
            row: dict[str, object] = {
                "name": vm,
                "node": node,
                "startup": f"{startup}Mi",
                "maximum": f"{maximum}Mi",
            }
            if rng.random() < 0.3:
                row["minimum"] = f"{startup // 2}Mi"
            row["buffer"] = rng.choice([10, 20, 20, 20, 30])
            row["priority"] = rng.choice(["low", "medium", "medium", "high"])
            base = int(startup * rng.uniform(0.3, 0.7)) * MI
            peak = int(maximum * rng.uniform(0.45, 0.8)) * MI
            series = shapes[(n * vms_per_node + v) % len(shapes)](rng, base, peak)
            startups += startup * MI
            for step, value in enumerate(series):
                totals[step] += value or 0
            vm_rows.append(row)
            demand[vm] = [None if value is None else f"{max(1, value // MI)}Mi" for value in series]
        memory = max(int(max(totals) * 0.95), int(startups * 1.1))
        node_rows.append({"name": node, "memory": f"{-(-memory // (1 << 30))}Gi"})
    return {
        "description": f"generated '{name}' day, seed {seed}: {nodes} nodes x {vms_per_node} VMs, 15m steps",
        "step": "15m",
        "nodes": node_rows,
        "vms": vm_rows,
        "demand": demand,
    }


def main() -> None:
    for name in SHAPES:
        data = generate(name, seed=1)
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=200)
        (HERE / f"{name}.yaml").write_text(
            f"# Generated by bench/scenarios/generate.py; do not edit.\n{text}"
        )
        print(f"wrote {name}.yaml")


if __name__ == "__main__":
    main()
