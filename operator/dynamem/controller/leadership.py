"""Which replica balances: kopf's peering rule, applied to the balancing loop too.

With two replicas, kopf pauses the event handling of every replica but the one with the highest priority
(same-priority replicas all pause). The balancing loop is an asyncio task of the operator, not a kopf
handler, so it applies the same rule to the same peering object before each round: it balances only while
no other live peer has a priority as high as its own. Each replica picks a random priority at start unless
one is given, as kopf's documentation suggests for highly available operators.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any


def _parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def peering_active(status: Mapping[str, Any], identity: str, priority: int, now: dt.datetime) -> bool:
    """True when no other live peer in a kopf peering object's status has priority >= ``priority``."""
    for peer_id, info in status.items():
        if peer_id == identity or not isinstance(info, Mapping):
            continue
        seen = _parse_time(info.get("lastseen"))
        lifetime = float(info.get("lifetime") or 60)
        if seen is None or seen + dt.timedelta(seconds=lifetime) < now:
            continue  # dead peer: kopf cleans it up
        if int(info.get("priority") or 0) >= priority:
            return False
    return True
