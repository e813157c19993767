"""Retries of API requests (:mod:`dynamem.kube.retry`, :func:`dynamem.kube.api.retryable`): 429, 5xx and
dropped connections are retried with backoff, jitter and Retry-After; answers (409, 404, 422) are not."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping

import aiohttp
import pytest

from dynamem.kube.api import ApiException, KubeApi, retryable
from dynamem.kube.retry import Backoff, with_backoff


class Flaky:
    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


BACKOFF = Backoff(attempts=4, base_s=0.2, cap_s=1.0, jitter=0.5)


def run(call: Flaky, backoff: Backoff = BACKOFF) -> list[float]:
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    asyncio.run(
        with_backoff(
            call, retryable=retryable, what="test", backoff=backoff, rng=random.Random(1), sleep=sleep
        )
    )
    return pauses


def too_many(retry_after: str | None = None) -> ApiException:
    exc = ApiException(status=429, reason="Too Many Requests")
    exc.headers = {"Retry-After": retry_after} if retry_after else {}
    return exc


def test_429_5xx_and_dropped_connections_are_retried_with_growing_jittered_pauses() -> None:
    call = Flaky(too_many(), ApiException(status=503), aiohttp.ServerDisconnectedError())
    pauses = run(call)
    assert call.calls == 4
    # base 0.2 s doubling (0.2, 0.4, 0.8), each times a factor in [1, 1.5)
    for pause, base in zip(pauses, (0.2, 0.4, 0.8), strict=True):
        assert base <= pause < base * 1.5


def test_retry_after_is_honoured() -> None:
    call = Flaky(too_many("3"))
    assert run(call) == [3.0]


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_answers_are_not_retried(status: int) -> None:
    call = Flaky(ApiException(status=status))
    with pytest.raises(ApiException):
        run(call)
    assert call.calls == 1


def test_the_last_failure_is_raised_when_attempts_run_out() -> None:
    call = Flaky(*(ApiException(status=500) for _ in range(5)))
    with pytest.raises(ApiException):
        run(call, Backoff(attempts=3, base_s=0.0, cap_s=0.0))
    assert call.calls == 3


class KubeVirtCrList:
    """``list_cluster_custom_object`` of the KubeVirt CR: fails with ``failures`` first, then answers."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.items: list[object] = [
            {"spec": {"configuration": {"migrations": {"parallelMigrationsPerCluster": 3}}}}
        ]

    @classmethod
    def empty(cls) -> KubeVirtCrList:
        found = cls()
        found.items = []
        return found

    async def list_cluster_custom_object(self, *_: object, **__: object) -> dict[str, object]:
        if self.failures:
            raise self.failures.pop(0)
        return {"items": self.items}


def test_the_kubevirt_cr_is_read_through_an_api_server_restart_and_never_stops_the_operator() -> None:
    """Read at start-up and with every periodic LIST: an API server restarting then must neither crash the
    operator (kopf stops on a failed start-up handler) nor lose the setting when it comes back within the
    retries. Unreadable now or not allowed: None (whoever asks keeps what it had); no CRD or no CR: empty
    (KubeVirt's defaults)."""

    def read(lister: KubeVirtCrList) -> Mapping[str, object] | None:
        api = object.__new__(KubeApi)
        api.custom = lister  # type: ignore[assignment]
        return asyncio.run(api.kubevirt_configuration())

    refused = aiohttp.ClientConnectionError("Connect call failed")
    three = {"migrations": {"parallelMigrationsPerCluster": 3}}
    assert read(KubeVirtCrList(refused, refused)) == three  # back within the retries
    assert read(KubeVirtCrList(*[refused] * 10)) is None  # never back: unknown now, and go on
    assert read(KubeVirtCrList(*[ApiException(status=503, reason="Unavailable")] * 10)) is None
    assert read(KubeVirtCrList(ApiException(status=404, reason="Not Found"))) == {}
    assert read(KubeVirtCrList(ApiException(status=403, reason="Forbidden"))) is None  # kept, or defaults
    assert read(KubeVirtCrList.empty()) == {}  # no KubeVirt CR: KubeVirt's defaults


class SlowStatus:
    """The status subresource of an API server too busy to answer: every patch a 503 (Retry-After 0)."""

    def __init__(self) -> None:
        self.calls = 0

    async def patch_namespaced_custom_object_status(self, *_: object, **__: object) -> None:
        self.calls += 1
        exc = ApiException(status=503, reason="Service Unavailable")
        exc.headers = {"Retry-After": "0"}
        raise exc


def test_a_write_retried_after_the_lease_lapsed_is_not_sent_again() -> None:
    """The leader's renewals fail while its status patch is retried: once it may no longer write, no further
    attempt goes out (another replica may lead by then, and a merge patch would overwrite its status)."""
    from dynamem.controller.leadership import NotLeading

    status = SlowStatus()
    api = object.__new__(KubeApi)
    api.custom = status  # type: ignore[assignment]
    leading = [True, True]  # may write for the first two attempts, then the Lease lapses

    def check() -> None:
        if not (leading.pop(0) if leading else False):
            raise NotLeading("the lease lapsed")

    api.guard_writes(check)
    with pytest.raises(NotLeading):
        asyncio.run(api.patch_vmm_status("ns", "finance", {"reason": "x"}))
    assert status.calls == 2

    unguarded = object.__new__(KubeApi)  # reads and a standalone operator: no guard, every retry made
    unguarded.custom = status = SlowStatus()  # type: ignore[assignment]
    unguarded._write_guard = None
    with pytest.raises(ApiException):
        asyncio.run(unguarded.patch_vmm_status("ns", "finance", {"reason": "x"}))
    assert status.calls == 5
