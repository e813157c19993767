"""The garbage collector tuned for the operator's large, long-lived heap.

At 10,000 VMs the operator holds millions of small objects (kopf's and dynamem's views of 40,000 objects)
and a round makes about a million more, nearly all freed by reference counting. CPython's default thresholds
(700, 10, 10) then run a young collection every 700 allocations and, every few rounds, a full one over the
whole heap: half of a round's CPU time at rest (``bench/round_at_rest.py``: 1.5 s of CPU with the defaults,
0.8 s with these or with the collector off). Larger thresholds keep cycles collected (an exception's
traceback, a closed connection) while the collector no longer walks the heap a dozen times a round.

Even so, a round at rest at 10,000 VMs set off about one young collection (some 50 ms) and, every twenty
rounds, a middle one (half a second in process, more over the operator's whole heap): the round's own
latency, for garbage that is nearly all freed by reference counting anyway. The loop runs each round with the
collector paused (:func:`collector_paused`); what the round left is collected when it ends, between rounds.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

# Young collections every 50,000 allocations (not 700); the middle one every 20 of those; a full collection
# after 100 middle ones (CPython also waits until the objects awaiting it are 25 % of the long-lived ones).
THRESHOLDS = (50_000, 20, 100)


def tune_for_large_heap() -> tuple[int, int, int]:
    """Set :data:`THRESHOLDS`; returns the thresholds that were in force."""
    before = gc.get_threshold()
    gc.set_threshold(*THRESHOLDS)
    return before


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic collection inside the block (reference counting frees as always); the collector is on
    again after it, as it was, and what is due is collected then."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
