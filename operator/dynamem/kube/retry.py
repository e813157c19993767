"""Retrying API and Prometheus requests: 429 and 5xx (and dropped connections) with backoff and jitter.

client-go retries a request that got ``429 Too Many Requests`` or a ``5xx`` with ``Retry-After`` after the
delay the server asks for (``rest/request.go``, ``checkWait``/``retryAfter``), and its workqueues back off
exponentially with jitter (``util/workqueue`` ``ItemExponentialFailureRateLimiter``;
``wait.Backoff{Jitter}``). dynamem does the same: wait ``Retry-After`` when the server names it, else
``base * 2**attempt`` capped, times a random factor in [1, 1 + jitter), for a few attempts. Other errors (a
conflict, a refusal, a not-found) are answers, not failures, and are returned to the caller at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

logger = logging.getLogger("dynamem.retry")

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Backoff:
    attempts: int = 5
    base_s: float = 0.2
    cap_s: float = 5.0
    jitter: float = 0.5

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            return min(retry_after, self.cap_s * 4)
        return min(self.cap_s, self.base_s * 2.0**attempt) * (1 + self.jitter * rng.random())


DEFAULT_BACKOFF = Backoff()


def retry_after_of(headers: object) -> float | None:
    """The ``Retry-After`` header in seconds, if the response names one."""
    getter = getattr(headers, "get", None)
    if getter is None:
        return None
    value = getter("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


async def with_backoff(
    call: Callable[[], Awaitable[T]],
    *,
    retryable: Callable[[BaseException], tuple[bool, float | None]],
    what: str,
    backoff: Backoff = DEFAULT_BACKOFF,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """``await call()``, retried while ``retryable(exc)`` says so; the last error is raised."""
    rng = rng or random.Random()
    for attempt in range(backoff.attempts):
        try:
            return await call()
        except Exception as exc:
            again, retry_after = retryable(exc)
            if not again or attempt == backoff.attempts - 1:
                raise
            pause = backoff.delay(attempt, retry_after, rng)
            logger.debug("%s failed (%s); retry %d in %.2fs", what, exc, attempt + 1, pause)
            await sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover
