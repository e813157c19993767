"""``dynamem simulate``: the seed's workday end to end, exact numbers in the table and the JSON; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dynamem.cli import main as cli_main
from dynamem.policy import GiB
from dynamem.sim.scenario import load_scenario
from dynamem.sim.simulate import simulate

HEAD = "step: 1m\nnodes: [{name: n, memory: 8Gi}]\n"
SEED = [
    {"finance": 1, "sales": 1, "engineering": 1, "service": 0},
    {"finance": 3, "sales": 1, "engineering": 2, "service": 0},
    {"finance": 2, "sales": 1, "engineering": 3.5, "service": 1},
]


def test_workday_cli_prints_and_writes_the_seed_numbers(
    workday_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, out_png = tmp_path / "w.json", tmp_path / "w.png"
    argv = ["simulate", workday_path, "--model", "hyperv", "--json", str(out_json), "--plot", str(out_png)]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "6Gi of 8Gi assigned" in printed and "7.5Gi of 8Gi assigned" in printed
    assert "3.5Gi" in printed and "grow to meet demand" in printed
    document = json.loads(out_json.read_text())
    assert document["policy"] == "dynamem" and document["model"] == "hyperv"
    for step, expected in zip(document["steps"], SEED, strict=True):
        assert {name: vm["assigned"] / GiB for name, vm in step["vms"].items()} == expected
    assert [s["nodes"]["host"]["assigned"] / GiB for s in document["steps"]] == [3, 6, 7.5]
    assert document["steps"][0]["vms"]["service"]["status"] == "Off"
    assert document["steps"][1]["vms"]["finance"] == {
        "node": "host",
        "demand": 2576980378,
        "observed": 2576980378,  # Hyper-V's integration services report committed memory: the policy sees it
        "seen": 2576980378,
        "assigned": 3 * GiB,
        "pressure": 80,  # 2.4 / 3
        "status": "OK",
        "reason": "grow to meet demand",
        "moved_from": None,  # in place
        "migrating_to": None,
    }
    assert all(s["migrations"] == [] for s in document["steps"])
    assert document["summary"] == {
        "unmet_demand": 0.0,
        "buffer_shortfall": 0.0,
        "changes": 4,  # finance +2, engineering +1, finance -1, engineering +1.5
        "over_capacity_steps": 0,
        "refused_starts": 0,
        "refused_changes": 0,
        "migrations": 0,
        "migrated_bytes": 0,
        "failed_changes": 0,
        "unstarted_demand": 0.0,
    }
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("policy", ["dynamem", "static", "proxmox", "xen", "oracle"])
def test_every_policy_runs_the_workday(workday_path: str, policy: str) -> None:
    result = simulate(load_scenario(workday_path), policy, model="hyperv")
    assert result.policy == policy and len(result.steps) == 3
    for step in result.steps:
        assert sum(n.assigned for n in step.nodes.values()) <= 8 * GiB


def test_a_vm_that_does_not_fit_does_not_start(tmp_path: Path) -> None:
    # Two VMs with startup 3 on a 5Gi node: the second cannot start, the output says so.
    path = tmp_path / "full.yaml"
    path.write_text(
        "step: 1m\nnodes: [{name: n, memory: 5Gi}]\n"
        "vms: [{name: a, node: n, startup: 3Gi, maximum: 4Gi},\n"
        "      {name: b, node: n, startup: 3Gi, maximum: 4Gi}]\n"
        "demand: {a: [1Gi], b: [1Gi]}\n"
    )
    result = simulate(load_scenario(path), model="hyperv")
    assert result.steps[0].vms["b"].status == "Off"
    assert result.steps[0].vms["b"].reason == "did not start: no room on node"
    assert any("b did not start on n" in e for e in result.steps[0].events)
    assert result.summary.refused_starts == 1


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        pytest.param(
            HEAD + "vms: [{name: a, node: m, startup: 1Gi, maximum: 2Gi}]\ndemand: {a: [1Gi]}\n",
            "vm 'a': field 'node'",
            id="unknown-node",
        ),
        pytest.param(
            HEAD + "vms: [{name: a, node: n, startup: 1Gi, maximum: 2Gi}]\ndemand: {}\n",
            "vm 'a': field 'demand': missing",
            id="no-demand",
        ),
        pytest.param(
            HEAD + "vms: [{name: a, node: n, startup: 1Gb, maximum: 2Gi}]\ndemand: {a: [1Gi]}\n",
            "vm 'a': field 'startup': '1Gb'",
            id="malformed",
        ),
        pytest.param(
            HEAD + "vms: [{name: a, node: n, startup: 3Gi, maximum: 2Gi}]\ndemand: {a: [1Gi]}\n",
            "vm 'a': field 'startup': '3Gi' is above maximum 2Gi",
            id="invalid",
        ),
        pytest.param("step: [1m\n", "not valid YAML", id="yaml"),
        pytest.param(None, "cannot read", id="unreadable"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, fragment: str
) -> None:
    path = tmp_path / "bad.yaml"
    if content is not None:
        path.write_text(content)
    assert cli_main(["simulate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert str(path) in lines[0] and fragment in lines[0]
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("name", ["office", "batch", "leak", "steady", "mixed"])
def test_hysteresis_never_costs_paging_on_the_bench_scenarios(workday_path: str, name: str) -> None:
    # dynamem's hysteresis (dead band, shrink band, headroom) only saves migrations: every scenario pages
    # no more than the oracle (same levels, no hysteresis), over capacity never, with far fewer changes.
    scenario = load_scenario(Path(workday_path).with_name(f"{name}.yaml"))
    mine = simulate(scenario, "dynamem", model="hyperv").summary
    oracle = simulate(scenario, "oracle", model="hyperv").summary
    assert mine.unmet_demand <= oracle.unmet_demand + 1e-9
    assert mine.over_capacity_steps == 0 and mine.refused_changes == 0
    assert mine.changes < oracle.changes * 3 // 4


@pytest.mark.parametrize(
    ("flag", "name", "problem"),
    [
        ("--plot", "chart.txt", "'.txt' is no chart format (e.g. .png, .svg, .pdf)"),
        ("--plot", "chart", "no format named (e.g. .png, .svg, .pdf)"),  # matplotlib would write chart.png
        ("--plot", "missing/chart.png", "no such directory"),
        ("--json", "missing/steps.json", "no such directory"),
        ("--json", "", "is a directory"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_the_run(
    workday_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, name: str, problem: str
) -> None:
    out = tmp_path / name
    assert cli_main(["simulate", workday_path, flag, str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"dynamem simulate: {flag} {str(out)!r}: ") and problem in captured.err
    assert captured.out == ""  # nothing run: no table printed and then lost


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--out", "chart.txt"], "--out 'chart.txt': '.txt' is no chart format"),
        (["--step-seconds", "0"], "--step-seconds 0: must be a number of seconds greater than 0"),
        (["--step-seconds", "nan"], "--step-seconds nan: must be"),
        (["--settle-seconds", "-1"], "--settle-seconds -1: must be a number of seconds, 0 or more"),
    ],
)
def test_the_demo_refuses_a_bad_flag_before_starting_anything(
    flags: list[str], problem: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dynamem import demo

    def no_stack(*_: object) -> None:
        raise AssertionError("the control plane was started")

    monkeypatch.setattr(demo, "stack", no_stack)
    assert cli_main(["demo", *flags]) == 2
    assert f"dynamem demo: {problem}" in capsys.readouterr().out


def test_the_dynamem_command_without_a_command_is_an_error_and_help_is_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No command: usage on stderr, exit 2 (it exited 0, as if it had done something); --help: stdout, 0.
    The sub-commands' help shows no reStructuredText markup."""
    assert cli_main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("usage: dynamem COMMAND")
    assert cli_main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: dynamem COMMAND")
    for command in ("kubevirt-sim", "demo"):
        with pytest.raises(SystemExit) as done:
            cli_main([command, "--help"])
        assert done.value.code == 0
        shown = capsys.readouterr().out
        assert "``" not in shown and f"dynamem {command}" in shown, shown
