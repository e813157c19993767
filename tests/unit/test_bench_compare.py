"""bench/compare.py end to end on one small scenario, once per step and with rounds every minute: the
verdict lines, the shift lines and the jump line come out, and bad ``--interval`` and ``--shifts`` values
stop with the option named."""

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
    # the default shifts: each policy played four more times, with every node's memory 16 and 64 MiB up and
    # down; the two-node workday has room to spare, so no shift changes what anyone serves
    assert "with every node's memory moved by ±16, ±64 MiB" in flat
    assert (
        "workday-2nodes: dynamem 0.00 to 0.00 (median 0.00), oracle 0.00 to 0.00 (median 0.00), "
        "best peer proxmox (median 0.00); on the medians least unserved yes, within 10 % of oracle yes"
    ) in flat
    assert "the oracle's own unserved demand moves by more than 10 % of its median on 0 of 1" in flat
    assert "and 4 more with memory moved" in flat


def test_compare_prints_the_same_with_any_number_of_jobs(
    workday_2nodes_path: str, workday_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    compare = load_bench("compare")
    outputs = []
    for jobs in ("1", "2"):
        assert compare.main(["--jobs", jobs, "--shifts", "16", workday_2nodes_path, workday_path]) == 0
        # all but the last line, which says how long it took
        outputs.append(capsys.readouterr().out.rstrip().rsplit("\n", 1)[0])
    assert outputs[0] == outputs[1]
    assert "workday-2nodes: dynamem unserved" in outputs[0] and "workday: dynamem unserved" in outputs[0]


def test_compare_plays_each_scenario_once_with_no_shifts(
    workday_2nodes_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert load_bench("compare").main(["--shifts", "none", workday_2nodes_path]) == 0
    out = capsys.readouterr().out
    assert "memory moved" not in out and "on the medians" not in out


def test_a_shift_moves_every_node_and_nothing_else(workday_2nodes_path: str) -> None:
    from dynamem.policy import MiB
    from dynamem.sim.scenario import load_scenario

    compare = load_bench("compare")
    scenario = load_scenario(workday_2nodes_path)
    down = compare.shifted(scenario, -64)
    assert [n.memory for n in down.nodes] == [n.memory - 64 * MiB for n in scenario.nodes]
    assert down.vms == scenario.vms and down.demand == scenario.demand
    with pytest.raises(ValueError, match=r"node [\w-]+: memory \d+Mi shifted by -1000000Mi is not above 0"):
        compare.shifted(scenario, -1_000_000)


def test_compare_spreads_name_a_moving_oracle() -> None:
    line, hold, moved = load_bench("compare").spread_line(
        "s",
        {
            "dynamem": [12.0, 11.0, 30.0],
            "oracle": [10.0, 8.0, 12.0],
            "xen": [11.0, 11.5, 10.0],
            "static": [40.0, 40.0, 40.0],
        },
    )
    # medians: dynamem 12, oracle 10, xen 11: within 10 % of 10 is 11, and xen's median is below dynamem's
    assert hold == {"least unserved": False, "within 10 % of oracle": False}
    assert moved  # the oracle's runs span 4, 40 % of its median
    assert "oracle 8.00 to 12.00 (median 10.00, moves 40 %), best peer xen (median 11.00)" in line


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_compare_refuses_bad_jobs(
    workday_2nodes_path: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        load_bench("compare").main(["--jobs", value, workday_2nodes_path])
    assert caught.value.code == 2
    assert f"argument --jobs: {value!r} is not a whole number of 1 or more" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "argument --shifts: '0' is not a list of MiB above 0 (e.g. 16,64) or 'none'"),
        ("16,x", "argument --shifts: '16,x' is not a list of MiB above 0 (e.g. 16,64) or 'none'"),
        ("9000", "workday-2nodes: field '--shifts': 9000Mi is not below the smallest node's memory"),
    ],
)
def test_compare_refuses_bad_shifts(
    workday_2nodes_path: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        load_bench("compare").main(["--shifts", value, workday_2nodes_path])
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


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
