"""The simulator's Prometheus series (:mod:`dynamem.sim.series`): per node, a window holding its left edge,
the rise bounded and taken as the highest of the series, each checked against the textbook formulas."""

from __future__ import annotations

import math
import statistics

import pytest

from dynamem.sim.series import MemorySeries

MiB = 1 << 20
WINDOW = 3600.0
TOTAL = 4096 * MiB  # MemTotal: available, the same for every sample of a series here


def textbook_rise(samples: list[tuple[float, float]]) -> float:
    """The operator's rise of one series: least-squares slope, at most sqrt(12) x pstdev / window."""
    if len(samples) < 2:
        return 0.0
    slope = statistics.linear_regression([t for t, _ in samples], [u for _, u in samples]).slope
    return min(slope, math.sqrt(12) * statistics.pstdev([u for _, u in samples]) / WINDOW)


def add(series: MemorySeries, node: str, start: float, count: int, used: int) -> None:
    series.add(node, start, count, TOTAL, TOTAL - used)


def test_runs_of_equal_samples_give_the_least_squares_slope_bounded_by_their_spread() -> None:
    # Four runs of 30 samples 30 s apart, use 1000, 1100, 1200, 1300Mi: a staircase. At 3600 s the window
    # (t >= 0) holds all 120 of them and the one at 3600 s (1400Mi).
    series = MemorySeries(WINDOW)
    for k in range(4):
        add(series, "n1", 900.0 * k, 30, (1000 + 100 * k) * MiB)
    add(series, "n1", 3600.0, 1, 1400 * MiB)
    series.trim(3600.0)
    samples = [(30.0 * i, float((1000 + 100 * min(i // 30, 4)) * MiB)) for i in range(121)]
    assert series.rise(3600.0) == pytest.approx(textbook_rise(samples), rel=1e-9)
    assert series.peak() == 1400 * MiB


def test_a_young_series_rise_is_cut_to_what_its_samples_show() -> None:
    # Two samples 30 s apart, 10Mi up: their slope is 10Mi/30 s, 1.2Gi an hour; the bound is
    # sqrt(12) x 5Mi / 3600 s: about 17Mi an hour, what a wobble of 10Mi can show.
    series = MemorySeries(WINDOW)
    add(series, "n1", 0.0, 1, 1000 * MiB)
    add(series, "n1", 30.0, 1, 1010 * MiB)
    assert series.rise(30.0) == pytest.approx(math.sqrt(12) * 5 * MiB / WINDOW)


def test_each_node_is_a_series_and_the_rise_is_the_highest_of_them() -> None:
    # n1: 60 samples rising 1Mi each; then the VM moved to n2 at a higher use, flat there. The jump between
    # the two is in neither series: the rise is n1's own (bounded), until its samples leave the window.
    series = MemorySeries(WINDOW)
    for i in range(60):
        add(series, "n1", 30.0 * i, 1, (1000 + i) * MiB)
    add(series, "n2", 1800.0, 60, 3000 * MiB)
    series.trim(3570.0)
    n1 = [(30.0 * i, float((1000 + i) * MiB)) for i in range(60)]
    assert series.rise(3570.0) == pytest.approx(textbook_rise(n1), rel=1e-9)
    assert series.peak() == 3000 * MiB
    # more than an hour after its last sample n1 has left the window: n2 is flat, no rise
    series.trim(1800.0 + WINDOW)
    assert set(series.runs) == {"n2"} and series.rise(1800.0 + WINDOW) == 0.0


def test_the_rise_is_the_highest_of_the_series_not_the_first_nor_their_sum() -> None:
    # n1 rose 59Mi over half an hour, then the VM moved to n2, where it rose 87Mi over 15 minutes: each
    # bounded by what its samples show over the window, the rise is n2's, added second
    series = MemorySeries(WINDOW)
    n1 = [(30.0 * i, float((1000 + i) * MiB)) for i in range(60)]
    n2 = [(1800.0 + 30.0 * i, float((3000 + 3 * i) * MiB)) for i in range(30)]
    for node, samples in (("n1", n1), ("n2", n2)):
        for t, used in samples:
            add(series, node, t, 1, int(used))
    now = n2[-1][0]
    assert textbook_rise(n2) > textbook_rise(n1) > 0
    assert series.rise(now) == pytest.approx(textbook_rise(n2), rel=1e-9)


def test_a_falling_use_is_no_rise_and_one_sample_has_none() -> None:
    series = MemorySeries(WINDOW)
    add(series, "n1", 0.0, 1, 2000 * MiB)
    assert series.rise(0.0) == 0.0
    add(series, "n1", 30.0, 30, 1500 * MiB)
    assert series.rise(900.0) == 0.0


def test_the_window_holds_its_left_edge() -> None:
    # A sample exactly a window old is still in it (Prometheus 2's range selectors, [now - window, now]).
    series = MemorySeries(WINDOW)
    add(series, "n1", 0.0, 3, 1000 * MiB)  # at 0, 30, 60 s
    series.trim(WINDOW + 30.0)
    (run,) = series.runs["n1"]
    assert (run.start, run.count) == (30.0, 2)


def test_samples_that_continue_a_run_with_the_same_values_join_it() -> None:
    # Rounds within a step add a sample at each round and the scrapes between: one run, the same sums.
    joined = MemorySeries(WINDOW)
    apart = MemorySeries(WINDOW)
    for k in range(4):
        used = (1000 + 100 * (k // 2)) * MiB
        for r in range(3):  # a round at 900k + 300r: its own sample, then 9 scrapes to the next round
            add(joined, "n1", 900.0 * k + 300 * r, 1, used)
            add(joined, "n1", 900.0 * k + 300 * r + 30, 9, used)
        add(apart, "n1", 900.0 * k, 30, used)
    add(joined, "n1", 3600.0, 1, 1200 * MiB)
    add(apart, "n1", 3600.0, 1, 1200 * MiB)
    assert len(joined.runs["n1"]) == 3  # 1000Mi from 0 s, 1100Mi from 1800 s, 1200Mi at 3600 s
    add(joined, "n1", 3630.0, 1, 1100 * MiB)  # another value: a run of its own
    add(apart, "n1", 3630.0, 1, 1100 * MiB)
    add(joined, "n1", 3700.0, 1, 1100 * MiB)  # not 30 s after the last: a run of its own
    add(apart, "n1", 3700.0, 1, 1100 * MiB)
    assert len(joined.runs["n1"]) == 5
    for now in (3600.0, 3700.0, 4000.0):
        joined.trim(now)
        apart.trim(now)
        assert joined.rise(now) == pytest.approx(apart.rise(now), rel=1e-9)
        assert joined.peak() == apart.peak()
