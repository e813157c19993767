"""Play the calibration scenarios on a real Linux guest under QEMU and score the guest model on them.

Each scenario boots a lab guest (``dynamem.testing.guest``), steers its workload and its virtio-mem size on a
schedule, and records the balloon driver's report once a second. With ``--record DIR`` the traces are written
there (``tests/fixtures/guest_traces`` holds the committed ones, made by this script); ``--fit`` prints the
constants fitted to the traces just played. Prints exactly one line:

  real-guest: boot_s=... grow_s=... memtotal_before_mib=... memtotal_after_mib=... swapin_bytes=...
  major_faults=... model_error_pct=...

then the migration of a paging guest (``migration: ...``). ``boot_s``: median boot to a listening workload;
``grow_s``: from setting virtio-mem's requested size to MemTotal showing it, in the resize scenario, whose
MemTotal before and after it reports; ``swapin_bytes``/``major_faults``: what the 3x guest paged in;
``model_error_pct``: the worst of the traces' errors for the default guest model (``TraceError.worst_pct``).

TCG is slow and CPU-heavy: one guest at a time, about six minutes in all on a busy two-core machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dynamem.sim.guest import DEFAULT_GUEST
from dynamem.sim.guest_traces import GuestTrace, TraceSample, fit, trace_error
from dynamem.testing.guest import BalloonStats, Guest, GuestSpec, build_image

MiB = 1 << 20
TOUCH_MIB_S = 32.0


@dataclass(frozen=True)
class Step:
    """At ``at_s``: tell the workload to hold ``demand_mib`` (at ``rate`` MiB/s), resize the guest to
    ``size_mib``, or migrate it (``migrate``)."""

    at_s: float
    demand_mib: int | None = None
    rate: float = 64.0
    size_mib: int | None = None
    migrate: bool = False


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    duration_s: float
    steps: list[Step]
    spec: GuestSpec = field(default_factory=lambda: GuestSpec(base_mib=512, max_mib=1536, swap_mib=2048))


SCENARIOS = [
    Scenario(
        "steady",
        "a 1 GiB guest holding 400 MiB",
        25,
        [Step(0, demand_mib=400, rate=128)],
        GuestSpec(base_mib=1024, max_mib=1536, swap_mib=1024),
    ),
    Scenario(
        "outgrow-1.5x",
        "a 512 MiB guest whose workload grows to 768 MiB (1.5x); migrated while it pages",
        45,
        [Step(0, demand_mib=768, rate=64), Step(32, migrate=True)],
    ),
    Scenario(
        "outgrow-3x",
        "a 512 MiB guest whose workload grows to 1536 MiB (3x)",
        70,
        [Step(0, demand_mib=1536, rate=128)],
    ),
    Scenario(
        "leak",
        "a 512 MiB guest whose workload leaks 10 MiB/s up to 640 MiB",
        55,
        [Step(0, demand_mib=640, rate=10)],
    ),
    Scenario(
        "resize",
        "a 512 MiB guest paging at 700 MiB grown to 1 GiB by virtio-mem, then, holding 300 MiB, shrunk back",
        66,
        [
            Step(0, demand_mib=700, rate=64),
            Step(22, size_mib=1024),
            Step(40, demand_mib=300, rate=128),
            Step(48, size_mib=512),
        ],
    ),
]


@dataclass(frozen=True)
class Played:
    trace: GuestTrace
    grow_s: float | None
    memtotal_before: int | None
    memtotal_after: int | None
    migrate_s: float | None


def _sample(t: float, demand: int, guest: Guest, stats: BalloonStats) -> TraceSample:
    def need(value: int | None, name: str) -> int:
        if value is None:
            raise RuntimeError(f"the guest did not report {name}")
        return value

    return TraceSample(
        t=round(t, 3),
        demand_mib=demand,
        held_mib=guest.held_mib,
        size_mib=guest.spec.base_mib + guest.plugged_bytes() // MiB,
        memtotal=need(stats.total, "stat-total-memory"),
        usable=need(stats.available, "stat-available-memory"),
        free=need(stats.free, "stat-free-memory"),
        cached=need(stats.disk_caches, "stat-disk-caches"),
        swap_in=need(stats.swap_in, "stat-swap-in"),
        swap_out=need(stats.swap_out, "stat-swap-out"),
        major_faults=need(stats.major_faults, "stat-major-faults"),
        minor_faults=need(stats.minor_faults, "stat-minor-faults"),
    )


def play(scenario: Scenario) -> Played:
    with Guest(scenario.spec) as guest:
        idle = guest.wait_stats(time.time())
        assert idle.total is not None and idle.available is not None
        idle_used = idle.total - idle.available
        grow_s: float | None = None
        memtotal_before: int | None = None
        memtotal_after: int | None = None
        migrate_s: float | None = None
        samples: list[TraceSample] = []
        events: list[str] = []
        pending = sorted(scenario.steps, key=lambda s: s.at_s)
        demand = 0
        resize_at: float | None = None
        resize_from = 0
        start = time.monotonic()
        last_update = 0.0
        while (now := time.monotonic() - start) < scenario.duration_s:
            while pending and pending[0].at_s <= now:
                step = pending.pop(0)
                if step.demand_mib is not None:
                    demand = step.demand_mib
                    guest.demand(demand, step.rate, TOUCH_MIB_S)
                    events.append(f"{now:.1f}s demand {demand} MiB at {step.rate:g} MiB/s")
                if step.size_mib is not None:
                    resize_from = guest.stats().total or 0
                    guest.resize(step.size_mib * MiB)
                    resize_at = time.monotonic()
                    events.append(f"{now:.1f}s resize to {step.size_mib} MiB")
                if step.migrate:
                    migrate_s = guest.migrate()
                    events.append(f"{now:.1f}s migrated in {migrate_s:.2f} s")
            stats = guest.stats()
            if stats.taken_at != last_update and stats.total is not None:
                last_update = stats.taken_at
                samples.append(_sample(now, demand, guest, stats))
                if resize_at is not None and stats.total > resize_from and grow_s is None:
                    grow_s = time.monotonic() - resize_at
                    memtotal_before, memtotal_after = resize_from, stats.total
                    resize_at = None
            time.sleep(0.2)
        figures = {"boot_s": round(guest.boot_s, 2)}
        if migrate_s is not None:
            figures["migrate_s"] = round(migrate_s, 3)
        if grow_s is not None:
            figures["grow_s"] = round(grow_s, 3)
        trace = GuestTrace(
            name=scenario.name,
            description=scenario.description,
            base_mib=scenario.spec.base_mib,
            max_mib=scenario.spec.max_mib,
            swap_mib=scenario.spec.swap_mib,
            touch_mib_s=TOUCH_MIB_S,
            boot_s=round(guest.boot_s, 2),
            idle_used=idle_used,
            events=events,
            figures=figures,
            samples=samples,
        )
    return Played(trace, grow_s, memtotal_before, memtotal_after, migrate_s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", type=Path, help="write each trace as <name>.json in this folder")
    parser.add_argument("--only", action="append", help="play only this scenario (repeatable)")
    parser.add_argument("--fit", action="store_true", help="print the guest model fitted to the traces")
    args = parser.parse_args()
    build_image()
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    if not chosen:
        parser.error(f"--only: no scenario named {args.only}; known: {[s.name for s in SCENARIOS]}")
    played: list[Played] = []
    for scenario in chosen:
        result = play(scenario)
        played.append(result)
        print(
            f"  {scenario.name}: {len(result.trace.samples)} samples, {result.trace.figures}", file=sys.stderr
        )
        if args.record:
            args.record.mkdir(parents=True, exist_ok=True)
            out = args.record / f"{scenario.name}.json"
            out.write_text(json.dumps(result.trace.model_dump(), indent=None, separators=(",", ":")) + "\n")
    traces = [p.trace for p in played]
    errors = [trace_error(DEFAULT_GUEST, t) for t in traces]
    for error in errors:
        print(f"  {error}", file=sys.stderr)
    if args.fit:
        print(f"  fitted: {fit(traces, DEFAULT_GUEST)}", file=sys.stderr)
    by_name = {p.trace.name: p for p in played}
    resize, big = by_name.get("resize"), by_name.get("outgrow-3x")
    last_big = big.trace.samples[-1] if big else None

    def mib(value: int | None) -> float | None:
        return None if value is None else value / MiB

    def fmt(value: float | None, digits: int = 2) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    print(
        "real-guest:"
        f" boot_s={fmt(statistics.median(t.boot_s for t in traces))}"
        f" grow_s={fmt(resize.grow_s if resize else None)}"
        f" memtotal_before_mib={fmt(mib(resize.memtotal_before) if resize else None, 0)}"
        f" memtotal_after_mib={fmt(mib(resize.memtotal_after) if resize else None, 0)}"
        f" swapin_bytes={last_big.swap_in if last_big else 'n/a'}"
        f" major_faults={last_big.major_faults if last_big else 'n/a'}"
        f" model_error_pct={fmt(max(e.worst_pct for e in errors), 1)}"
    )
    print(
        "model-paging:"
        f" worst_agreement_pct={min(e.paging_agreement_pct for e in errors):.0f}"
        f" swap_in_ratio_range={fmt(min(r := [e.swap_in_ratio for e in errors if e.swap_in_ratio]))}"
        f"..{fmt(max(r))}"
    )
    migrated = [p for p in played if p.migrate_s is not None]
    for p in migrated:
        print(f"migration: scenario={p.trace.name} paging=yes migrate_s={p.migrate_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
