"""bench/density.py end to end: each policy's density, the bound no policy passes (and none does), and the
2x-static verdict the bound proves out of reach on the office workload."""

from __future__ import annotations

import re

import pytest
from bench_modules import load_bench


def test_density_prints_a_bound_no_policy_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_bench("density").main(["--policies", "dynamem,static,xen,oracle"]) == 0
    out = capsys.readouterr().out
    held = {m[1]: int(m[2]) for m in re.finditer(r"^  (\w[\w-]*) +(\d+)$", out, re.MULTILINE)}
    assert set(held) == {"dynamem", "static", "xen", "oracle"}
    bound = re.search(r"^bound \(any policy: .*\): (\d+) per node", out, re.MULTILINE)
    assert bound is not None
    assert all(k <= int(bound.group(1)) for k in held.values()), (held, bound.group(0))
    assert int(bound.group(1)) < 2 * held["static"]
    assert re.search(r"at 2 x static \(\d+ per node\) every policy leaves at least [0-9.]+ % unserved", out)
