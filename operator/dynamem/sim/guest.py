"""The guest model: what a Linux guest of a given size shows when its workload needs a given amount of memory.

Both simulators (``dynamem simulate`` and the live KubeVirt stand-in) and the benchmarks share this one model,
so the policy is always judged on what KubeVirt can observe, never on the truth it cannot see:

- The guest's kernel keeps part of its RAM for itself (``MemTotal`` is below the size given to QEMU), and a
  guest under pressure still shows a little ``MemAvailable`` (the kernel's free watermarks). So the most a
  guest can *show* as used is ``size - reserve - min_usable``: observed used = min(true demand, that).
- KubeVirt reports ``available = MemTotal`` (libvirt's ``stat-total-memory``) and ``usable = MemAvailable``
  (``stat-available-memory``); its own recording rule for used memory is ``available - usable``
  (``pkg/monitoring/rules/recordingrules/vmi.go`` in kubevirt/kubevirt).
- A guest whose true demand exceeds what it can hold pages: the excess lives in swap (or is refaulted from
  files), and the part of it the workload touches each second comes back in as swap-in traffic and major
  faults, and goes out again as swap-out. Both grow linearly with the excess (``touch_rate`` of the excess per
  second). These are the signals KubeVirt's ``KubevirtVmHighMemoryUsage``-style alerts use: usable memory near
  zero and major faults or swap traffic above a threshold.

The constants are defaults; ``dynamem.testing.guest`` records real guests under QEMU to calibrate them.
Everything is integer bytes or floats per second; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_GUEST", "GuestModel", "GuestObservation", "PAGE_SIZE"]

MiB = 1 << 20
PAGE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class GuestObservation:
    """One guest as KubeVirt's metrics show it (bytes, and rates per second).

    ``size``: guest memory (``memory.guest``); ``available``: MemTotal (``kubevirt_vmi_memory_available_bytes``);
    ``usable``: MemAvailable; ``used = available - usable`` (never above ``size``); ``unused``: MemFree;
    ``cached``: page cache; ``swap_in_bps``/``swap_out_bps``: swap traffic; ``major_faults_ps``/
    ``minor_faults_ps``: page faults per second; ``paging``: the guest is short (used at its ceiling and
    faulting). ``excess``: the true demand the guest cannot hold (0 when it fits); never reported by
    KubeVirt, kept for scoring.
    """

    size: int
    available: int
    usable: int
    used: int
    unused: int
    cached: int
    swap_in_bps: float
    swap_out_bps: float
    major_faults_ps: float
    minor_faults_ps: float
    excess: int

    @property
    def paging(self) -> bool:
        return self.excess > 0


@dataclass(frozen=True, slots=True)
class GuestModel:
    """How a guest of ``size`` bytes shows a true demand.

    ``reserve_bytes + size * reserve_per_mille / 1000``: RAM the kernel keeps (size - MemTotal).
    ``min_usable_bytes``: MemAvailable a guest under pressure still shows. ``touch_rate``: the share of the
    excess the workload touches per second (swap-in bytes/s = excess x touch_rate). ``cache_share``: the share
    of the idle memory the guest fills with page cache (counted usable). ``minor_faults_ps``: background
    minor faults of a running guest.
    """

    reserve_bytes: int = 24 * MiB
    reserve_per_mille: int = 20
    min_usable_bytes: int = 32 * MiB
    touch_rate: float = 0.05
    cache_share: float = 0.5
    minor_faults_ps: float = 200.0

    def reserve(self, size: int) -> int:
        """Bytes of ``size`` the guest kernel keeps for itself (size - MemTotal)."""
        return min(size, self.reserve_bytes + size * self.reserve_per_mille // 1000)

    def capacity(self, size: int) -> int:
        """The most a guest of ``size`` can show as used: MemTotal less the free watermark."""
        return max(0, size - self.reserve(size) - self.min_usable_bytes)

    def observe(self, demand: int, size: int) -> GuestObservation:
        """What a guest of ``size`` bytes shows when its workload needs ``demand`` bytes."""
        available = size - self.reserve(size)
        capacity = self.capacity(size)
        used = min(max(0, demand), capacity)
        excess = max(0, demand - capacity)
        usable = available - used
        idle = max(0, usable - self.min_usable_bytes)
        cached = int(idle * self.cache_share)
        unused = usable - cached
        swap_in = excess * self.touch_rate
        return GuestObservation(
            size=size,
            available=available,
            usable=usable,
            used=used,
            unused=unused,
            cached=cached,
            swap_in_bps=swap_in,
            swap_out_bps=swap_in,
            major_faults_ps=swap_in / PAGE_SIZE,
            minor_faults_ps=self.minor_faults_ps + (swap_in / PAGE_SIZE if excess else 0.0),
            excess=excess,
        )


DEFAULT_GUEST = GuestModel()
