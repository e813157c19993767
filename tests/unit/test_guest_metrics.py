"""The guest lab's KubeVirt view: balloon statistics converted as libvirt and virt-handler convert them."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynamem.testing.guest import (
    BalloonStats,
    GuestLabMissing,
    GuestSpec,
    _cpio_newc,
    _load_order,
    build_image,
)
from dynamem.testing.guest_metrics import SeriesKind, kubevirt_series

UNSET = (1 << 64) - 1  # what QEMU shows for a statistic the guest never reported (-1 as an unsigned 64-bit)

# A report as QEMU's qom-get guest-stats returns it (values from a lab guest of 512 MiB).
GUEST_STATS = {
    "stats": {
        "stat-swap-in": 52_428_801,  # bytes: 50 MiB + 1 byte, so the KiB rounding shows
        "stat-swap-out": 104_857_600,
        "stat-major-faults": 1_600,
        "stat-minor-faults": 77_760,
        "stat-free-memory": 593_158_144,
        "stat-total-memory": 411_750_400,
        "stat-available-memory": 33_555_000,  # not a multiple of 1024: 32768.55 KiB -> 32768 KiB
        "stat-disk-caches": 3_313_664,
        "stat-htlb-pgalloc": UNSET,
        "stat-htlb-pgfail": UNSET,
    },
    "last-update": 1_795_791_701,
}


def test_balloon_stats_read_qemus_report() -> None:
    stats = BalloonStats.from_qmp(GUEST_STATS, actual=536_870_912)
    assert stats.taken_at == 1_795_791_701
    assert stats.total == 411_750_400 and stats.available == 33_555_000
    assert stats.major_faults == 1_600 and stats.swap_in == 52_428_801


def test_unreported_statistics_are_none() -> None:
    stats = BalloonStats.from_qmp({"stats": {"stat-swap-in": UNSET, "stat-total-memory": -1}}, actual=0)
    assert stats.swap_in is None and stats.total is None and stats.available is None


def test_a_report_without_stats_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no 'stats'"):
        BalloonStats.from_qmp({"last-update": 0}, actual=0)


def test_series_as_virt_handler_exports_them() -> None:
    series = {s.name: s for s in kubevirt_series(BalloonStats.from_qmp(GUEST_STATS, 536_870_912), 512 << 20)}
    # available = stat-total-memory: 411750400 B = 402100 KiB exactly -> 411750400
    assert series["kubevirt_vmi_memory_available_bytes"].value == 411_750_400
    # usable = stat-available-memory: 33555000 // 1024 = 32768 KiB -> 33554432 B (libvirt rounds down to KiB)
    assert series["kubevirt_vmi_memory_usable_bytes"].value == 33_554_432
    assert series["kubevirt_vmi_memory_unused_bytes"].value == 593_158_144
    assert series["kubevirt_vmi_memory_cached_bytes"].value == 3_313_664
    # swap-in: 52428801 // 1024 = 51200 KiB -> 52428800 B, cumulative; a gauge in KubeVirt v1.7.0
    assert series["kubevirt_vmi_memory_swap_in_traffic_bytes"].value == 52_428_800
    assert series["kubevirt_vmi_memory_swap_in_traffic_bytes"].kind is SeriesKind.GAUGE
    assert series["kubevirt_vmi_memory_swap_out_traffic_bytes"].value == 104_857_600
    # faults: divisor 1, counters
    assert series["kubevirt_vmi_memory_pgmajfault_total"].value == 1_600
    assert series["kubevirt_vmi_memory_pgmajfault_total"].kind is SeriesKind.COUNTER
    assert series["kubevirt_vmi_memory_pgminfault_total"].value == 77_760
    assert series["kubevirt_vmi_memory_actual_balloon_bytes"].value == 536_870_912
    assert series["kubevirt_vmi_memory_domain_bytes"].value == 536_870_912
    # KubeVirt's used memory (its recording rule available - usable): 411750400 - 33554432
    used = (
        series["kubevirt_vmi_memory_available_bytes"].value - series["kubevirt_vmi_memory_usable_bytes"].value
    )
    assert used == 378_195_968


def test_unreported_series_are_left_out() -> None:
    stats = BalloonStats.from_qmp({"stats": {"stat-total-memory": 4096}}, actual=8192)
    names = {s.name for s in kubevirt_series(stats, 8192)}
    assert names == {
        "kubevirt_vmi_memory_available_bytes",
        "kubevirt_vmi_memory_actual_balloon_bytes",
        "kubevirt_vmi_memory_domain_bytes",
    }


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"base_mib": 64}, "base_mib"),
        ({"base_mib": 512, "max_mib": 256}, "max_mib"),
        ({"stats_period_s": 0}, "stats_period_s"),
    ],
)
def test_guest_spec_names_the_bad_field(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        GuestSpec(**kwargs)


def test_a_missing_qemu_fails_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-system-x86_64, no gcc
    with pytest.raises(GuestLabMissing, match="make guestlab"):
        build_image(cache=tmp_path)


def test_modules_load_after_what_they_need(tmp_path: Path) -> None:
    (tmp_path / "modules.dep").write_text(
        "kernel/virtio_pci.ko: kernel/virtio.ko kernel/virtio_ring.ko\n"
        "kernel/virtio.ko: kernel/virtio_ring.ko\n"
        "kernel/virtio_ring.ko:\n"
        "kernel/virtio_mem.ko: kernel/virtio.ko kernel/virtio_ring.ko\n"
    )
    order = _load_order(tmp_path, ("virtio_pci", "virtio_mem"))
    assert order == [
        "kernel/virtio_ring.ko",
        "kernel/virtio.ko",
        "kernel/virtio_pci.ko",
        "kernel/virtio_mem.ko",
    ]
    with pytest.raises(GuestLabMissing, match="virtio_fs"):
        _load_order(tmp_path, ("virtio_fs",))


def test_initramfs_is_a_newc_archive() -> None:
    archive = _cpio_newc([("init", 0o100755, b"#!/bin/sh\n")])
    assert (
        archive.startswith(b"070701")
        and b"init\0" in archive
        and archive.endswith(b"\0" * (len(archive) % 4))
    )
    assert b"TRAILER!!!" in archive and len(archive) % 4 == 0
