"""``dynamem kubevirt-sim``'s flags and credentials are checked before anything is created in a cluster: each
bad value is refused with exit 2, naming the flag and the value, and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynamem.kubevirt_sim.command import main

SCENARIO = """\
step: 1m
nodes: [{name: a, memory: 8Gi}, {name: b, memory: 8Gi}]
vms: [{name: web, node: a, startup: 1Gi, maximum: 4Gi}]
demand: {web: [700Mi, 900Mi]}
"""


@pytest.fixture
def scenario(tmp_path: Path) -> str:
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO)
    return str(path)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--speed", "nan"], "--speed nan: must be a number greater than 0"),
        (["--speed", "inf"], "--speed inf: must be a number greater than 0"),
        (["--speed", "0"], "--speed 0: must be a number greater than 0"),
        (["--pending-timeout", "-5"], "--pending-timeout -5: must be a number of seconds, 0 or more"),
        (["--updater-delay", "inf"], "--updater-delay inf: must be a number of seconds, 0 or more"),
        (["--metrics-port", "70000"], "--metrics-port 70000: must be 0 to 65535"),
        (["--metrics-address", "no such host.invalid"], "--metrics-address 'no such host.invalid': not an"),
        (["--bandwidth", "1Gbps"], "--bandwidth '1Gbps': is not a positive quantity per second"),
        (["--overhead", "200MB"], "--overhead '200MB': is not a quantity"),
        (["--memory-overcommit", "0"], "--memory-overcommit 0: must be greater than 0"),
    ],
)
def test_a_bad_flag_is_refused_by_name(
    scenario: str, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([scenario, *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dynamem kubevirt-sim: ") and message in err, err
    assert "Traceback" not in err


def test_no_credentials_is_one_line_not_a_traceback(
    scenario: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    missing = str(tmp_path / "nowhere" / "kubeconfig")
    assert main([scenario, "--kubeconfig", missing]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dynamem kubevirt-sim: --kubeconfig {missing!r}: no such file")
    assert "Traceback" not in err and err.count("\n") == 1


def test_a_bandwidth_is_written_as_in_a_scenario_file() -> None:
    from dynamem.kubevirt_sim.command import _bandwidth

    assert _bandwidth("500Mi/s") == _bandwidth("500Mi") == 500 << 20


@pytest.mark.parametrize(
    ("address", "target"),
    [
        ("127.0.0.1", "127.0.0.1:9101"),
        ("10.0.0.5", "10.0.0.5:9101"),
        ("0.0.0.0", "127.0.0.1:9101"),
        ("::", "127.0.0.1:9101"),
        ("::1", "[::1]:9101"),
    ],
)
def test_the_printed_metrics_address_is_the_one_served_on(address: str, target: str) -> None:
    """The address ``kubevirt-sim`` prints for Prometheus is ``--metrics-address`` (loopback for a wildcard),
    with the port bound; it printed 127.0.0.1 whatever the address."""
    from types import SimpleNamespace

    from dynamem.kubevirt_sim.runner import SimulatorRunner

    runner = SimulatorRunner(kubeconfig=None, metrics_address=address)
    runner.metrics = SimpleNamespace(port=9101)  # type: ignore[assignment]
    assert runner.metrics_target == target
    runner.loop.close()
