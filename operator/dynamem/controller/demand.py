"""Reading each guest's memory demand from Prometheus.

Demand is what KubeVirt itself calls used memory: ``kubevirt_vmi_memory_available_bytes -
kubevirt_vmi_memory_usable_bytes`` (memory the guest sees, less its MemAvailable), as virt-handler exports it
from the balloon driver's statistics. A VM with no fresh sample has unknown demand, and the policy then holds
its memory: shrinking a guest we cannot see would be blind. When Prometheus cannot be reached at all, every
demand is unknown, the round still runs, and nothing is shrunk.
"""

from __future__ import annotations

import math
import ssl
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from dynamem.controller.ports import DemandReading, DemandSource
from dynamem.kube.objects import ObjectKey
from dynamem.kube.retry import RETRIED_STATUSES, Backoff, retry_after_of, with_backoff

__all__ = ["DEMAND_QUERY", "DemandReading", "DemandSource", "PrometheusDemand", "parse_response"]

# Only samples younger than a minute: an instant query otherwise looks back five minutes, and a guest whose
# metrics stopped would keep its old demand (and could be shrunk on it).
DEMAND_QUERY = (
    "max by (namespace, name) ("
    "(kubevirt_vmi_memory_available_bytes - kubevirt_vmi_memory_usable_bytes)"
    " and (time() - timestamp(kubevirt_vmi_memory_usable_bytes) < 60))"
)


class _Sample(BaseModel):
    metric: dict[str, str]
    value: tuple[float, str]


class _Data(BaseModel):
    resultType: str
    result: list[dict[str, Any]]


class _Response(BaseModel):
    status: str
    data: _Data | None = None
    error: str | None = None


def parse_response(payload: object) -> DemandReading:
    """Turn a Prometheus instant-query response into demand per VM; malformed samples are dropped."""
    try:
        response = _Response.model_validate(payload)
    except ValidationError as exc:
        return DemandReading(error=f"unexpected Prometheus response: {exc.errors()[0]['msg']}")
    if response.status != "success" or response.data is None:
        return DemandReading(error=f"Prometheus query failed: {response.error or response.status}")
    found: dict[ObjectKey, int] = {}
    for raw in response.data.result:
        try:  # each sample on its own: one malformed sample must not hide the others
            sample = _Sample.model_validate(raw)
            value = float(sample.value[1])
        except (ValidationError, ValueError):
            continue
        namespace, name = sample.metric.get("namespace"), sample.metric.get("name")
        if not namespace or not name:
            continue
        if not math.isfinite(value) or value < 0:  # NaN, infinite or negative: no usable reading
            continue
        found[ObjectKey(namespace, name)] = int(value)
    return DemandReading(by_vm=found)


# A round would rather hold memory than wait long for Prometheus.
PROMETHEUS_BACKOFF = Backoff(attempts=3, base_s=0.2, cap_s=1.0)


class PrometheusDemand:
    """Demand from a Prometheus server's HTTP API (``/api/v1/query``).

    ``token_file``: a bearer token, read at every query (service-account tokens are rotated); ``ca_file``:
    the CA bundle that signed the server's certificate. OpenShift's Thanos querier needs both. Every query
    has a timeout; 429, 5xx and dropped connections are retried with backoff and jitter, briefly, since a
    round would rather hold memory than wait.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        query: str = DEMAND_QUERY,
        token_file: str | None = None,
        ca_file: str | None = None,
        backoff: Backoff = PROMETHEUS_BACKOFF,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.query = query
        self.token_file = token_file
        self.backoff = backoff
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self._client = httpx.AsyncClient(timeout=timeout, verify=verify, transport=transport)

    def _headers(self) -> dict[str, str]:
        if self.token_file is None:
            return {}
        token = Path(self.token_file).read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    async def _query(self) -> httpx.Response:
        response = await self._client.get(
            f"{self.url}/api/v1/query", params={"query": self.query}, headers=self._headers()
        )
        response.raise_for_status()
        return response

    async def read(self) -> DemandReading:
        try:
            response = await with_backoff(
                self._query, retryable=_retryable, what="Prometheus query", backoff=self.backoff
            )
            return parse_response(response.json())
        except (httpx.HTTPError, ValueError, ArithmeticError, OSError) as exc:
            return DemandReading(error=f"Prometheus at {self.url} unreachable: {exc!r}")

    async def close(self) -> None:
        await self._client.aclose()


def _retryable(exc: BaseException) -> tuple[bool, float | None]:
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return status in RETRIED_STATUSES, retry_after_of(exc.response.headers)
    return isinstance(exc, httpx.TransportError), None
