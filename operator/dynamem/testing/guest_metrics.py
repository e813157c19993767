"""KubeVirt's view of a lab guest: its balloon statistics as virt-handler's ``kubevirt_vmi_memory_*`` series.

The path of a number from the guest to Prometheus in a real cluster, followed step by step:

1. The guest's ``virtio_balloon`` driver reports ``/proc/meminfo``-style values and ``/proc/vmstat``
   counters to QEMU in bytes (swap traffic as pages x page size) and counts (faults); QEMU exposes them as
   the balloon device's ``guest-stats`` QOM property (``hw/virtio/virtio-balloon.c``, ``balloon_stat_names``).
2. libvirt reads that property (``src/qemu/qemu_monitor_json.c``, ``qemuMonitorJSONGetMemoryStats``) and
   maps it to ``virDomainMemoryStats`` with ``GET_BALLOON_STATS(name, tag, divisor)``: ``stat-swap-in`` ->
   ``SWAP_IN``, ``stat-swap-out`` -> ``SWAP_OUT``, ``stat-free-memory`` -> ``UNUSED``,
   ``stat-total-memory`` -> ``AVAILABLE``, ``stat-available-memory`` -> ``USABLE``, ``stat-disk-caches`` ->
   ``DISK_CACHES``, each divided by 1024 (KiB, rounded down); ``stat-major-faults`` -> ``MAJOR_FAULT`` and
   ``stat-minor-faults`` -> ``MINOR_FAULT`` divided by 1; a value of -1 (never reported) is left out.
   ``ACTUAL_BALLOON`` comes from ``query-balloon`` (KiB).
3. virt-launcher copies them into ``DomainStatsMemory`` (kubevirt ``pkg/virt-launcher/virtwrap/statsconv/
   converter.go``, ``convertMemory``: ``Available``, ``Usable``, ``Unused``, ``Cached``, ``SwapIn``...;
   ``Total`` is the domain's memory).
4. virt-handler exports them (``pkg/monitoring/metrics/virt-handler/domainstats/memory_metrics.go``, v1.7.0,
   ``memoryMetrics.Collect``): every byte series is ``kibibytesToBytes`` of the KiB value; the faults are
   counters ``kubevirt_vmi_memory_pgmajfault_total``/``..._pgminfault_total``; the swap traffic series are
   declared gauges (``kubevirt_vmi_memory_swap_in_traffic_bytes``) holding the cumulative bytes, so they are
   read with ``rate()`` like counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dynamem.testing.guest import BalloonStats, Guest

__all__ = ["GuestView", "SeriesKind", "VmiMemorySeries", "kubevirt_series"]

KiB = 1024
MiB = 1 << 20
PREFIX = "kubevirt_vmi_memory_"


class SeriesKind(StrEnum):
    GAUGE = "gauge"
    COUNTER = "counter"


@dataclass(frozen=True, slots=True)
class VmiMemorySeries:
    """One ``kubevirt_vmi_memory_*`` value of one VMI: its name as exposed, its type, its help and value."""

    name: str
    kind: SeriesKind
    help: str
    value: float


def _kib_bytes(value: int | None) -> float | None:
    """libvirt's ``value / 1024`` (KiB, integer), then KubeVirt's ``kibibytesToBytes``."""
    return None if value is None else float(value // KiB * KiB)


def kubevirt_series(stats: BalloonStats, domain_bytes: int) -> list[VmiMemorySeries]:
    """The series virt-handler would export for a guest whose balloon reported ``stats``; ``domain_bytes``:
    the domain's memory (KubeVirt's ``kubevirt_vmi_memory_domain_bytes``). Series the guest did not report
    are left out, as libvirt and virt-handler leave them out."""
    gauge, counter = SeriesKind.GAUGE, SeriesKind.COUNTER
    candidates: list[tuple[str, SeriesKind, str, float | None]] = [
        ("available_bytes", gauge, "Amount of usable memory as seen by the domain.", _kib_bytes(stats.total)),
        ("usable_bytes", gauge, "The amount of memory which can be reclaimed by balloon without pushing the "
         "guest system to swap, corresponds to 'Available' in /proc/meminfo.", _kib_bytes(stats.available)),
        ("unused_bytes", gauge, "The amount of memory left completely unused by the system.",
         _kib_bytes(stats.free)),
        ("cached_bytes", gauge, "The amount of memory that is being used to cache I/O and is available to be "
         "reclaimed.", _kib_bytes(stats.disk_caches)),
        ("swap_in_traffic_bytes", gauge, "The total amount of data read from swap space of the guest in "
         "bytes.", _kib_bytes(stats.swap_in)),
        ("swap_out_traffic_bytes", gauge, "The total amount of memory written out to swap space of the guest "
         "in bytes.", _kib_bytes(stats.swap_out)),
        ("pgmajfault_total", counter, "The number of page faults when disk IO was required.",
         None if stats.major_faults is None else float(stats.major_faults)),
        ("pgminfault_total", counter, "The number of other page faults, when disk IO was not required.",
         None if stats.minor_faults is None else float(stats.minor_faults)),
        ("actual_balloon_bytes", gauge, "Current balloon size in bytes.", _kib_bytes(stats.actual)),
        ("domain_bytes", gauge, "The amount of memory in bytes allocated to the domain.",
         _kib_bytes(domain_bytes)),
    ]  # fmt: skip
    return [
        VmiMemorySeries(PREFIX + name, kind, text, value)
        for name, kind, text, value in candidates
        if value is not None
    ]


class GuestView:
    """A lab guest as the KubeVirt stand-in's metrics hook wants it (``kubevirt_sim.metrics.RealGuest``): its
    latest balloon report, converted, on every scrape; the domain's memory is the base plus what virtio-mem
    has plugged."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest

    def series(self) -> list[tuple[str, str, str, float]]:
        domain = self.guest.spec.base_mib * MiB + self.guest.plugged_bytes()
        return [(s.name, s.kind.value, s.help, s.value) for s in kubevirt_series(self.guest.stats(), domain)]
