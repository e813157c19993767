"""Another manager that sets memory.guest after dynamem did: a fight, found and left to the other side.

dynamem takes ``memory.guest`` from a manager that only wrote it once (``kubectl create``), and under
``--force-ownership`` from one that applies it declaratively (a GitOps tool, ``kubectl apply``). That is safe
only while that manager then leaves the field alone (a GitOps tool told to ignore it, README "GitOps"). One
that writes its own value again (Argo CD's self-heal without ``ignoreDifferences``, a CI job that runs
``kubectl apply`` every hour, another controller) fights dynamem, and each turn of the fight is a live
migration (every change of a running VM's memory is one in KubeVirt): dynamem grows a paging VM, the other
sets it back, KubeVirt migrates it back, dynamem grows it again.

:class:`Contests` remembers the last size dynamem wrote to each running VM, with the VM's version it was
decided on and the API server's time of the write (dynamem's managedFields entry in the apply's answer). A
later view of the VM that shows another size, owned by other managers only and written after dynamem's, is a
fight: the VM is then left to them (held, ``FieldOwnedByOtherManager`` with reason ``Contested``, a Warning
Event ``MemoryFieldContested``) for an hour, twice as long after each fight over the same VM, up to a day,
and dynamem takes the field once more when that runs out. A person's ``kubectl edit`` after a change of
dynamem's is such a write too, and is left alone for as long. A hold and its count are kept in the
VirtualMachineMemory's ``status.contest``, so a new leader (a rolling update, a failover) honours them
(:meth:`Contests.restore`); the sizes dynamem wrote live in the leader's memory only, so a fight that starts
across a change of leader is found at its next turn.

A view older than dynamem's write (the VM's version it was decided on) is not taken for the answer, nor is a
write the API server timed before dynamem's (a view whose watch event lagged). A VM deleted and made again
under its name (another uid: a restore, a Replace sync) or stopped for good (runStrategy Halted) is no
fight, and what dynamem wrote to it is forgotten. A VM with no fight for twice its last hold starts its count
again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from dynamem.kube.api import now_rfc3339, parse_rfc3339
from dynamem.kube.objects import ObjectKey, VmView, quantity_bytes, to_quantity

__all__ = [
    "CONTEST_HOLD_MAX_S",
    "CONTEST_HOLD_S",
    "Contest",
    "Contests",
    "Written",
    "fought_back",
    "hold_seconds",
    "written_at",
]

CONTEST_HOLD_S = 3600.0  # the first hold after a fight; doubled with each fight over the same VM
CONTEST_HOLD_MAX_S = 86400.0


@dataclass(frozen=True, slots=True)
class Written:
    """A size dynamem wrote to a running VM: the VM's version it was decided on, the API server's time of the
    write (RFC 3339, None when the answer did not say), and the VM's uid (a VM deleted and made again under
    the same name is another VM)."""

    guest: int
    version: str
    at: str | None
    uid: str = ""


@dataclass(frozen=True, slots=True)
class Contest:
    """A fight over a VM's memory.guest: who set it back to what, over which size of dynamem's, and until when
    dynamem leaves the VM alone."""

    managers: tuple[str, ...]
    theirs: int
    ours: int
    until: float
    fights: int
    since: float = 0.0  # when this fight was seen
    uid: str = ""  # the VM's uid: a VM made again under its name is another VM

    def to_status(self) -> dict[str, Any]:
        """What the VirtualMachineMemory's ``status.contest`` keeps, so that a new leader honours the hold."""
        return {
            "managers": list(self.managers),
            "theirs": to_quantity(self.theirs),
            "ours": to_quantity(self.ours),
            "fights": self.fights,
            "since": now_rfc3339(self.since),
            "until": now_rfc3339(self.until),
            "vmUID": self.uid,
        }

    @classmethod
    def from_status(cls, raw: object) -> Contest | None:
        """The contest a status keeps, or None when there is none or it does not parse."""
        if not isinstance(raw, Mapping):
            return None
        managers = raw.get("managers")
        theirs, ours = quantity_bytes(raw.get("theirs")), quantity_bytes(raw.get("ours"))
        since, until = parse_rfc3339(raw.get("since")), parse_rfc3339(raw.get("until"))
        fights = raw.get("fights")
        if (
            not isinstance(managers, list)
            or not managers
            or theirs is None
            or ours is None
            or since is None
            or until is None
            or not isinstance(fights, int)
            or fights < 1
        ):
            return None
        return cls(tuple(map(str, managers)), theirs, ours, until, fights, since, str(raw.get("vmUID") or ""))

    def message(self) -> str:
        return (
            f"{', '.join(self.managers)} set memory.guest to {to_quantity(self.theirs)} after dynamem set "
            f"{to_quantity(self.ours)} (fight {self.fights}; each change is a live migration): left to it "
            f"until {now_rfc3339(self.until)}; a GitOps tool must ignore the field (README, GitOps)"
        )


def hold_seconds(fights: int) -> float:
    """How long dynamem leaves a VM alone after its ``fights``-th fight: an hour, doubling, at most a day."""
    return float(min(CONTEST_HOLD_S * 2 ** max(fights - 1, 0), CONTEST_HOLD_MAX_S))


def written_at(answer: Mapping[str, object], manager: str) -> str | None:
    """The time of ``manager``'s managedFields entry in an apply's answer (the API server's clock)."""
    metadata = answer.get("metadata")
    entries = metadata.get("managedFields") if isinstance(metadata, Mapping) else None
    times = [
        str(entry["time"])
        for entry in entries or []
        if isinstance(entry, Mapping) and entry.get("manager") == manager and entry.get("time")
    ]
    return max(times, default=None)


def fought_back(vm: VmView, written: Written) -> tuple[str, ...]:
    """The managers that set ``vm``'s memory.guest to another size after dynamem wrote ``written``; () when
    the view shows no fight (dynamem's size, a view from before the write)."""
    if vm.resource_version == written.version or vm.guest is None or vm.guest == written.guest:
        return ()
    if written.uid and vm.uid != written.uid:
        return ()  # deleted and made again (a restore, a Replace sync): its manifest's size is no fight
    if not vm.guest_from_others():
        return ()
    managers = vm.foreign_owners()
    when = vm.guest_written_by_others
    if written.at is not None and (when is None or when < written.at):
        return ()  # RFC 3339 in UTC, as the API server writes it: compared as strings
    return managers


@dataclass
class Contests:
    """dynamem's sizes written to running VMs, and the VMs left alone after a fight over one."""

    written: dict[ObjectKey, Written] = field(default_factory=dict)
    held: dict[ObjectKey, Contest] = field(default_factory=dict)
    fights: dict[ObjectKey, tuple[int, float]] = field(default_factory=dict)  # so far, and when the last

    def wrote(self, key: ObjectKey, written: Written) -> None:
        self.written[key] = written

    def find(self, vms: Mapping[ObjectKey, VmView], now: float) -> list[tuple[ObjectKey, Contest]]:
        """The fights this view shows for the first time (each VM's hold starts now); ends holds run out."""
        for key in [k for k, c in self.held.items() if c.until <= now]:
            del self.held[key]
        found = []
        for key, written in list(self.written.items()):
            vm = vms.get(key)
            if vm is None or (written.uid and vm.uid != written.uid) or vm.stopped_for_good:
                # gone, made again, or stopped: what is written to it now moves no running guest
                del self.written[key]
                continue
            managers = fought_back(vm, written)
            if not managers or vm.guest is None:
                continue
            del self.written[key]  # one fight per write of dynamem's
            before, last = self.fights.get(key, (0, now))
            if now - last > 2 * hold_seconds(before):
                before = 0  # no fight for twice the last hold: the count starts again
            fights = before + 1
            self.fights[key] = (fights, now)
            contest = Contest(
                managers, vm.guest, written.guest, now + hold_seconds(fights), fights, now, vm.uid
            )
            self.held[key] = contest
            found.append((key, contest))
        return found

    def restore(self, kept: Mapping[ObjectKey, Contest], vms: Mapping[ObjectKey, VmView], now: float) -> None:
        """Holds a previous leader wrote to the statuses (``kept``), taken up by this one: each still running,
        on the VM it was about (same uid), and not forgotten for a quiet spell; its fight count goes on."""
        for key, kept_contest in kept.items():
            if key in self.held or key in self.fights:
                continue  # this leader knows better
            # never longer than its fight's hold: a status edited by hand (or another replica's clock far
            # ahead) would otherwise keep the VM for as long as it says
            contest = replace(
                kept_contest,
                until=min(kept_contest.until, kept_contest.since + hold_seconds(kept_contest.fights)),
            )
            vm = vms.get(key)
            if vm is None or (contest.uid and vm.uid != contest.uid) or vm.stopped_for_good:
                continue
            if contest.until > now:
                self.held[key] = contest
            if now - contest.since <= 2 * hold_seconds(contest.fights):
                self.fights[key] = (contest.fights, contest.since)

    def messages(self) -> dict[ObjectKey, str]:
        """Each VM held off after a fight, with why."""
        return {key: contest.message() for key, contest in self.held.items()}

    def keys(self) -> set[ObjectKey]:
        """Every VM something is remembered of."""
        return self.written.keys() | self.held.keys() | self.fights.keys()

    def forget(self, keys: Iterable[ObjectKey]) -> None:
        for key in keys:
            self.written.pop(key, None)
            self.held.pop(key, None)
            self.fights.pop(key, None)
