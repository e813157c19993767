"""Warm start of the local control plane: seconds from `ControlPlane.start()` to ready with CRDs Established.

The binaries must already be built (`make controlplane`); this measures what each test session and each
`make cluster` pays. Goal: a median under 10 s on 2 cores.

    .venv/bin/python bench/controlplane_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from dynamem.testing.controlplane import ControlPlane

GOAL_SECONDS = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times: list[float] = []
    for run in range(1, args.runs + 1):
        started = time.perf_counter()
        control_plane = ControlPlane().start()
        ready = time.perf_counter() - started
        stopped = time.perf_counter()
        control_plane.stop()
        stop = time.perf_counter() - stopped
        times.append(ready)
        print(f"run {run}: ready with CRDs Established in {ready:.2f} s (stop {stop:.2f} s)", flush=True)
    median = statistics.median(times)
    verdict = "meets" if median < GOAL_SECONDS else "MISSES"
    print(f"median {median:.2f} s over {len(times)} runs ({verdict} the {GOAL_SECONDS:.0f} s goal)")
    return 0 if median < GOAL_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())
