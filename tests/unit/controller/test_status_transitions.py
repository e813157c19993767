"""Every transition of Ready or NodeOverSubscribed is posted as an Event, clearing included."""

from __future__ import annotations

import asyncio
import copy

from .test_status import EARLIER, FakeWriter, StatusBook, fed_back, settled


def test_node_over_subscribed_clearing_posts_an_event() -> None:
    item, status = settled()  # NodeOverSubscribed False now
    before = copy.deepcopy(status)
    for c in before["conditions"]:
        c["lastTransitionTime"] = EARLIER
        if c["type"] == "NodeOverSubscribed":
            c.update(status="True", reason="FloorsExceedPool")
    writer = FakeWriter()
    assert asyncio.run(StatusBook().write(writer, fed_back(item, before, "3"), status, now=0)) is True
    assert [(e.type_, e.reason) for e in writer.events] == [("Normal", "Fits")]
