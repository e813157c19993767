"""Real guests' traces, and how well the guest model reproduces them.

``bench/guest_lab.py`` plays scenarios on a real Linux guest under QEMU (``dynamem.testing.guest``) and
records, once a second, what the balloon driver reports (MemTotal, MemAvailable, MemFree, caches, and the
cumulative swap traffic and page faults) together with what the workload held and the guest's memory size.
The traces are committed as fixtures (``tests/fixtures/guest_traces/*.json``); :func:`fit` derives the
:class:`~dynamem.sim.guest.GuestModel` constants from them and :func:`trace_error` scores a model on a trace.

The error is measured on what the policy reads, in the policy's own units:

- ``used`` (``available - usable``, KubeVirt's used memory and dynamem's demand signal) and ``MemTotal``
  (``kubevirt_vmi_memory_available_bytes``): mean absolute error as a share of the guest's memory size, the
  unit the policy's buffer and shrink band are written in;
- paging: whether the guest pages (swap-in above KubeVirt's 1 MiB/s alert threshold) must agree, sample by
  sample, outside the few seconds around a change (the model has no lag; the guest reacts within a stats
  period or two); the swap-in rate is compared while both page, as a ratio (its magnitude only ranks how
  badly a guest pages).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from dynamem.sim.guest import PAGE_SIZE, GuestModel, GuestPager

__all__ = [
    "PAGING_SWAP_IN_BPS",
    "GuestTrace",
    "TraceError",
    "TracePoint",
    "TraceSample",
    "fit",
    "load_traces",
    "points",
    "trace_error",
]

MiB = 1 << 20
PAGING_SWAP_IN_BPS = float(MiB)  # KubeVirt's alert: swap traffic over 1 MiB/s (pkg/monitoring/rules, v1.8+)
SETTLE_S = 4.0  # seconds after a change of demand or size in which the guest is still catching up
SLOW_MOVE = 0.03  # a workload moving less than 3 % of the guest's size a second is followed as it goes


class TraceSample(BaseModel):
    """One balloon report of a real guest (bytes; counters cumulative since boot)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    t: float = Field(ge=0, description="seconds since the workload started")
    demand_mib: int = Field(ge=0, description="what the workload was told to hold")
    held_mib: int = Field(ge=0, description="what the workload held (it moves toward demand at its rate)")
    size_mib: int = Field(gt=0, description="guest memory: base plus what virtio-mem has plugged")
    memtotal: int = Field(gt=0)
    usable: int = Field(ge=0, description="MemAvailable")
    free: int = Field(ge=0)
    cached: int = Field(ge=0)
    swap_in: int = Field(ge=0)
    swap_out: int = Field(ge=0)
    major_faults: int = Field(ge=0)
    minor_faults: int = Field(ge=0)


class GuestTrace(BaseModel):
    """A scenario played on a real guest: its shape, what happened when, and a sample a second."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    base_mib: int = Field(gt=0)
    max_mib: int = Field(gt=0)
    swap_mib: int = Field(ge=0)
    touch_mib_s: float = Field(ge=0)
    boot_s: float = Field(ge=0)
    idle_used: int = Field(ge=0, description="used memory of the idle guest: kernel, init and their files")
    events: list[str] = Field(default_factory=list)
    figures: dict[str, float] = Field(default_factory=dict)
    samples: list[TraceSample]


def load_traces(folder: Path) -> list[GuestTrace]:
    """Every ``*.json`` trace in ``folder``, by name."""
    traces = [GuestTrace.model_validate(json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]
    if not traces:
        raise FileNotFoundError(f"no guest traces (*.json) in {folder}")
    return traces


@dataclass(frozen=True, slots=True)
class TracePoint:
    """One interval between two samples: the guest's state at its end and its rates over it."""

    t: float
    dt: float
    size: int
    demand: int  # what the workload needs: what it held, plus what the idle guest uses
    memtotal: int
    used: int
    swap_in_bps: float
    major_faults_ps: float
    settled: bool  # size unchanged and demand moving slowly for SETTLE_S


def points(trace: GuestTrace) -> list[TracePoint]:
    out: list[TracePoint] = []
    last_change = -SETTLE_S
    for before, after in zip(trace.samples, trace.samples[1:], strict=False):
        dt = after.t - before.t
        if dt <= 0:
            continue
        # A jump (a step of demand, a resize) unsettles the guest for SETTLE_S; a slow leak does not.
        moved = abs(after.held_mib - before.held_mib) / dt > SLOW_MOVE * after.size_mib
        if moved or after.size_mib != before.size_mib:
            last_change = after.t
        out.append(
            TracePoint(
                t=after.t,
                dt=dt,
                size=after.size_mib * MiB,
                demand=after.held_mib * MiB + trace.idle_used,
                memtotal=after.memtotal,
                used=after.memtotal - after.usable,
                swap_in_bps=max(0, after.swap_in - before.swap_in) / dt,
                major_faults_ps=max(0, after.major_faults - before.major_faults) / dt,
                settled=after.t - last_change >= SETTLE_S,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class TraceError:
    """How far a model is from one trace. Percentages; ``worst_pct`` is what the benchmark reports."""

    name: str
    used_pct: float  # mean |model used - real used| / size
    memtotal_pct: float  # mean |model MemTotal - real MemTotal| / size
    paging_agreement_pct: float  # settled samples where model and guest agree on paging
    swap_in_ratio: float | None  # median model / real swap-in rate while both page (None: never paged)

    @property
    def worst_pct(self) -> float:
        """The error of what the policy reads: used memory and MemTotal, in % of the guest's size."""
        return max(self.used_pct, self.memtotal_pct)


def trace_error(model: GuestModel, trace: GuestTrace) -> TraceError:
    """Play the trace's demand and sizes through the model (with :class:`GuestPager`, so memory paged out
    comes back over time as it does in the guest) and compare, settled second by settled second."""
    used_errors: list[float] = []
    total_errors: list[float] = []
    agree: list[bool] = []
    ratios: list[float] = []
    pager = GuestPager(model)
    for point in points(trace):
        seen = pager.observe(point.demand, point.size, point.dt)
        if not point.settled:
            continue
        used_errors.append(abs(seen.used - point.used) / point.size)
        total_errors.append(abs(seen.available - point.memtotal) / point.size)
        real_pages = point.swap_in_bps > PAGING_SWAP_IN_BPS
        model_pages = seen.swap_in_bps > PAGING_SWAP_IN_BPS
        agree.append(real_pages == model_pages)
        if real_pages and model_pages:
            ratios.append(seen.swap_in_bps / point.swap_in_bps)
    if not agree:
        raise ValueError(f"trace {trace.name!r} has no settled samples to compare")
    return TraceError(
        name=trace.name,
        used_pct=100 * statistics.fmean(used_errors),
        memtotal_pct=100 * statistics.fmean(total_errors),
        paging_agreement_pct=100 * sum(agree) / len(agree),
        swap_in_ratio=statistics.median(ratios) if ratios else None,
    )


def _boot_reserves(traces: Iterable[GuestTrace]) -> dict[int, int]:
    """size - MemTotal of each boot size, before anything was plugged."""
    found: dict[int, list[int]] = {}
    for trace in traces:
        for sample in trace.samples:
            if sample.size_mib == trace.base_mib:
                found.setdefault(trace.base_mib * MiB, []).append(trace.base_mib * MiB - sample.memtotal)
    return {size: int(statistics.median(values)) for size, values in found.items()}


def fit(traces: Sequence[GuestTrace], start: GuestModel | None = None) -> GuestModel:
    """The guest model's constants from real traces; what the lab cannot measure is kept from ``start``.

    - ``reserve_bytes``, ``reserve_per_mille``: a line through (boot size, size - MemTotal) over the boot
      sizes in the traces (two sizes at least for the slope; one gives a flat reserve).
    - ``min_usable_bytes``: the median MemAvailable of settled samples that page.
    - ``touch_rate``: swap-in bytes per second per byte of excess (least squares through zero) over settled
      samples that page; ``swap_in_pages_per_fault``: swap-in pages per major fault over the same samples
      (Linux reads swap ahead, ``vm.page-cluster``).
    - ``cache_share`` and ``minor_faults_ps`` depend on the workload's files and processes, which the lab's
      single allocator does not have: kept.
    """
    model = start or GuestModel()
    reserves = _boot_reserves(traces)
    if len(reserves) >= 2:
        (small, r_small), (large, r_large) = min(reserves.items()), max(reserves.items())
        per_mille = max(0, round(1000 * (r_large - r_small) / (large - small)))
        base = int(statistics.fmean(r - s * per_mille // 1000 for s, r in reserves.items()))
        model = replace(model, reserve_bytes=max(0, base), reserve_per_mille=per_mille)
    elif reserves:
        ((_, reserve),) = reserves.items()
        model = replace(model, reserve_bytes=reserve, reserve_per_mille=0)
    paging = [
        (trace, point)
        for trace in traces
        for point in points(trace)
        if point.settled and point.swap_in_bps > PAGING_SWAP_IN_BPS
    ]
    if paging:
        min_usable = int(statistics.median(p.memtotal - p.used for _, p in paging))
        model = replace(model, min_usable_bytes=min_usable)
        excess = [max(0, p.demand - model.capacity(p.size)) for _, p in paging]
        swap = [p.swap_in_bps for _, p in paging]
        denominator = sum(e * e for e in excess)
        if denominator > 0:
            model = replace(
                model, touch_rate=sum(e * s for e, s in zip(excess, swap, strict=True)) / denominator
            )
        faults = sum(p.major_faults_ps for _, p in paging)
        if faults > 0:
            model = replace(model, swap_in_pages_per_fault=sum(swap) / PAGE_SIZE / faults)
    return model
