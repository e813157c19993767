"""The operator's flags (:mod:`dynamem.controller.options`): bad values are named with their flag."""

from __future__ import annotations

import pytest

from dynamem.controller.options import OperatorOptions, OptionError, parse_options
from dynamem.kube.objects import GI, MI
from dynamem.policy.model import BalanceConfig


def test_defaults() -> None:
    options = parse_options(["-A"])
    assert options == OperatorOptions(
        namespaces=(),
        all_namespaces=True,
        # one set of defaults: the operator's are BalanceConfig's, as the simulators use them
        balance=BalanceConfig(
            dead_band_bytes=128 * MI,
            dead_band_percent=5,
            shrink_band_bytes=512 * MI,
            shrink_band_percent=25,
            grow_headroom_percent=0,
            cooldown_s=0.0,
            max_changes_per_node=None,
        ),
    )
    assert options.balance == BalanceConfig()
    assert options.metrics_port == 8080
    assert options.prometheus_url == "http://prometheus-k8s.monitoring.svc:9090"


def test_every_flag() -> None:
    argv = [
        *("-n", "office", "-n", "lab"),
        *("--prometheus-url", "https://prom.example:9443"),
        *("--interval", "2.5", "--min-gap", "0"),
        *("--dead-band", "64Mi", "--dead-band-percent", "0"),
        *("--shrink-band", "1Gi", "--shrink-band-percent", "100"),
        *("--grow-headroom-percent", "50", "--cooldown", "30", "--max-changes-per-node", "1"),
        *("--shrink-idle-always", "--shrink-window", "2m"),
        *("--reserve", "1.5Gi", "--default-overhead", "200Mi"),
        *("--policy", "static", "--metrics-port", "0", "--metrics-address", "127.0.0.1"),
        *("--liveness", "http://0.0.0.0:8081/healthz", "--standalone", "--lease-name", "team"),
        *("--lease-namespace", "ops", "--lease-duration", "30", "--resync-period", "60"),
        *("--force-ownership", "--status-writes-per-second", "5"),
        *("--dry-run", "--kubeconfig", "/k/config", "--log-level", "DEBUG"),
    ]
    options = parse_options(argv)
    assert options.namespaces == ("office", "lab")
    assert options.all_namespaces is False
    assert options.prometheus_url == "https://prom.example:9443"
    assert (options.interval_s, options.min_gap_s) == (2.5, 0.0)
    assert options.balance == BalanceConfig(
        dead_band_bytes=64 * MI,
        dead_band_percent=0,
        shrink_band_bytes=GI,
        shrink_band_percent=100,
        grow_headroom_percent=50,
        idle_spare_ranges=None,
        cooldown_s=30.0,
        max_changes_per_node=1,
        shrink_window_s=120.0,
        trend_horizon_s=120.0,
    )
    assert options.reserve == 1536 * MI  # 1.5 x 1024
    assert options.default_overhead == 200 * MI
    assert options.policy == "static"
    assert options.metrics_port is None  # 0: off
    assert options.metrics_address == "127.0.0.1"
    assert options.liveness == "http://0.0.0.0:8081/healthz"
    assert (options.standalone, options.lease_name, options.lease_namespace) == (True, "team", "ops")
    assert (options.lease_duration_s, options.resync_period_s) == (30.0, 60.0)
    assert (options.force_ownership, options.status_writes_per_s) == (True, 5.0)
    assert (options.dry_run, options.kubeconfig, options.log_level) == (True, "/k/config", "DEBUG")


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        pytest.param("--dead-band", "0", 0, id="dead-band-zero"),
        pytest.param("--shrink-band", "0", 0, id="shrink-band-zero"),
        pytest.param("--reserve", "", 0, id="reserve-empty"),
        pytest.param("--reserve", "512M", 512 * 10**6, id="reserve-decimal"),
        # 0.1Gi = 107374182.4 bytes, rounded up
        pytest.param("--reserve", "0.1Gi", 107374183, id="reserve-rounds-up"),
    ],
)
def test_byte_flags(flag: str, value: str, expected: int) -> None:
    options = parse_options(["-A", flag, value])
    read = {
        "--dead-band": options.balance.dead_band_bytes,
        "--shrink-band": options.balance.shrink_band_bytes,
        "--reserve": options.reserve,
    }[flag]
    assert read == expected


@pytest.mark.parametrize(
    ("argv", "flag", "shown"),
    [
        pytest.param(
            ["--dead-band-percent", "101"], "--dead-band-percent", "101", id="dead-band-percent-high"
        ),
        pytest.param(["--dead-band-percent", "-1"], "--dead-band-percent", "-1", id="dead-band-percent-low"),
        pytest.param(["--shrink-band-percent", "101"], "--shrink-band-percent", "101", id="shrink-percent"),
        pytest.param(["--grow-headroom-percent", "-5"], "--grow-headroom-percent", "-5", id="headroom"),
        pytest.param(["--cooldown", "-1"], "--cooldown", "-1", id="cooldown-negative"),
        pytest.param(["--shrink-window", "30s"], "--shrink-window", "30s", id="shrink-window-short"),
        pytest.param(["--shrink-window", "nan"], "--shrink-window", "nan", id="shrink-window-nan"),
        pytest.param(["--max-changes-per-node", "0"], "--max-changes-per-node", "0", id="max-changes-zero"),
        pytest.param(
            ["--prometheus-url", "prom:9090"], "--prometheus-url", "'prom:9090'", id="url-no-scheme"
        ),
        pytest.param(["--prometheus-url", "ftp://p"], "--prometheus-url", "'ftp://p'", id="url-ftp"),
        pytest.param(["--dead-band", "lots"], "--dead-band", "'lots'", id="dead-band-junk"),
        pytest.param(["--dead-band=-1Gi"], "--dead-band", "'-1Gi'", id="dead-band-negative"),
        pytest.param(["--shrink-band", "1GB"], "--shrink-band", "'1GB'", id="shrink-band-junk"),
        pytest.param(["--reserve", "1 TB"], "--reserve", "'1 TB'", id="reserve-junk"),
        pytest.param(["--default-overhead", "x"], "--default-overhead", "'x'", id="overhead-junk"),
        pytest.param(["--interval", "0"], "--interval", "0", id="interval-zero"),
        pytest.param(["--interval", "-2"], "--interval", "-2", id="interval-negative"),
        pytest.param(["--interval", "nan"], "--interval", "nan", id="interval-nan"),
        pytest.param(["--change-deadline", "0"], "--change-deadline", "0", id="change-deadline-zero"),
        pytest.param(["--parked-after", "-1"], "--parked-after", "-1", id="parked-after-negative"),
        pytest.param(["--demand-max-age", "-1"], "--demand-max-age", "-1", id="demand-max-age-negative"),
        pytest.param(["--demand-max-age", "nan"], "--demand-max-age", "nan", id="demand-max-age-nan"),
    ],
)
def test_bad_values_name_flag_and_value(argv: list[str], flag: str, shown: str) -> None:
    with pytest.raises(OptionError) as caught:
        parse_options(["-A", *argv])
    message = str(caught.value)
    assert message.startswith(f"dynamem run: {flag} {shown}: "), message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="neither-A-nor-n"),
        pytest.param(["-A", "-n", "office"], id="both-A-and-n"),
        pytest.param(["-A", "--policy", "magic"], id="unknown-policy"),
        pytest.param(["-A", "--interval", "soon"], id="interval-not-a-number"),
        pytest.param(["-A", "--log-level", "LOUD"], id="unknown-log-level"),
        pytest.param(["-A", "--no-such-flag"], id="unknown-flag"),
    ],
)
def test_argparse_refusals_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_options(argv)
    assert caught.value.code == 2
    assert "dynamem run" in capsys.readouterr().err  # argparse's usage line names the program


def test_migration_budget_and_policy() -> None:
    default = parse_options(["-A"])
    assert default.policy == "dynamem" and not default.parallel_migrations_given
    assert default.balance.max_parallel_migrations == 5  # KubeVirt's default, unless its CR says otherwise
    given = parse_options(["-A", "--max-parallel-migrations", "3", "--policy", "node-local"])
    assert given.parallel_migrations_given and given.balance.max_parallel_migrations == 3
    assert given.round_options().policy == "node-local"
    with pytest.raises(OptionError) as caught:
        parse_options(["-A", "--max-parallel-migrations", "0"])
    assert "--max-parallel-migrations" in str(caught.value) and "0" in str(caught.value)


def test_the_change_deadline_reaches_the_round() -> None:
    assert parse_options(["-A"]).round_options().change_deadline_s == 360.0
    assert parse_options(["-A", "--change-deadline", "40"]).round_options().change_deadline_s == 40.0


def test_the_parked_after_reaches_the_round() -> None:
    assert parse_options(["-A"]).round_options().parked_after_s == 86400.0
    assert parse_options(["-A", "--parked-after", "259200"]).round_options().parked_after_s == 259200.0


def test_the_demand_max_age_is_the_interval_unless_given() -> None:
    assert parse_options(["-A"]).demand_max_age() == 10.0
    assert parse_options(["-A", "--interval", "30"]).demand_max_age() == 30.0
    assert parse_options(["-A", "--demand-max-age", "0"]).demand_max_age() == 0.0


def test_time_flags_take_durations_as_scenario_files_write_them() -> None:
    options = parse_options(
        ["-A", "--interval", "1m", "--change-deadline", "10m", "--parked-after", "2d", "--min-gap", "500ms"]
    )
    assert (options.interval_s, options.change_deadline_s, options.parked_after_s) == (60.0, 600.0, 172800.0)
    assert options.min_gap_s == 0.5
    assert parse_options(["-A", "--interval", "2.5"]).interval_s == 2.5  # plain seconds as before


def test_parsed_options_copy_and_pickle_and_keep_their_seconds() -> None:
    """A time flag's value remembers how it was written (for its range error), and is a number otherwise:
    the options copy, deep-copy, pickle (a worker process) and turn into a dict like any dataclass."""
    import copy
    import dataclasses
    import pickle

    options = parse_options(["-A", "--interval", "5m", "--min-gap", "2"])
    for made in (copy.copy(options), copy.deepcopy(options), pickle.loads(pickle.dumps(options))):
        assert made == options and made.interval_s == 300.0 and repr(made.interval_s) == "5m"
    assert dataclasses.asdict(options)["interval_s"] == 300.0
    assert f"{options.interval_s}s" == "300.0s" and options.interval_s * 2 == 600.0
