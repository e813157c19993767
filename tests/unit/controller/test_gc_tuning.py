"""The garbage collector's thresholds for the operator's large heap (:mod:`dynamem.controller.gc_tuning`)."""

from __future__ import annotations

import gc

from dynamem.controller.gc_tuning import THRESHOLDS, collector_paused, tune_for_large_heap


def test_the_thresholds_are_set_and_the_previous_ones_returned() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        assert tune_for_large_heap() == (700, 10, 10)
        assert gc.get_threshold() == THRESHOLDS
        assert gc.isenabled()  # cycles are still collected, only less often
    finally:
        gc.set_threshold(*before)


def test_the_collector_is_paused_in_the_block_and_on_again_after() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    try:
        with collector_paused():
            raise ValueError("a failed round")
    except ValueError:
        pass
    assert gc.isenabled()  # a round that failed does not leave it off
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # off before: left off
    finally:
        gc.enable()
