"""Which replica balances (:mod:`dynamem.controller.leadership`): kopf's rule, highest live priority only."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from dynamem.controller.leadership import peering_active

NOW = dt.datetime(2026, 3, 2, 12, 0, 0, tzinfo=dt.UTC)
ME = "me@pod-a"


def peer(
    priority: int, seen_ago_s: float = 5, lifetime: int | None = 60, fmt: str = "naive"
) -> dict[str, Any]:
    """A kopf peering entry; kopf writes lastseen as a naive UTC isoformat."""
    seen = NOW - dt.timedelta(seconds=seen_ago_s)
    stamp = {
        "naive": seen.replace(tzinfo=None).isoformat(),
        "z": seen.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "offset": seen.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat(),
    }[fmt]
    entry: dict[str, Any] = {"priority": priority, "lastseen": stamp}
    if lifetime is not None:
        entry["lifetime"] = lifetime
    return entry


@pytest.mark.parametrize(
    ("status", "active"),
    [
        pytest.param({}, True, id="no-peers"),
        pytest.param({ME: peer(10)}, True, id="only-self"),
        # self is ignored even with a higher priority entry of its own
        pytest.param({ME: peer(99)}, True, id="self-higher-ignored"),
        pytest.param({"b": peer(5)}, True, id="lower-peer"),
        pytest.param({"b": peer(10)}, False, id="equal-peer-pauses-both"),
        pytest.param({"b": peer(11)}, False, id="higher-peer"),
        pytest.param({"b": peer(5), "c": peer(20)}, False, id="one-higher-among-lower"),
        # seen 61 s ago with lifetime 60: 61 > 60, dead
        pytest.param({"b": peer(20, seen_ago_s=61)}, True, id="higher-but-dead"),
        # seen exactly 60 s ago: the deadline is now, not past: alive
        pytest.param({"b": peer(20, seen_ago_s=60)}, False, id="higher-at-deadline"),
        # lifetime 300: seen 200 s ago is alive
        pytest.param({"b": peer(20, seen_ago_s=200, lifetime=300)}, False, id="long-lifetime-alive"),
        # no lifetime: kopf's default of 60 s: 90 s ago is dead
        pytest.param({"b": peer(20, seen_ago_s=90, lifetime=None)}, True, id="default-lifetime-dead"),
        pytest.param({"b": peer(20, seen_ago_s=30, lifetime=None)}, False, id="default-lifetime-alive"),
        pytest.param({"b": peer(20, fmt="z")}, False, id="z-suffix"),
        pytest.param({"b": peer(20, fmt="offset")}, False, id="utc-offset"),
        # +02:00 stamp of 61 s ago is still 61 s ago
        pytest.param({"b": peer(20, seen_ago_s=61, fmt="offset")}, True, id="utc-offset-dead"),
        pytest.param({"b": {"priority": 20, "lastseen": "yesterday"}}, True, id="unparsable-lastseen"),
        pytest.param({"b": {"priority": 20}}, True, id="no-lastseen"),
        pytest.param({"b": "garbage"}, True, id="not-a-mapping"),
        # a priority missing counts as 0: it pauses a replica of priority 0 only
        pytest.param({"b": {"lastseen": NOW.isoformat()}}, True, id="no-priority-vs-10"),
    ],
)
def test_peering_active(status: dict[str, Any], active: bool) -> None:
    assert peering_active(status, ME, 10, NOW) is active


def test_peer_without_priority_pauses_a_zero_priority_replica() -> None:
    assert peering_active({"b": {"lastseen": NOW.isoformat()}}, ME, 0, NOW) is False
