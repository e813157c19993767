"""Flag values dynamem run refuses with an OptionError naming the flag and the value."""

from __future__ import annotations

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
    ],
)
def test_refused(argv: list[str], prefix: str) -> None:
    with pytest.raises(OptionError) as caught:
        parse_options(["-A", *argv])
    assert str(caught.value).startswith(prefix)
