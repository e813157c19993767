"""Which replica balances: a ``coordination.k8s.io/v1`` Lease, held, renewed and released as client-go does.

This follows client-go's ``tools/leaderelection/leaderelection.go`` (``tryAcquireOrRenew``, ``renew``,
``release``) with a ``LeaseLock`` (``tools/leaderelection/resourcelock/leaselock.go``):

- a candidate reads the Lease; it may take it when nobody holds it, or when the holder's record has not
  changed for ``leaseDurationSeconds`` **as observed by this candidate's own clock** (client-go's
  ``observedTime``: clocks of two replicas are never compared);
- every update carries the ``resourceVersion`` it read, so two candidates racing for an expired Lease cannot
  both win: the API server refuses the second with a conflict;
- the leader renews every ``retry`` seconds; if it cannot renew within ``renew_deadline`` it steps down;
- a candidate tries every ``retry`` seconds, and also at the very moment the Lease it watches expires (not up
  to one retry later), so a dead leader is replaced one Lease duration after its last renewal was seen.

Two things are stricter than client-go, because a balancing replica writes VMs:

- **it stops writing the moment a renewal fails**: :meth:`LeaseElector.may_write` is false from the first
  failed attempt until a later one succeeds (and in any case once ``renew_deadline`` has passed since the last
  success), so a replica cut off from the API server never writes on a Lease another replica may now hold;
- **it releases the Lease on shutdown** (client-go's ``ReleaseOnCancel``: holder cleared, duration 1 s), so
  a rolling update hands over in seconds, not after a full lease duration.

Each time this replica becomes leader, :attr:`LeaseElector.term` grows; the loop starts a new term from a
fresh LIST of the cluster, never from what it saw while standing by.

kubernetes' own ``kubernetes.aio.leaderelection`` is not used: it keeps its leader task running while a
renewal is failing and has no release on shutdown, the two properties above.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from dynamem.controller.ports import ClusterWriter
from dynamem.kube.api import ApiException

logger = logging.getLogger("dynamem.leadership")


@dataclass(frozen=True, slots=True)
class LeaseConfig:
    """Where the Lease lives and its timing (client-go's defaults: 15 s, 10 s, 2 s)."""

    namespace: str
    name: str
    identity: str
    duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_s < self.renew_deadline_s < self.duration_s:
            raise ValueError(
                f"lease timing: need 0 < retry ({self.retry_s}) < renew deadline ({self.renew_deadline_s})"
                f" < duration ({self.duration_s})"
            )

    @classmethod
    def from_duration(cls, namespace: str, name: str, identity: str, duration_s: float) -> LeaseConfig:
        """client-go's proportions (15 / 10 / 2) scaled to ``duration_s``."""
        return cls(namespace, name, identity, duration_s, duration_s * 2 / 3, duration_s * 2 / 15)


def _micro_time(moment: float) -> str:
    """A ``MicroTime`` as the API server writes it."""
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """Campaigns for a Lease and keeps it; ``may_write()`` tells the writer whether it may write now.

    ``leases``: a ``kubernetes.aio`` ``CoordinationV1Api``. ``clock``: monotonic seconds (observed times);
    ``wall``: epoch seconds (what is written into the Lease for humans and other tools).
    """

    def __init__(
        self,
        leases: Any,
        config: LeaseConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.leases = leases
        self.config = config
        self.clock = clock
        self.wall = wall
        self.sleep = sleep
        self.leading = False
        self.term = 0  # grows each time this replica becomes leader
        self.changed = asyncio.Event()  # set on every gain or loss of leadership
        # clock() when the last successful acquire or renewal was sent: a peer counts its takeover from when
        # it reads the record, which is no earlier, so the write window is never longer than the peer's wait
        self._renewed_at = float("-inf")
        self._attempt_sent_at = float("-inf")
        self._last_attempt_ok = False
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = float("-inf")
        self._resource_version: str | None = None
        self._peer_expires_at: float | None = None  # clock() at which a live peer's Lease expires
        self._took_over = False  # the last successful attempt acquired the Lease (not a renewal of ours)

    def may_write(self) -> bool:
        """Leader, the last renewal succeeded, and it is younger than the renew deadline."""
        return (
            self.leading
            and self._last_attempt_ok
            and self.clock() < self._renewed_at + self.config.renew_deadline_s
        )

    async def run(self) -> None:
        """Campaign and renew until cancelled; release the Lease when cancelled while leading."""
        try:
            while True:
                ok = await self._try_acquire_or_renew()
                self._after_attempt(ok)
                await self.sleep(self.next_try_in())
        finally:
            if self.leading:
                await asyncio.shield(self.release())

    def next_try_in(self) -> float:
        """Seconds to the next attempt: every ``retry`` seconds, as client-go; a candidate watching a live
        peer's Lease also tries the moment that Lease expires (by its own clock), not up to one retry later,
        so a dead leader is replaced one Lease duration after its last renewal was seen."""
        if self._peer_expires_at is None:
            return self.config.retry_s
        return min(self.config.retry_s, max(0.0, self._peer_expires_at - self.clock()) + 0.01)

    def _after_attempt(self, ok: bool) -> None:
        self._last_attempt_ok = ok
        if ok:
            # from the request, not the answer: a replace committed at once and answered seconds later
            # (a slow API server, a busy event loop) would otherwise let this replica write that much longer
            # than the peer waits before it takes the Lease
            self._renewed_at = self._attempt_sent_at
            if self.leading and self._took_over:
                # another replica held the Lease between two of our attempts (this one stalled for a Lease's
                # length): what this replica knew of its last term may be stale, so a new term starts
                logger.warning(
                    "%s took the lease %s back from another holder", self.config.identity, self._lease_name
                )
                self.leading = False
            if not self.leading:
                self.leading = True
                self.term += 1
                self.changed.set()
                logger.info("%s now leads (lease %s)", self.config.identity, self._lease_name)
        elif self.leading and self.clock() >= self._renewed_at + self.config.renew_deadline_s:
            self.leading = False
            self.changed.set()
            logger.warning(
                "%s lost the lease %s: not renewed in time", self.config.identity, self._lease_name
            )
        elif self.leading:
            logger.warning("%s could not renew the lease: not writing until it does", self.config.identity)

    @property
    def _lease_name(self) -> str:
        return f"{self.config.namespace}/{self.config.name}"

    async def _try_acquire_or_renew(self) -> bool:
        cfg = self.config
        self._attempt_sent_at = self.clock()
        now_wall = self.wall()
        self._peer_expires_at = None
        self._took_over = False
        try:
            lease = await self.leases.read_namespaced_lease(cfg.name, cfg.namespace, _request_timeout=5)
        except ApiException as exc:
            if exc.status != 404:
                logger.warning("lease %s unreadable: %s", self._lease_name, exc.reason)
                return False
            body = self._body(None, now_wall, acquire=True, transitions=0)
            try:
                await self.leases.create_namespaced_lease(cfg.namespace, body, _request_timeout=5)
            except Exception as create_exc:
                logger.info("lease %s not created: %s", self._lease_name, create_exc)
                return False
            self._took_over = True
            return True
        except Exception as exc:
            logger.warning("lease %s unreadable: %s", self._lease_name, exc)
            return False

        spec = lease.spec
        holder = (spec.holder_identity or "") if spec is not None else ""
        renewed = str(spec.renew_time) if spec is not None else ""
        if self._observed != (holder, renewed):
            self._observed = (holder, renewed)
            self._observed_at = self.clock()
        duration = float(spec.lease_duration_seconds or cfg.duration_s) if spec is not None else 0.0
        if holder and holder != cfg.identity and self.clock() < self._observed_at + duration:
            self._peer_expires_at = self._observed_at + duration
            return False  # held by a live peer
        mine = holder == cfg.identity
        transitions = int(spec.lease_transitions or 0) if spec is not None else 0
        body = self._body(
            lease,
            now_wall,
            acquire=not mine,
            transitions=transitions if mine else transitions + 1,
        )
        try:
            await self.leases.replace_namespaced_lease(cfg.name, cfg.namespace, body, _request_timeout=5)
        except Exception as exc:
            logger.info("lease %s not %s: %s", self._lease_name, "renewed" if mine else "taken", exc)
            return False
        self._took_over = not mine
        return True

    def _body(self, lease: Any, now_wall: float, *, acquire: bool, transitions: int) -> dict[str, Any]:
        cfg = self.config
        metadata: dict[str, Any] = {"name": cfg.name, "namespace": cfg.namespace}
        acquired = _micro_time(now_wall)
        if lease is not None:
            metadata["resourceVersion"] = lease.metadata.resource_version  # optimistic concurrency
            if not acquire and lease.spec is not None and lease.spec.acquire_time is not None:
                acquired = _micro_time(lease.spec.acquire_time.timestamp())
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": cfg.identity,
                "leaseDurationSeconds": max(1, round(cfg.duration_s)),
                "acquireTime": acquired,
                "renewTime": _micro_time(now_wall),
                "leaseTransitions": transitions,
            },
        }

    async def release(self) -> None:
        """Give the Lease up (holder cleared, duration 1 s) so a peer takes over at once."""
        cfg = self.config
        self.leading = False
        self._last_attempt_ok = False
        self.changed.set()
        try:
            lease = await self.leases.read_namespaced_lease(cfg.name, cfg.namespace, _request_timeout=5)
            if lease.spec is None or lease.spec.holder_identity != cfg.identity:
                return
            now = _micro_time(self.wall())
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": cfg.name,
                    "namespace": cfg.namespace,
                    "resourceVersion": lease.metadata.resource_version,
                },
                "spec": {
                    "holderIdentity": None,
                    "leaseDurationSeconds": 1,
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": int(lease.spec.lease_transitions or 0),
                },
            }
            await self.leases.replace_namespaced_lease(cfg.name, cfg.namespace, body, _request_timeout=5)
            logger.info("%s released the lease %s", cfg.identity, self._lease_name)
        except Exception as exc:
            logger.warning(
                "lease %s not released (a peer takes it when it expires): %s", self._lease_name, exc
            )


# The term of the write under way in this task, for the guard the API client runs before each retry of it.
_WRITING_TERM: ContextVar[int | None] = ContextVar("dynamem_writing_term", default=None)


class NotLeading(RuntimeError):
    """A write was about to be made by a replica that does not (or no longer surely) hold the Lease."""


class LeaderOnlyWriter:
    """A :class:`ClusterWriter` that checks the Lease right before every write, not once per round."""

    def __init__(self, writer: ClusterWriter, elector: LeaseElector, term: int | None = None) -> None:
        self.writer = writer
        self.elector = elector
        self.term = term

    def check(self) -> None:
        """Raise :class:`NotLeading` unless the Lease was renewed recently enough to write now, and, for a
        writer bound to a ``term``, in that term: a round of an earlier term (another replica led between)
        plans on a world that may have changed, and its writes stop with the term. An unbound writer (the
        guard the API client runs before every retry of a write) checks the term of the write under way."""
        if not self.elector.may_write():
            raise NotLeading(f"{self.elector.config.identity} does not hold a freshly renewed lease")
        term = self.term if self.term is not None else _WRITING_TERM.get()
        if term is not None and self.elector.term != term:
            raise NotLeading(f"{self.elector.config.identity}: term {term} ended")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Checked now, and the write's term known to every retry of it (:data:`_WRITING_TERM`)."""
        self.check()
        token = _WRITING_TERM.set(self.term)
        try:
            yield
        finally:
            _WRITING_TERM.reset(token)

    async def apply_vm_memory(
        self,
        namespace: str,
        name: str,
        guest: str,
        max_guest: str | None,
        *,
        resource_version: str | None,
        force: bool = False,
        dry_run: bool = False,
        placement: str | None = None,
        hold: str | None = None,
    ) -> Mapping[str, Any]:
        with self._writing():
            return await self.writer.apply_vm_memory(
                namespace,
                name,
                guest,
                max_guest,
                resource_version=resource_version,
                force=force,
                dry_run=dry_run,
                placement=placement,
                hold=hold,
            )

    async def create_migration(
        self, namespace: str, vmi: str, node: str, *, reason: str, dry_run: bool = False
    ) -> str:
        with self._writing():
            return await self.writer.create_migration(namespace, vmi, node, reason=reason, dry_run=dry_run)

    async def patch_vmm_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        with self._writing():
            await self.writer.patch_vmm_status(namespace, name, status)

    async def create_event(
        self,
        regarding: Mapping[str, Any],
        *,
        type_: str,
        reason: str,
        note: str,
        action: str,
        now: float | None = None,
    ) -> None:
        with self._writing():
            await self.writer.create_event(
                regarding, type_=type_, reason=reason, note=note, action=action, now=now
            )
