"""A real guest in the loop: one VM of the KubeVirt stand-in is a real Linux guest under QEMU.

Its balloon statistics, converted as libvirt and virt-handler do, are what the stand-in exports for it; the
real Prometheus scrapes them; the operator (``dynamem run``, its own process) sees the guest page (used
memory at its ceiling), grows it, and the change is carried out on the real guest the way KubeVirt does it:
a live migration to a new QEMU (``-incoming`` on loopback), then virt-handler's ``hotplugMemory`` on the
target, which sets the virtio-mem device's requested size. The guest stops paging.

One guest, TCG: about two minutes on a busy machine. A missing QEMU, kernel or busybox fails the test
(``GuestLabMissing``: run ``make guestlab``); nothing is skipped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from dynamem.kube.objects import GI, MI, ObjectKey
from dynamem.testing.controlplane import ControlPlane
from dynamem.testing.guest import Guest, GuestSpec
from dynamem.testing.guest_metrics import GuestView
from dynamem.testing.prometheus import Prometheus

from .operator_harness import Stack, one_node, wait_until

WORKLOAD_MIB = 1200  # with the idle guest's ~100 MiB: more than a 1 GiB guest (MemTotal ~896 MiB) holds


class LaunchFollower:
    """virt-handler for the real guest: when the stand-in carries out a hotplug (the VM's guest memory
    changes), KubeVirt moves the VM to a new launcher pod and resizes virtio-mem there
    (``pkg/virt-handler/migration-target.go``, ``finalizeMigration`` -> ``hotplugMemory``). Here: migrate
    the QEMU guest to a second QEMU on loopback (paused for the copy), then set its virtio-mem requested
    size."""

    def __init__(self, stack: Stack, name: str, guest: Guest) -> None:
        self.stack, self.name, self.guest = stack, name, guest
        self.applied = guest.spec.base_mib * MI
        self.migrations: list[float] = []
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name="launch-follower", daemon=True)

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            wanted = self.stack.has(self.name)
            if wanted is None or wanted == self.applied:
                continue
            try:
                # Paused, not live: see Guest.migrate (live copies of a paging 1 GiB TCG guest corrupted it).
                self.migrations.append(self.guest.migrate(live=False))
                self.guest.resize(wanted)
                self.applied = wanted
            except BaseException as exc:  # reported by the test
                self.errors.append(exc)
                return

    def __enter__(self) -> LaunchFollower:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=120)


@pytest.fixture
def real_guest() -> Iterator[Guest]:
    with Guest(GuestSpec(base_mib=1024, max_mib=2048, swap_mib=2048, stats_period_s=1)) as guest:
        yield guest


def swap_in_rate(prometheus: Prometheus, namespace: str) -> float | None:
    """Swap-in bytes/s of the real guest as Prometheus sees it (the series is a cumulative gauge: rate())."""
    result = prometheus.query(
        f'rate(kubevirt_vmi_memory_swap_in_traffic_bytes{{namespace="{namespace}",name="real"}}[6s])'
    )
    return result[0].value if result else None


@pytest.mark.timeout(600)  # the waits below add up to more than the suite's 300 s
def test_operator_grows_a_paging_real_guest_until_it_stops_paging(
    control_plane: ControlPlane, prometheus: Prometheus, namespace: str, real_guest: Guest
) -> None:
    node = f"node-{namespace[-6:]}"
    # buffer 50 %: a guest paging at its ceiling (~860 MiB used of 1 GiB) wants 1.7 GiB, one grow.
    scenario = one_node(node, "8Gi", {"real": {"startup": "1Gi", "maximum": "2Gi", "buffer": 50}})
    stack = Stack(control_plane, prometheus, namespace, scenario)
    try:
        stack.sim.feed.real[ObjectKey(namespace, "real")] = GuestView(real_guest)
        real_guest.demand(WORKLOAD_MIB, rate_mib_s=128, touch_mib_s=32)

        # The guest pages, and Prometheus sees it: swap-in above KubeVirt's alert threshold (1 MiB/s).
        paging = wait_until(
            "the real guest paging in Prometheus",
            lambda: (r := swap_in_rate(prometheus, namespace)) is not None and r > MI and r,
            timeout=90,
            every=1,
        )
        used = prometheus.query(
            f'kubevirt_vmi_memory_available_bytes{{namespace="{namespace}",name="real"}}'
            f' - kubevirt_vmi_memory_usable_bytes{{namespace="{namespace}",name="real"}}'
        )
        assert stack.guest("real") == GI and real_guest.plugged_bytes() == 0
        before = real_guest.stats().total or 0

        with LaunchFollower(stack, "real", real_guest) as follower:
            stack.start_operator()
            grown = wait_until(
                "dynamem to grow the VM", lambda: (g := stack.guest("real")) and g > GI and g, 60
            )
            try:
                # The guest's virtio-mem driver retries a plug that failed (memory it could not add while
                # the guest thrashes, a device busy) after 50 s, then 100 s (Linux 6.1 virtio_mem.c,
                # VIRTIO_MEM_RETRY_TIMER_MIN_MS): in CI under load the plug stood at 0 for the 120 s this
                # wait once had, with no progress at all. 240 s covers the first try and two retries; the
                # console shows the driver's warnings (loglevel=5) if it still fails.
                wait_until(
                    "the real guest to have the new memory",
                    lambda: follower.errors or real_guest.plugged_bytes() >= grown - GI - 2 * MI,
                    timeout=240,
                    every=0.5,
                )
            except AssertionError as exc:
                raise AssertionError(
                    f"{exc}; VM guest {stack.guest('real')}, stand-in has {stack.has('real')}, applied"
                    f" {follower.applied} after {follower.migrations} s of migrations;"
                    f" {real_guest.diagnosis()}"
                ) from None
            assert not follower.errors, follower.errors
            # The guest onlines what virtio-mem plugged: MemTotal grows by it (about 1 s, one balloon report).
            memtotal = wait_until(
                "MemTotal to show the plugged memory",
                lambda: (t := real_guest.stats().total) and t > before + grown - GI - 8 * MI and t,
                timeout=30,
                every=0.5,
            )

            # It stops paging: no swap-in in three consecutive balloon reports, and Prometheus agrees.
            def quiet() -> bool:
                first = real_guest.wait_stats(time.time(), timeout_s=10)
                last = first
                for _ in range(3):
                    last = real_guest.wait_stats(last.taken_at, timeout_s=10)
                return last.swap_in == first.swap_in

            wait_until("the real guest to stop paging", quiet, timeout=90, every=0)
            wait_until(
                "Prometheus to see no more swap-in",
                lambda: (r := swap_in_rate(prometheus, namespace)) is not None and r < MI,
                timeout=30,
                every=1,
            )
        assert follower.migrations, "the change was carried out without a migration"
        print(
            f"real guest: paging at {paging / MI:.1f} MiB/s swap-in with used {used[0].value / MI:.0f}"
            f" MiB; grown to {grown / MI:.0f} MiB; MemTotal {memtotal / MI:.0f} MiB;"
            f" migration of the paging guest {follower.migrations[0]:.2f} s"
        )
    finally:
        stack.sim.feed.real.clear()
        stack.close()
