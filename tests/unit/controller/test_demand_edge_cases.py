"""Demand readings that must not break a round: infinite values, one malformed sample among good ones."""

from __future__ import annotations

import asyncio

import httpx

from dynamem.controller.demand import DemandReading, PrometheusDemand, parse_response
from dynamem.kube.objects import ObjectKey


def vector(*samples: object) -> dict[str, object]:
    return {"status": "success", "data": {"resultType": "vector", "result": list(samples)}}


def test_parse_response_drops_infinite_sample() -> None:
    # Prometheus encodes infinities as "+Inf"; int(float("+Inf")) raises OverflowError
    payload = vector(
        {"metric": {"namespace": "office", "name": "a"}, "value": [1, "+Inf"]},
        {"metric": {"namespace": "office", "name": "b"}, "value": [1, "7"]},
    )
    assert parse_response(payload) == DemandReading(by_vm={ObjectKey("office", "b"): 7})


def test_read_never_raises_on_infinite_sample() -> None:
    payload = vector({"metric": {"namespace": "office", "name": "a"}, "value": [1, "+Inf"]})

    async def go() -> DemandReading:
        source = PrometheusDemand("http://prom.test")
        source._client = httpx.AsyncClient(
            transport=httpx.MockTransport(lambda r: httpx.Response(200, json=payload))
        )
        try:
            return await source.read()
        finally:
            await source.close()

    reading = asyncio.run(go())
    assert ObjectKey("office", "a") not in reading.by_vm


def test_one_malformed_sample_does_not_discard_the_others() -> None:
    # "malformed samples are dropped": one sample without "value" must not void the whole reading
    payload = vector(
        {"metric": {"namespace": "office", "name": "a"}, "value": [1, "5"]},
        {"metric": {"namespace": "office", "name": "b"}},
    )
    assert parse_response(payload).by_vm == {ObjectKey("office", "a"): 5}
