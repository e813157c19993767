"""A VM's memory metrics as Prometheus holds them, and the plan's two window signals read from them as the
operator reads them (:func:`dynamem.controller.demand.signal_queries`).

virt-handler exports ``kubevirt_vmi_memory_available_bytes`` and ``kubevirt_vmi_memory_usable_bytes`` with the
VMI's node among their labels, so each node a VM runs on is a series of its own: after a migration (every
change of a running VM's memory is one) the target node's series starts empty, and the source's keeps the
samples it had until they leave the window. Prometheus scrapes each series every :data:`SCRAPE_S` seconds.

The operator reads, over the window (``shrink_window_s``):

- ``used_peak``: the highest ``available - usable`` of any of the VM's series;
- ``used_rise_bps``: per series, the least-squares slope of ``available - usable`` (``deriv``), bounded by
  ``sqrt(12) x (stddev(available) + stddev(usable)) / window`` (population standard deviations,
  ``stddev_over_time``), the rise a least-squares line can show over evenly spaced samples; the highest of the
  series, and 0 unless it is above 0 (``controller/demand.py``, ``_rise``).

The simulator samples a step's demand as held for the step, so a series is runs of equal samples; each run is
summed in closed form. Floats of seconds and bytes; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["SCRAPE_S", "MemorySeries"]

# Prometheus' usual scrape interval (its own default is a minute; 30 s is what most KubeVirt monitoring sets).
SCRAPE_S = 30.0


@dataclass(frozen=True, slots=True)
class _Run:
    """``count`` samples of one series, ``every`` seconds apart from ``start``, all showing the same
    ``available`` and ``usable``."""

    start: float
    every: float
    count: int
    available: int
    usable: int

    def since(self, cutoff: float) -> _Run | None:
        """The samples at or after ``cutoff``, or None. Prometheus 2's range selectors (2.42 runs the tests)
        take the samples in ``[now - window, now]``; Prometheus 3 leaves the left edge out, one sample."""
        if self.start >= cutoff:
            return self
        skip = math.ceil((cutoff - self.start) / self.every) if self.every > 0 else self.count
        if skip >= self.count:
            return None
        return _Run(
            self.start + skip * self.every, self.every, self.count - skip, self.available, self.usable
        )


@dataclass(slots=True)
class _Sums:
    """Running sums of one series' samples over the window: count, t, t^2 and, per metric, y, y^2, t*y
    (times taken from ``origin`` and values from ``base``, so that the squares keep their precision)."""

    origin: float
    base: tuple[int, int]
    n: float = 0.0
    t: float = 0.0
    tt: float = 0.0
    y: list[float] = field(default_factory=lambda: [0.0, 0.0])
    yy: list[float] = field(default_factory=lambda: [0.0, 0.0])
    ty: list[float] = field(default_factory=lambda: [0.0, 0.0])

    def add(self, run: _Run) -> None:
        n = run.count
        a = run.start - self.origin
        d = run.every
        t = n * a + d * n * (n - 1) / 2
        tt = n * a * a + a * d * n * (n - 1) + d * d * (n - 1) * n * (2 * n - 1) / 6
        self.n += n
        self.t += t
        self.tt += tt
        for i, value in enumerate((run.available, run.usable)):
            y = float(value - self.base[i])
            self.y[i] += n * y
            self.yy[i] += n * y * y
            self.ty[i] += t * y

    def slope(self, i: int) -> float:
        spread = self.n * self.tt - self.t * self.t
        if self.n < 2 or spread <= 0:
            return 0.0
        return (self.n * self.ty[i] - self.t * self.y[i]) / spread

    def stddev(self, i: int) -> float:
        mean = self.y[i] / self.n
        return math.sqrt(max(0.0, self.yy[i] / self.n - mean * mean))


@dataclass(slots=True)
class MemorySeries:
    """One VM's ``available`` and ``usable`` samples, per node (series), over the last ``window`` seconds."""

    window: float
    runs: dict[str, list[_Run]] = field(default_factory=dict)

    def add(
        self, node: str, start: float, count: int, available: int, usable: int, every: float = SCRAPE_S
    ) -> None:
        """``count`` samples on ``node``'s series from ``start``, ``every`` seconds apart (one run with the
        series' last when they continue it with the same values)."""
        if count <= 0:
            return
        runs = self.runs.setdefault(node, [])
        if runs:
            last = runs[-1]
            follows = abs(last.start + last.count * last.every - start) < 1e-6 and last.every == every
            if follows and last.available == available and last.usable == usable:
                runs[-1] = _Run(last.start, every, last.count + count, available, usable)
                return
        runs.append(_Run(start, every, count, available, usable))

    def trim(self, now: float) -> None:
        """Forget the samples that left the window ending at ``now``."""
        cutoff = now - self.window
        for node in list(self.runs):
            kept = [r for r in (run.since(cutoff) for run in self.runs[node]) if r is not None]
            if kept:
                self.runs[node] = kept
            else:
                del self.runs[node]

    def peak(self) -> int | None:
        """The highest used memory (``available - usable``) of any series in the window."""
        return max((r.available - r.usable for runs in self.runs.values() for r in runs), default=None)

    def rise(self, now: float) -> float:
        """How fast used memory rose, bytes/s, as the operator's ``used_rise_bps`` reads it: per series the
        least-squares slope of ``available - usable`` (``deriv(available) - deriv(usable)``), at most
        ``sqrt(12) x (stddev(available) + stddev(usable)) / window``; the highest of the series, 0 unless
        above 0."""
        best = 0.0
        for runs in self.runs.values():
            first = runs[0]
            sums = _Sums(origin=now, base=(first.available, first.usable))
            for run in runs:
                sums.add(run)
            if sums.n < 2:
                continue
            slope = sums.slope(0) - sums.slope(1)
            bound = math.sqrt(12) * (sums.stddev(0) + sums.stddev(1)) / self.window
            best = max(best, min(slope, bound))
        return best
