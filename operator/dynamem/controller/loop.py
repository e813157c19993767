"""The balancing loop: a round every ``--interval`` seconds, or soon after a wake-up, on the leader.

kopf's handlers (:mod:`dynamem.controller.handlers`) only feed the loop: they keep the view of the cluster
(:mod:`dynamem.controller.view`) and set ``wake``. Who may balance is the Lease's business
(:mod:`dynamem.controller.leadership`); the loop

- runs rounds only while this replica may write, and every write checks the Lease again
  (:class:`~dynamem.controller.leadership.LeaderOnlyWriter`);
- starts each leadership term from a fresh LIST and a fresh balancer (nothing remembered from an earlier
  term or from standing by: what must survive lives in the VirtualMachineMemory status);
- LISTs everything again when a round met an API error and every resync period (the periodic LIST right
  after the round before it is due, so that it delays no round), and a kind once after kopf re-listed it (a
  broken or ended watch), so an object deleted while a watch was down never lingers as a ghost; with every
  LIST of everything it reads the KubeVirt CR again (:mod:`dynamem.controller.kubevirt_follower`);
- has demand read ahead of the next round when given a :class:`~dynamem.controller.demand_ahead.DemandAhead`
  (the balancer's demand source): after each round it says when the next one is due, and a standby reads
  nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from dynamem.controller.balancer import Balancer
from dynamem.controller.demand_ahead import DemandAhead
from dynamem.controller.gc_tuning import collector_paused
from dynamem.controller.kubevirt_follower import KubeVirtFollower
from dynamem.controller.leadership import LeaseElector, NotLeading
from dynamem.controller.metrics import OperatorMetrics
from dynamem.controller.options import OperatorOptions
from dynamem.controller.view import ClusterView, Kind

logger = logging.getLogger("dynamem.operator")

# After a round with failed writes the next lists everything again, unless it listed less than this ago.
ERROR_RESYNC_AFTER_S = 60.0


class ClusterLister(Protocol):
    async def list_objects(
        self, kind: str, namespaces: Sequence[str] = ()
    ) -> tuple[int, list[Mapping[str, Any]]]: ...


@dataclass
class OperatorState:
    """What the registered handlers and the loop share."""

    options: OperatorOptions
    identity: str
    view: ClusterView = field(default_factory=ClusterView)
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    vmi_changed: asyncio.Event = field(default_factory=asyncio.Event)  # set with wake by a VMI's event
    elector: LeaseElector | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    rounds: int = 0
    resyncs: int = 0
    last_resync: float = float("-inf")
    beat: float = field(default_factory=time.monotonic)  # when the loop last went round (liveness.py)

    def leading(self) -> bool:
        return self.elector is None or self.elector.may_write()

    def alive(self) -> None:
        """The loop is at work now (liveness.py): it went round, or a round's write is being attempted."""
        self.beat = time.monotonic()


async def resync(state: OperatorState, lister: ClusterLister, kinds: Collection[Kind] = tuple(Kind)) -> None:
    """Replace the view's objects of ``kinds`` (default: all) with fresh LISTs."""
    namespaces = () if state.options.all_namespaces else state.options.namespaces
    lists = {}
    for kind in Kind:
        if kind in kinds:
            lists[kind] = await lister.list_objects(kind.value, namespaces)
            state.alive()  # each LIST done is the loop at work: many namespaces' LISTs may take minutes
    ghosts = state.view.replace(lists)
    state.resyncs += 1
    if set(kinds) == set(Kind):
        state.last_resync = time.monotonic()
    dropped = {kind.value: n for kind, n in ghosts.items() if n}
    if dropped:
        logger.warning("fresh LIST dropped objects deleted while a watch was down: %s", dropped)


async def _list_between_rounds(state: OperatorState, lister: ClusterLister) -> bool:
    """The periodic LIST of every kind, due before the next round: made now, between rounds, not at the next
    round's start, where its LISTs (seconds at 10,000 VMs) would delay that round and age its reading.
    Returns whether it was made (not on a replica that lost the Lease during the round; not when it failed,
    which has the next round list everything instead)."""
    if not state.leading():
        return False
    state.view.relisted.clear()  # every kind is listed now; a re-list that starts meanwhile asks again
    try:
        await resync(state, lister)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.warning("periodic LIST between rounds failed (the next round lists everything): %s", exc)
        state.view.needs_resync = True
        return False
    return True


async def wake_on_leadership(state: OperatorState) -> None:
    """Gaining or losing the Lease wakes the loop at once."""
    if state.elector is None:
        return
    while True:
        await state.elector.changed.wait()
        state.elector.changed.clear()
        state.wake.set()


async def balancing_loop(
    state: OperatorState,
    make_balancer: Callable[[], Balancer],
    lister: ClusterLister,
    ahead: DemandAhead | None = None,
    kubevirt: KubeVirtFollower | None = None,
) -> None:
    """Run a round every interval, or soon after a wake-up, while this replica leads; ``ahead``: the
    balancer's demand source, read ahead of each round; ``kubevirt``: the KubeVirt CR's settings, read
    again with every periodic LIST."""
    try:
        await _balance(state, make_balancer, lister, ahead, kubevirt)
    finally:
        if ahead is not None:
            await ahead.stop()


async def _balance(
    state: OperatorState,
    make_balancer: Callable[[], Balancer],
    lister: ClusterLister,
    ahead: DemandAhead | None,
    kubevirt: KubeVirtFollower | None = None,
) -> None:
    options = state.options

    async def follow_kubevirt() -> None:
        """The KubeVirt CR read again with the periodic LIST; what changed applies from the next round."""
        if kubevirt is not None and balancer is not None and await kubevirt.refresh():
            balancer.options = kubevirt.options

    balancer: Balancer | None = None
    term = -1
    listed_after_round = False  # the periodic LIST ran after the last round: not again before the next
    while True:
        state.alive()
        try:
            if not state.leading():
                state.metrics.standby()
                if state.elector is None or not state.elector.leading:
                    # the term ended: the next one starts afresh (a new balancer, a fresh list)
                    balancer = None
                    if ahead is not None:
                        await ahead.stop()
                # else one renewal failed within the term: no round until one succeeds, and what the
                # balancer remembers (backoffs, plain moves, lost races told) is kept
            else:
                current = state.elector.term if state.elector is not None else 0
                if current != term or balancer is None:
                    term, balancer = current, make_balancer()
                    state.view.needs_resync = True  # a new term starts from a fresh list
                if not listed_after_round and time.monotonic() - state.last_resync >= options.resync_period_s:
                    state.view.needs_resync = True
                listed_after_round = False
                kinds = state.view.kinds_to_list()
                if kinds:
                    await resync(state, lister, kinds)
                    if set(kinds) == set(Kind):
                        await follow_kubevirt()
                if kubevirt is not None and kubevirt.due():  # not read yet: read before rounds, backing off
                    await follow_kubevirt()
                started = time.perf_counter()  # the round's duration counts making its view, too
                with collector_paused():  # the garbage collector runs between rounds (gc_tuning.py)
                    result = await balancer.run_round(state.view.observed(), started=started)
                state.rounds += 1
                since_list = time.monotonic() - state.last_resync
                if result.api_errors and since_list >= min(ERROR_RESYNC_AFTER_S, options.resync_period_s):
                    # a write failed: perhaps on a view the watch left behind; but not a LIST of everything
                    # every round while the API server is throttling or failing (429, 5xx)
                    state.view.needs_resync = True
                elif time.monotonic() + options.min_gap_s + options.interval_s - state.last_resync >= (
                    options.resync_period_s
                ):
                    listed_after_round = await _list_between_rounds(state, lister)
                    if listed_after_round:
                        await follow_kubevirt()
                logger.debug(
                    "round %d: %d memory writes, %d status writes, %d deferred, %.3fs",
                    state.rounds,
                    result.memory_writes,
                    result.status_writes,
                    result.deferred,
                    result.duration_s,
                )
        except asyncio.CancelledError:
            raise
        except NotLeading as exc:
            logger.warning("round stopped: %s", exc)
        except Exception:
            logger.exception("balancing round failed; the next one starts from a fresh list")
            state.view.needs_resync = True
        if ahead is not None and balancer is not None:
            ahead.read_ahead(options.min_gap_s + options.interval_s)
        await _between_rounds(state, balancer)


async def _between_rounds(state: OperatorState, balancer: Balancer | None) -> None:
    """Wait for the next round: ``--min-gap``, then until a wake-up or ``--interval`` more.

    Meanwhile, while a change the balancer wrote waits for its VMI to show it, each VMI event has the
    balancer make that change's migration at once (:meth:`Balancer.carry_out_ready`): KubeVirt's
    workload-updater makes its own within 5 s of the VMI showing the change, sooner while other migrations
    move, and the next round may be a second or more away."""
    options = state.options
    gap_ends = time.monotonic() + options.min_gap_s
    due = gap_ends + options.interval_s
    while True:
        state.alive()
        waiting = balancer.waiting_placements() if balancer is not None and state.leading() else []
        watching = bool(waiting)
        if watching and balancer is not None:
            state.vmi_changed.clear()
            try:
                await balancer.carry_out_ready(state.view.observed_of(waiting))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NotLeading, a failed create: the next round sees to it
                logger.warning("migration between rounds not made: %s", exc)
            watching = bool(balancer.waiting_placements())
        now = time.monotonic()
        if now >= due or (now >= gap_ends and state.wake.is_set()):
            break
        events = [state.vmi_changed] if watching else []
        if now >= gap_ends:
            events.append(state.wake)
        timeout = (gap_ends if now < gap_ends else due) - now
        if not events:
            await asyncio.sleep(timeout)
            continue
        waits = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
    state.wake.clear()
