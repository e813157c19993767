"""Flag values dynamem run refuses with an OptionError naming the flag and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynamem.controller.options import OptionError, parse_options


@pytest.mark.parametrize(
    ("argv", "prefix"),
    [
        # nan < 0 is False, so NaN passes; the policy's `cooldown > 0.0` is then False: cooldown silently off
        pytest.param(["--cooldown", "nan"], "dynamem run: --cooldown nan: ", id="cooldown-nan"),
        # not validated: start_http_server fails later with an OverflowError traceback, not exit 2
        pytest.param(["--metrics-port", "-1"], "dynamem run: --metrics-port -1: ", id="port-negative"),
        pytest.param(["--metrics-port", "70000"], "dynamem run: --metrics-port 70000: ", id="port-too-big"),
        # inf would mean no round after the first, or a deadline never reached: no number of seconds
        pytest.param(["--interval", "inf"], "dynamem run: --interval inf: must be a finite number", id="inf"),
        pytest.param(["--min-gap", "inf"], "dynamem run: --min-gap inf: must be a finite", id="gap-inf"),
        pytest.param(["--change-deadline", "inf"], "dynamem run: --change-deadline inf: ", id="deadline-inf"),
        pytest.param(["--lease-duration", "nan"], "dynamem run: --lease-duration nan: ", id="lease-nan"),
        # a negative value with a unit was taken for another flag: "expected one argument", no value named
        pytest.param(
            ["--interval", "-5s"], "dynamem run: --interval -5s: must be greater than 0", id="neg-s"
        ),
        pytest.param(
            ["--dead-band", "-1Gi"],
            "dynamem run: --dead-band '-1Gi': must be 0 or a positive quantity",
            id="neg-gi",
        ),
        pytest.param(["--cooldown", "-2m"], "dynamem run: --cooldown -2m: must not be negative", id="neg-m"),
        # a plain number flag quotes the value as typed too, not "0.0"
        pytest.param(
            ["--status-writes-per-second", "0"],
            "dynamem run: --status-writes-per-second 0: must be greater than 0",
            id="writes-0",
        ),
        pytest.param(
            ["--status-writes-per-second", "inf"],
            "dynamem run: --status-writes-per-second inf: must be a finite number",
            id="writes-inf",
        ),
        # was clamped to 0 without a word
        pytest.param(["--min-gap", "-5"], "dynamem run: --min-gap -5: must not be negative", id="gap"),
        # a Lease the API server refuses to create: the replica would never lead, and say so only at INFO
        pytest.param(
            ["--lease-name", "Bad_Name!"], "dynamem run: --lease-name 'Bad_Name!': not a", id="lease"
        ),
        pytest.param(
            ["--lease-namespace", "UPPER"], "dynamem run: --lease-namespace 'UPPER': not a", id="ns"
        ),
        pytest.param(["--prometheus-url", "http://"], "dynamem run: --prometheus-url 'http://': ", id="url"),
        # each failed only once kopf had started, with a traceback that did not name the flag
        pytest.param(["--liveness", "notaurl"], "dynamem run: --liveness 'notaurl': must be an", id="live"),
        pytest.param(
            ["--metrics-address", "no such host.invalid"],
            "dynamem run: --metrics-address 'no such host.invalid': not an address to serve on",
            id="address",
        ),
    ],
)
def test_refused(argv: list[str], prefix: str) -> None:
    with pytest.raises(OptionError) as caught:
        parse_options(["-A", *argv])
    assert str(caught.value).startswith(prefix)


def test_a_ca_file_without_a_certificate_is_refused_by_name(tmp_path: Path) -> None:
    empty = tmp_path / "ca.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(OptionError) as caught:
        parse_options(["-A", "--prometheus-ca-file", str(empty)])
    assert str(caught.value).startswith(
        f"dynamem run: --prometheus-ca-file {str(empty)!r}: no CA certificate"
    )


def test_a_zero_quantity_is_none_however_it_is_written() -> None:
    for zero in ("0", "0Gi", "0Mi"):
        assert parse_options(["-A", "--reserve", zero, "--dead-band", zero]).reserve == 0


def test_a_namespace_to_watch_that_is_no_kubernetes_name_is_refused() -> None:
    with pytest.raises(OptionError) as caught:
        parse_options(["-n", "team-a", "-n", "a.b"])
    assert str(caught.value).startswith("dynamem run: --namespace 'a.b': not a Kubernetes name")
