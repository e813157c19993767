"""Guest demand from Prometheus (:mod:`dynamem.controller.demand`): a reading, or an error, never a raise."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from dynamem.controller.demand import (
    DEMAND_QUERY,
    DemandReading,
    PrometheusDemand,
    parse_response,
    signal_queries,
)
from dynamem.controller.ports import GuestSignals
from dynamem.kube.objects import GI, ObjectKey
from dynamem.kube.retry import Backoff


def sample(namespace: str | None, name: str | None, value: str) -> dict[str, Any]:
    metric = {k: v for k, v in (("namespace", namespace), ("name", name)) if v is not None}
    return {"metric": metric, "value": [1700000000.123, value]}


def success(*samples: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": list(samples)}}


SUCCESSES = [
    # 2.4Gi = 2576980377.6 bytes: truncated to 2576980377
    pytest.param(
        success(sample("office", "finance", "2576980377.6"), sample("office", "sales", "536870912")),
        {ObjectKey("office", "finance"): 2576980377, ObjectKey("office", "sales"): GI // 2},
        id="two-vms",
    ),
    pytest.param(success(), {}, id="empty-vector"),
    pytest.param(success(sample("office", "a", "0")), {ObjectKey("office", "a"): 0}, id="zero"),
    pytest.param(success(sample("office", "a", "1e9")), {ObjectKey("office", "a"): 10**9}, id="exponent"),
    pytest.param(success(sample("office", "a", "NaN")), {}, id="nan-dropped"),
    pytest.param(success(sample("office", "a", "-4096")), {}, id="negative-dropped"),
    pytest.param(success(sample("office", "a", "lots")), {}, id="not-a-number-dropped"),
    pytest.param(success(sample(None, "a", "1")), {}, id="no-namespace-dropped"),
    pytest.param(success(sample("office", None, "1")), {}, id="no-name-dropped"),
    pytest.param(success(sample("", "a", "1")), {}, id="empty-namespace-dropped"),
    # the good sample survives the bad ones next to it
    pytest.param(
        success(sample("office", "a", "NaN"), sample(None, "b", "5"), sample("office", "c", "7")),
        {ObjectKey("office", "c"): 7},
        id="good-among-bad",
    ),
]


@pytest.mark.parametrize(("payload", "expected"), SUCCESSES)
def test_parse_response_success(payload: dict[str, Any], expected: dict[ObjectKey, int]) -> None:
    reading = parse_response(payload)
    assert reading.error is None
    assert dict(reading.by_vm) == expected


@pytest.mark.parametrize(("payload", "expected"), SUCCESSES)
def test_parse_response_success_sample_by_sample(
    payload: dict[str, Any], expected: dict[ObjectKey, int]
) -> None:
    """The same answers with a sample without a value beside them: not well formed as a whole, they are read
    sample by sample (``_values``), which drops the same samples."""
    broken = {"metric": {"namespace": "office", "name": "broken"}}
    reading = parse_response(
        {**payload, "data": {**payload["data"], "result": [*payload["data"]["result"], broken]}}
    )
    assert reading.error is None
    assert dict(reading.by_vm) == expected


@pytest.mark.parametrize(
    ("payload", "error_start"),
    [
        pytest.param(
            {"status": "error", "errorType": "bad_data", "error": "parse error at char 4"},
            "Prometheus query failed: parse error at char 4",
            id="error-status",
        ),
        pytest.param({"status": "error"}, "Prometheus query failed: error", id="error-without-message"),
        pytest.param({"status": "success"}, "Prometheus query failed: success", id="success-without-data"),
        pytest.param({"data": {}}, "unexpected Prometheus response: Field required", id="no-status"),
        pytest.param("<html>", "unexpected Prometheus response", id="not-an-object"),
        pytest.param(None, "unexpected Prometheus response", id="null"),
        pytest.param(
            {"status": "success", "data": {"resultType": "vector", "result": "none"}},
            "unexpected Prometheus response",
            id="result-not-a-list",
        ),
    ],
)
def test_parse_response_errors(payload: object, error_start: str) -> None:
    reading = parse_response(payload)
    assert reading.by_vm == {}
    assert reading.error is not None
    assert reading.error.startswith(error_start)


def test_reading_of_unknown_vm_is_none() -> None:
    reading = DemandReading(by_vm={ObjectKey("office", "a"): 5})
    assert reading.of(ObjectKey("office", "a")) == 5
    assert reading.of(ObjectKey("office", "b")) is None
    assert reading.of(ObjectKey("other", "a")) is None


def read_with(
    handler: Any, url: str = "http://prometheus.test:9090/", signals: dict[str, str] | None = None
) -> DemandReading:
    async def go() -> DemandReading:
        source = PrometheusDemand(url, timeout=1.0, signals=signals)
        source._client = httpx.AsyncClient(transport=httpx.MockTransport(handler), timeout=1.0)
        try:
            return await source.read()
        finally:
            await source.close()

    return asyncio.run(go())


def test_read_queries_the_instant_api() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=success(sample("office", "finance", str(3 * GI))))

    reading = read_with(handler)
    assert reading.by_vm == {ObjectKey("office", "finance"): 3 * GI}
    asked = sorted(r.url.params["query"] for r in seen)  # all at once: in no particular order
    assert asked == sorted([DEMAND_QUERY, *signal_queries().values()])
    (request,) = [r for r in seen if r.url.params["query"] == DEMAND_QUERY]
    assert request.method == "GET"
    assert str(request.url).startswith("http://prometheus.test:9090/api/v1/query?")  # trailing / dropped
    assert request.url.params["query"] == DEMAND_QUERY
    assert "kubevirt_vmi_memory_available_bytes - kubevirt_vmi_memory_usable_bytes" in DEMAND_QUERY


@pytest.mark.parametrize(
    ("response", "error_part"),
    [
        pytest.param(httpx.Response(503, text="down"), "503", id="http-503"),
        pytest.param(httpx.Response(200, text="<html>not json"), "unreachable", id="not-json"),
        pytest.param(
            httpx.Response(200, json={"status": "error", "error": "timeout"}),
            "Prometheus query failed: timeout",
            id="query-error",
        ),
    ],
)
def test_read_bad_answers_are_errors(response: httpx.Response, error_part: str) -> None:
    reading = read_with(lambda request: response)
    assert reading.by_vm == {}
    assert reading.error is not None and error_part in reading.error


def test_read_connection_refused_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    reading = read_with(handler)
    assert reading.by_vm == {}
    assert reading.error is not None
    assert reading.error.startswith("Prometheus at http://prometheus.test:9090 unreachable: ConnectError")


def test_read_unreachable_url_is_an_error() -> None:
    # port 9 (discard) on the loopback: nothing listens, the connection is refused at once
    async def go() -> DemandReading:
        source = PrometheusDemand("http://127.0.0.1:9", timeout=1.0)
        try:
            return await source.read()
        finally:
            await source.close()

    reading = asyncio.run(go())
    assert reading.by_vm == {}
    assert reading.error is not None and "unreachable" in reading.error


def test_read_payload_is_json_roundtrip() -> None:
    # what a real server sends: bytes of JSON, values as strings
    body = json.dumps(success(sample("office", "a", "1048576"))).encode()
    reading = read_with(lambda request: httpx.Response(200, content=body))
    assert reading.by_vm == {ObjectKey("office", "a"): 1048576}


def test_read_takes_each_guests_paging_signals_from_their_own_queries() -> None:
    queries = signal_queries(shrink_window_s=1800)
    answers = {
        DEMAND_QUERY: [sample("office", "busy", str(886 * 2**20)), sample("office", "idle", str(GI // 4))],
        queries["available"]: [sample("office", "busy", str(GI)), sample("office", "idle", str(GI))],
        queries["usable"]: [
            sample("office", "busy", str(20 * 2**20)),
            sample("office", "idle", str(GI // 2)),
        ],
        queries["used_peak"]: [sample("office", "idle", str(GI // 2))],
        queries["swap_bps"]: [sample("office", "busy", "2097152.5")],
        queries["major_faults_ps"]: [sample("office", "busy", "40"), sample("office", "gone", "9")],
        # a falling use (negative slope) is dropped, like any negative sample: no rise
        queries["used_rise_bps"]: [sample("office", "busy", "-5"), sample("office", "idle", "4096")],
    }
    # an explicit step: not one point per evaluation_interval (3,600 an hour at a 1 s interval)
    assert "[1800s:7s]" in queries["used_peak"]
    # the slope over the raw samples, no subquery (read every round, it must stay cheap), bounded by the rise
    # the samples show (their spread), only rises
    rise = queries["used_rise_bps"]
    assert "[1800s:" not in rise and ":]" not in rise
    assert (
        "deriv(kubevirt_vmi_memory_available_bytes[1800s]) - deriv(kubevirt_vmi_memory_usable_bytes[1800s])"
        in rise
    )
    assert "stddev_over_time(kubevirt_vmi_memory_usable_bytes[1800s])" in rise and rise.endswith(" > 0")
    # swap traffic in plus out, as KubeVirt's alert counts it (vmi:kubevirt_vmi_swap_traffic_bytes)
    swap_in, swap_out = (
        "kubevirt_vmi_memory_swap_in_traffic_bytes",
        "kubevirt_vmi_memory_swap_out_traffic_bytes",
    )
    assert (
        f"(rate({swap_in}[2m]) and {swap_in}) + (rate({swap_out}[2m]) and {swap_out})" in queries["swap_bps"]
    )
    assert "rate(kubevirt_vmi_memory_pgmajfault_total[" in queries["major_faults_ps"]
    # only series scraped now (the source node's series of a migrated VM ends, its old rate must not count),
    # or the last ones of a target whose scrapes fail, as for the use
    assert "and on (instance) (up == 0)" in queries["swap_bps"] and queries["swap_bps"].endswith(") > 0")
    # at rest every rate and slope is zero: only the others come back (every sample costs CPU to read)
    assert queries["major_faults_ps"].endswith(") > 0")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=success(*answers[request.url.params["query"]]))

    reading = read_with(handler, "http://prometheus.test", signals=queries)
    busy, idle = ObjectKey("office", "busy"), ObjectKey("office", "idle")
    assert reading.signals_of(busy) == GuestSignals(
        available=GI, usable=20 * 2**20, used_peak=None, swap_bps=2097152.5, major_faults_ps=40.0
    )
    assert reading.signals_of(idle) == GuestSignals(
        available=GI, usable=GI // 2, used_peak=GI // 2, used_rise_bps=4096.0
    )
    assert ObjectKey("office", "gone") not in reading.signals  # no demand, no signals


def test_the_demand_and_signal_queries_are_asked_at_once() -> None:
    """One round trip per round, not six in a row: a round's demand read costs the slowest query, not their
    sum (each of them can take up to the timeout when Prometheus is slow)."""
    queries = signal_queries()
    in_flight = 0
    most = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        if request.url.params["query"] == DEMAND_QUERY:
            return httpx.Response(200, json=success(sample("office", "a", "5")))
        return httpx.Response(200, json=success())

    reading = read_with(handler, "http://prometheus.test", signals=queries)
    assert reading.error is None and reading.of(ObjectKey("office", "a")) == 5
    assert most == 1 + len(queries)


def test_a_signal_prometheus_cannot_give_leaves_demand_known() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params["query"] == DEMAND_QUERY:
            return httpx.Response(200, json=success(sample("office", "a", "5")))
        return httpx.Response(200, json={"status": "error", "error": "bad_data"})

    reading = read_with(handler)
    assert reading.error is None and reading.of(ObjectKey("office", "a")) == 5
    assert reading.signals_of(ObjectKey("office", "a")) == GuestSignals()


# --- the client: bearer token, retries (issue 10, item 7) ---------------------------------------------------


def test_prometheus_gets_the_bearer_token_read_at_each_query_and_429_is_retried(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    seen: list[str | None] = []
    answers = [httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(503)]

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        if answers:
            return answers.pop(0)
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": []}})

    demand = PrometheusDemand(
        "https://thanos.example:9091",
        token_file=str(token),
        backoff=Backoff(attempts=3, base_s=0.0, cap_s=0.0),
        transport=httpx.MockTransport(answer),
        signals={},  # the demand query alone: this test is about the token and the retries
    )

    async def two_reads() -> tuple[object, object]:
        first = await demand.read()
        token.write_text("rotated")
        second = await demand.read()
        await demand.close()
        return first, second

    first, second = asyncio.run(two_reads())
    assert first.error is None and second.error is None  # type: ignore[attr-defined]
    assert seen == ["Bearer first", "Bearer first", "Bearer first", "Bearer rotated"]


def test_the_signal_queries_go_out_together() -> None:
    """A round waits for the slowest signal query, not for the sum of them (10,000 VMs: six big answers)."""
    queries = signal_queries()
    in_flight, most = 0, 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return httpx.Response(200, json=success(sample("office", "a", "5")))

    reading = read_with(handler, "http://prometheus.test", signals=queries)
    assert reading.signals_of(ObjectKey("office", "a")).available == 5
    assert most == len(queries) + 1  # the demand query too


def test_the_peak_over_the_shrink_window_is_read_once_a_minute_and_kept_between() -> None:
    queries = signal_queries()
    asked: list[str] = []
    peak = {"value": "100"}
    now = {"t": 1000.0}

    def handler(request: httpx.Request) -> httpx.Response:
        query = request.url.params["query"]
        asked.append(query)
        value = peak["value"] if query == queries["used_peak"] else "5"
        return httpx.Response(200, json=success(sample("office", "a", value)))

    async def go() -> list[DemandReading]:
        source = PrometheusDemand(
            "http://prometheus.test", timeout=1.0, signals=queries, clock=lambda: now["t"]
        )
        source._client = httpx.AsyncClient(transport=httpx.MockTransport(handler), timeout=1.0)
        readings = []
        try:
            for t, value in ((1000.0, "100"), (1030.0, "200"), (1060.0, "300")):
                now["t"], peak["value"] = t, value
                readings.append(await source.read())
        finally:
            await source.close()
        return readings

    first, kept, fresh = (r.signals_of(ObjectKey("office", "a")).used_peak for r in asyncio.run(go()))
    assert (first, kept, fresh) == (100, 100, 300)  # 30 s later the kept peak; 60 s later a fresh one
    assert asked.count(queries["used_peak"]) == 2
    assert asked.count(queries["usable"]) == 3 and asked.count(DEMAND_QUERY) == 3
