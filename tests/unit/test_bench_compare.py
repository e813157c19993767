"""bench/compare.py end to end on one small scenario, once per step and with rounds every minute: the
verdict lines and the jump line come out, and bad ``--interval`` values stop with the option named."""

from __future__ import annotations

import re

import pytest
from bench_modules import load_bench


@pytest.mark.parametrize(("flags", "rounds"), [([], "once per step"), (["--interval", "1m"], "every 60 s")])
def test_compare_runs_on_a_scenario(
    workday_2nodes_path: str, flags: list[str], rounds: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert load_bench("compare").main([*flags, workday_2nodes_path]) == 0
    out = capsys.readouterr().out
    assert f"every policy decides {rounds}" in out
    assert re.search(r"workday-2nodes: dynamem unserved [0-9.]+ \(oracle", out)
    # Seed 1's two-node workday: serving Finance and Engineering within 10 % of the oracle takes growing
    # Finance (1Gi) and Engineering (1Gi) once each, where the descheduler migrates 1Gi in all.
    flat = " ".join(out.split())  # the console wraps long lines
    assert (
        "any policy within 10 % of the oracle migrates at least 2.0 GiB, node-local 0.0, descheduler 1.0: "
        in flat
    )
    assert "no policy is within 10 % of the oracle with fewer GiB than node-local or descheduler" in flat
    assert "'fewer GiB than node-local': on 1 of 1 scenarios (workday-2nodes)" in flat
    assert "'fewer GiB than descheduler': on 1 of 1 scenarios (workday-2nodes)" in flat
    jump = re.search(r"jump 3\.5x .*: dynamem (\d+),", out)
    assert jump is not None and int(jump.group(1)) <= 3


def test_compare_refuses_a_bad_interval(workday_2nodes_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        load_bench("compare").main(["--interval", "never", workday_2nodes_path])
    assert caught.value.code == 2
    assert "--interval: field 'interval': 'never' is not a duration" in capsys.readouterr().err


def test_compare_refuses_an_interval_longer_than_a_step(
    workday_2nodes_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        load_bench("compare").main(["--interval", "2h", workday_2nodes_path])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "workday-2nodes: field '--interval': 7200s is not between 1s and the step (900s)" in err
