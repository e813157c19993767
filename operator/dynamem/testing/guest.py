"""The guest lab: a real Linux guest under QEMU, with the memory devices KubeVirt gives a VM.

A guest here is what virt-launcher runs, minus KubeVirt: QEMU (TCG; this machine has no usable KVM) with a
base memory, a ``virtio-mem-pci`` device up to the VM's ceiling (KubeVirt's memory hotplug: ``maxGuest -
guestAtBoot`` of hot-pluggable memory, resized by setting the device's ``requested-size``, which is what
libvirt does for virt-handler's ``hotplugMemory``), a ``virtio-balloon-pci`` device whose guest statistics are
polled (libvirt's ``<stats period=...>``, KubeVirt's ``memBalloonStatsPeriod``), and a swap disk. Debian's
kernel boots an initramfs built here from source in a few seconds: busybox, the virtio modules, and
``memload``, a static C program that holds as much memory as the host tells it and keeps touching it
(``guest_image/memload.c``).

The host steers the workload over the guest's second serial port (a Unix socket here) and reads the guest's
statistics over QMP, through ``qemu.qmp``. :meth:`Guest.migrate` moves a running guest to a second QEMU
started with ``-incoming`` on loopback, as a live migration between two virt-launcher pods does.

Nothing is mocked and nothing is skipped: a missing QEMU, kernel, busybox or C compiler raises
:class:`GuestLabMissing` naming what to install (``make guestlab``). Every QEMU started here is stopped by
:meth:`Guest.stop` (and by the context manager), whatever happened.
"""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import hashlib
import io
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from qemu.qmp import ConnectError
from qemu.qmp.legacy import QEMUMonitorProtocol

__all__ = [
    "BalloonStats",
    "Guest",
    "GuestImage",
    "GuestLabMissing",
    "GuestSpec",
    "build_image",
    "cache_root",
]

MiB = 1 << 20
QEMU = "qemu-system-x86_64"
BUSYBOX = Path("/bin/busybox")
# The modules the lab's devices need; their dependencies are added, in load order, from modules.dep.
MODULES = ("virtio_pci", "virtio_balloon", "virtio_mem", "virtio_blk")
IMAGE_FORMAT = 1  # bump when the image's layout changes, so cached images are rebuilt
PR_SET_PDEATHSIG = 1  # linux/prctl.h
INSTALL_HINT = "run 'make guestlab' (Debian packages qemu-system-x86, linux-image-amd64, busybox-static, gcc)"


class GuestLabMissing(RuntimeError):
    """Something the lab needs is not installed; the message says what and how to get it."""


class GuestError(RuntimeError):
    """The guest did not do what it was asked (did not boot, died, refused a command)."""


def cache_root() -> Path:
    return Path(os.environ.get("DYNAMEM_CACHE", Path.home() / ".cache" / "dynamem")) / "guest"


@dataclass(frozen=True, slots=True)
class GuestImage:
    """A kernel and the lab's initramfs for it (cached under ``~/.cache/dynamem/guest/<key>``)."""

    kernel: Path
    initramfs: Path
    key: str
    kernel_version: str


def _find_kernel() -> tuple[str, Path, Path]:
    """The newest Debian kernel that has both its image and its modules installed."""
    versions = sorted(
        (p.name.removeprefix("vmlinuz-") for p in Path("/boot").glob("vmlinuz-*")),
        key=lambda v: [int(x) if x.isdigit() else x for x in v.replace("-", ".").split(".")],
    )
    for version in reversed(versions):
        modules = Path("/lib/modules") / version
        if (modules / "modules.dep").is_file():
            return version, Path("/boot") / f"vmlinuz-{version}", modules
    raise GuestLabMissing(f"no kernel in /boot with the virtio modules in /lib/modules: {INSTALL_HINT}")


def _load_order(modules: Path, wanted: tuple[str, ...]) -> list[str]:
    """Paths (relative to ``modules``) of ``wanted`` and everything they need, each after its dependencies."""
    depends: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules / "modules.dep").read_text().splitlines():
        path, _, needs = line.partition(":")
        depends[path] = needs.split()
        by_name[Path(path).name.split(".ko")[0]] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for needed in depends.get(path, []):
            visit(needed)
        order.append(path)

    for name in wanted:
        if name not in by_name:
            raise GuestLabMissing(f"kernel module {name} is not in {modules}: {INSTALL_HINT}")
        visit(by_name[name])
    return order


def _require(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        raise GuestLabMissing(f"{program} is not installed: {INSTALL_HINT}")
    return found


def _source(name: str) -> bytes:
    return resources.files("dynamem.testing").joinpath("guest_image", name).read_bytes()


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """An uncompressed ``newc`` cpio archive (the kernel's initramfs format): (path, mode, data) entries."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        out.write(b"\0" * (-(110 + len(encoded)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
    return out.getvalue()


def build_image(cache: Path | None = None) -> GuestImage:
    """Build (or reuse) the lab's initramfs for the installed kernel; seconds when cold, instant when cached.

    The cache key covers everything the image is made of: the allocator's source, the init script, the
    kernel version, busybox and the image format.
    """
    _require(QEMU)
    compiler = _require("gcc")
    version, kernel, modules = _find_kernel()
    if not BUSYBOX.is_file():
        raise GuestLabMissing(f"{BUSYBOX} (busybox-static) is missing: {INSTALL_HINT}")
    memload_c, init = _source("memload.c"), _source("init")
    digest = hashlib.sha256()
    for part in (memload_c, init, version.encode(), BUSYBOX.read_bytes(), str(IMAGE_FORMAT).encode()):
        digest.update(hashlib.sha256(part).digest())
    key = digest.hexdigest()[:16]
    folder = (cache or cache_root()) / key
    initramfs = folder / "initramfs.cpio.gz"
    if initramfs.is_file():
        return GuestImage(kernel, initramfs, key, version)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="guest-image-") as scratch:
        source, binary = Path(scratch) / "memload.c", Path(scratch) / "memload"
        source.write_bytes(memload_c)
        built = subprocess.run(
            [compiler, "-O2", "-static", "-Wall", "-o", str(binary), str(source)],
            capture_output=True,
            text=True,
            check=False,
        )
        if built.returncode != 0:
            raise GuestLabMissing(
                f"cannot build memload (static glibc from libc6-dev?): {built.stderr.strip()}"
            )
        entries: list[tuple[str, int, bytes]] = [
            (d, 0o040755, b"") for d in ("bin", "dev", "proc", "sys", "lib", "lib/modules")
        ]
        entries += [
            ("init", 0o100755, init),
            ("bin/busybox", 0o100755, BUSYBOX.read_bytes()),
            ("bin/memload", 0o100755, binary.read_bytes()),
        ]
        order = _load_order(modules, MODULES)
        entries += [(f"lib/modules/{Path(m).name}", 0o100644, (modules / m).read_bytes()) for m in order]
        entries.append(
            ("lib/modules/load-order", 0o100644, "".join(f"{Path(m).name}\n" for m in order).encode())
        )
    partial = initramfs.with_suffix(".partial")
    partial.write_bytes(gzip.compress(_cpio_newc(entries), compresslevel=1))
    partial.replace(initramfs)
    return GuestImage(kernel, initramfs, key, version)


@dataclass(frozen=True, slots=True)
class GuestSpec:
    """A guest's shape: base memory (``guestAtBoot``), hot-pluggable memory up to ``max_mib`` (``maxGuest``),
    swap, and the balloon's statistics period in seconds (KubeVirt's ``memBalloonStatsPeriod``)."""

    base_mib: int = 512
    max_mib: int = 1536
    swap_mib: int = 2048
    stats_period_s: int = 1
    block_mib: int = 2  # virtio-mem block size: KubeVirt aligns guest memory to 2Mi

    def __post_init__(self) -> None:
        if self.base_mib < 128:
            raise ValueError(f"base_mib must be at least 128, got {self.base_mib}")
        if self.max_mib < self.base_mib:
            raise ValueError(f"max_mib must be at least base_mib ({self.base_mib}), got {self.max_mib}")
        if self.stats_period_s < 1:
            raise ValueError(f"stats_period_s must be at least 1, got {self.stats_period_s}")

    @property
    def hotplug_mib(self) -> int:
        return self.max_mib - self.base_mib


@dataclass(frozen=True, slots=True)
class BalloonStats:
    """QEMU's ``guest-stats`` of the balloon device, as the guest's driver reports them (bytes and counts;
    swap traffic and faults are cumulative since boot). ``None``: not reported by this guest (QEMU's -1).
    ``taken_at``: the guest's report time (QEMU's ``last-update``, seconds since the epoch)."""

    taken_at: float
    swap_in: int | None
    swap_out: int | None
    major_faults: int | None
    minor_faults: int | None
    free: int | None
    total: int | None
    available: int | None
    disk_caches: int | None
    actual: int  # the balloon's actual size (query-balloon), bytes

    @classmethod
    def from_qmp(cls, guest_stats: Mapping[str, Any], actual: int) -> BalloonStats:
        stats = guest_stats.get("stats")
        if not isinstance(stats, Mapping):
            raise GuestError(f"guest-stats has no 'stats': {guest_stats!r}")

        def value(name: str) -> int | None:
            raw = stats.get(name)
            return None if raw is None or int(raw) < 0 or int(raw) >= (1 << 64) - 1 else int(raw)

        return cls(
            taken_at=float(guest_stats.get("last-update", 0)),
            swap_in=value("stat-swap-in"),
            swap_out=value("stat-swap-out"),
            major_faults=value("stat-major-faults"),
            minor_faults=value("stat-minor-faults"),
            free=value("stat-free-memory"),
            total=value("stat-total-memory"),
            available=value("stat-available-memory"),
            disk_caches=value("stat-disk-caches"),
            actual=actual,
        )


def _die_with_parent() -> None:
    """In the child before exec: Linux kills QEMU when the process that started it dies, however it dies, so
    no guest outlives a killed test or benchmark."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class _Qemu:
    """One QEMU process and its QMP connection."""

    process: subprocess.Popen[bytes]
    qmp: QEMUMonitorProtocol
    control: Path
    console: Path
    lock: threading.Lock = field(default_factory=threading.Lock)

    def command(self, name: str, **arguments: Any) -> Any:
        with self.lock:  # one QMP conversation at a time (the metrics server reads from its own thread)
            return self.qmp.cmd(name, **arguments)

    def stop(self) -> None:
        try:
            if self.process.poll() is None:
                with contextlib.suppress(Exception):  # it may already be going; it is killed below if not
                    self.qmp.cmd("quit")
            with contextlib.suppress(Exception):  # QEMU closes the socket as it quits
                self.qmp.close()
        finally:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@dataclass
class Guest:
    """A running lab guest. Use as a context manager, or call :meth:`start` and always :meth:`stop`."""

    spec: GuestSpec = field(default_factory=GuestSpec)
    image: GuestImage | None = None
    boot_timeout_s: float = 60.0
    boot_s: float = 0.0

    def __post_init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="dynamem-guest-"))
        self.swap = self.workdir / "swap.img"
        self.qemu: _Qemu | None = None
        self.lines: queue.Queue[str] = queue.Queue()
        self.held_mib = 0
        self._reader: threading.Thread | None = None
        self._control: socket.socket | None = None
        self._generation = 0
        # Held while QEMU is replaced (migration) or asked something: the metrics server, a test and a
        # migrating thread may use one guest at once.
        self._lock = threading.RLock()

    def _command_line(self, name: str, incoming: str | None) -> list[str]:
        assert self.image is not None
        spec = self.spec
        args = [
            _require(QEMU),
            "-name", name,
            "-machine", "q35",
            "-accel", "tcg",
            "-smp", "1",
            "-m", f"{spec.base_mib}M,maxmem={spec.max_mib}M",
            "-kernel", str(self.image.kernel),
            "-initrd", str(self.image.initramfs),
            "-append", "console=ttyS0 memhp_default_state=online_movable panic=-1 quiet loglevel=5",
            "-no-reboot",
            "-display", "none",
            "-nodefaults",
            "-serial", f"file:{self.workdir / f'{name}.console'}",
            "-serial", f"unix:{self.workdir / f'{name}.control'},server=on,wait=off",
            "-qmp", f"unix:{self.workdir / f'{name}.qmp'},server=on,wait=off",
            "-device", "virtio-balloon-pci,id=balloon0",
            "-drive", f"file={self.swap},if=none,id=swap0,format=raw,cache=writeback",
            "-device", "virtio-blk-pci,drive=swap0,id=swapdisk0",
        ]  # fmt: skip
        if spec.hotplug_mib > 0:
            args += [
                "-object", f"memory-backend-ram,id=vmem0,size={spec.hotplug_mib}M",
                "-device",
                f"virtio-mem-pci,id=vmem0dev,memdev=vmem0,block-size={spec.block_mib}M,requested-size=0",
            ]  # fmt: skip
        if incoming is not None:
            args += ["-incoming", incoming]
        return args

    @staticmethod
    def _connect_qmp(process: subprocess.Popen[bytes], qmp_path: Path) -> QEMUMonitorProtocol:
        deadline = time.monotonic() + 10
        while not qmp_path.exists():
            if process.poll() is not None:
                stderr = process.stderr.read().decode() if process.stderr else ""
                raise GuestError(f"QEMU exited with {process.returncode}: {stderr.strip()}")
            if time.monotonic() > deadline:
                raise GuestError("QEMU did not open its QMP socket within 10 s")
            time.sleep(0.02)
        while True:  # the socket file appears when QEMU binds it, a moment before it listens
            qmp = QEMUMonitorProtocol(str(qmp_path))
            try:
                qmp.connect()
                return qmp
            except ConnectError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise GuestError(f"cannot connect to QEMU's QMP socket {qmp_path}") from None
                time.sleep(0.05)

    def _launch(self, name: str, incoming: str | None = None) -> _Qemu:
        command = self._command_line(name, incoming)
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Linux ties the parent-death signal to the thread that forks: only the main thread's children.
            preexec_fn=_die_with_parent if threading.current_thread() is threading.main_thread() else None,
        )
        try:
            qmp = self._connect_qmp(process, self.workdir / f"{name}.qmp")
        except BaseException:  # whatever went wrong, this QEMU does not outlive it
            process.kill()
            process.wait(timeout=10)
            raise
        return _Qemu(process, qmp, self.workdir / f"{name}.control", self.workdir / f"{name}.console")

    def start(self) -> Guest:
        """Boot the guest and wait until its workload listens; sets :attr:`boot_s`."""
        if self.image is None:
            self.image = build_image()
        with self.swap.open("wb") as swap:
            swap.truncate(self.spec.swap_mib * MiB)
        started = time.monotonic()
        self.qemu = self._launch("guest")
        try:
            self._connect_control(self.qemu)
            self.expect("ready", self.boot_timeout_s)
            self.boot_s = time.monotonic() - started
            self.set_stats_period(self.spec.stats_period_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop QEMU (every one this guest started) and remove its files."""
        self._generation += 1
        if self._control is not None:
            self._control.close()
            self._control = None
        if self.qemu is not None:
            qemu, self.qemu = self.qemu, None
            qemu.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Guest:
        return self.start() if self.qemu is None else self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _connect_control(self, qemu: _Qemu) -> None:
        control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        control.connect(str(qemu.control))
        self._control = control
        generation = self._generation

        def read() -> None:
            buffer = b""
            while generation == self._generation:
                try:
                    chunk = control.recv(4096)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    raw, buffer = buffer.split(b"\n", 1)
                    line = raw.decode(errors="replace").strip()
                    if line.startswith("held "):
                        self.held_mib = int(line.split()[1])
                    elif line:
                        self.lines.put(line)

        self._reader = threading.Thread(target=read, name="guest-control", daemon=True)
        self._reader.start()

    def expect(self, line: str, timeout_s: float) -> None:
        """Wait for the workload to print ``line``; a GuestError with the console's tail if it does not."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                got = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise GuestError(
                    f"the guest did not say {line!r} within {timeout_s:.0f} s; console: {self.console_tail()}"
                ) from None
            if got == line:
                return
            if got.startswith("error"):
                raise GuestError(f"the guest's workload refused a command: {got}")

    def console_tail(self, chars: int = 600) -> str:
        qemu = self.qemu
        if qemu is None or not qemu.console.exists():
            return "(no console)"
        return qemu.console.read_text(errors="replace")[-chars:]

    def demand(self, mib: int, rate_mib_s: float = 64.0, touch_mib_s: float = 32.0) -> None:
        """Make the workload hold ``mib`` MiB, moving there at ``rate_mib_s`` and touching ``touch_mib_s``
        of what it holds per second (cycling through all of it)."""
        if mib < 0:
            raise ValueError(f"demand must not be negative, got {mib} MiB")
        if rate_mib_s <= 0:
            raise ValueError(f"rate_mib_s must be positive, got {rate_mib_s}")
        if touch_mib_s < 0:
            raise ValueError(f"touch_mib_s must not be negative, got {touch_mib_s}")
        if self._control is None:
            raise GuestError("the guest is not running")
        self._control.sendall(f"demand {mib} {rate_mib_s:.3f} {touch_mib_s:.3f}\n".encode())
        self.expect("ok", 30.0)

    def _qemu(self) -> _Qemu:
        if self.qemu is None:
            raise GuestError("the guest is not running")
        if self.qemu.process.poll() is not None:
            raise GuestError(
                f"QEMU exited with {self.qemu.process.returncode}; console: {self.console_tail()}"
            )
        return self.qemu

    def set_stats_period(self, seconds: int) -> None:
        """What libvirt does for ``<memballoon><stats period=.../>`` (KubeVirt: ``memBalloonStatsPeriod``)."""
        with self._lock:
            self._qemu().command(
                "qom-set",
                path="/machine/peripheral/balloon0",
                property="guest-stats-polling-interval",
                value=seconds,
            )

    def resize(self, guest_bytes: int) -> None:
        """Set the guest's memory to ``guest_bytes`` as virt-handler's ``hotplugMemory`` does: the virtio-mem
        device's requested size becomes ``guest - guestAtBoot`` (aligned down to the block size)."""
        with self._lock:
            block = self.spec.block_mib * MiB
            requested = guest_bytes - self.spec.base_mib * MiB
            if requested < 0 or requested > self.spec.hotplug_mib * MiB:
                raise ValueError(
                    f"guest memory must be between {self.spec.base_mib} and {self.spec.max_mib} MiB, "
                    f"got {guest_bytes / MiB:.0f} MiB"
                )
            self._qemu().command(
                "qom-set",
                path="/machine/peripheral/vmem0dev",
                property="requested-size",
                value=requested // block * block,
            )

    def diagnosis(self) -> str:
        """What a test that waited in vain for the guest should say: its run state, the virtio-mem device's
        requested and plugged sizes, how old its latest balloon report is, and its console's tail."""
        try:
            with self._lock:
                qemu = self._qemu()
                state = qemu.command("query-status").get("status")
                path = "/machine/peripheral/vmem0dev"
                sizes = (
                    f"virtio-mem requested {qemu.command('qom-get', path=path, property='requested-size')}"
                    f" plugged {qemu.command('qom-get', path=path, property='size')}"
                    if self.spec.hotplug_mib
                    else "no virtio-mem"
                )
            age = time.time() - self.stats().taken_at
            return (
                f"QEMU {state}, {sizes}, last balloon report {age:.0f} s ago; console: {self.console_tail()}"
            )
        except Exception as exc:  # a diagnosis must not hide the failure it explains
            return f"no diagnosis ({exc}); console: {self.console_tail()}"

    def plugged_bytes(self) -> int:
        """Memory the virtio-mem device has plugged into the guest now (its ``size`` property)."""
        with self._lock:
            if self.spec.hotplug_mib == 0:
                return 0
            return int(self._qemu().command("qom-get", path="/machine/peripheral/vmem0dev", property="size"))

    def stats(self) -> BalloonStats:
        """The balloon driver's latest report (libvirt's ``virDomainMemoryStats`` reads this QOM property)."""
        with self._lock:
            qemu = self._qemu()
            raw = qemu.command("qom-get", path="/machine/peripheral/balloon0", property="guest-stats")
            actual = int(qemu.command("query-balloon")["actual"])
            return BalloonStats.from_qmp(raw, actual)

    def wait_stats(self, after: float, timeout_s: float = 10.0) -> BalloonStats:
        """The first report the guest makes after ``after`` (epoch seconds)."""
        deadline = time.monotonic() + timeout_s
        while True:
            stats = self.stats()
            if stats.taken_at > after and stats.total is not None:
                return stats
            if time.monotonic() > deadline:
                raise GuestError(f"no balloon statistics after {after} within {timeout_s} s")
            time.sleep(0.2)

    def samples(self, every_s: float, duration_s: float) -> Iterator[tuple[float, BalloonStats]]:
        """Balloon statistics every ``every_s`` for ``duration_s`` seconds, with each one's monotonic time."""
        end = time.monotonic() + duration_s
        while time.monotonic() < end:
            yield time.monotonic(), self.stats()
            time.sleep(every_s)

    def migrate(self, timeout_s: float = 120.0, live: bool = True) -> float:
        """Migrate the guest to a second QEMU on loopback, as KubeVirt moves a VM to a new launcher pod; the
        guest keeps running there. Returns the migration's duration in seconds (QMP's ``total-time``).

        ``live``: pre-copy while the guest runs (KubeVirt's way). ``live=False`` pauses the guest for the
        copy: under TCG (QEMU 7.2) a live migration of a 1 GiB guest that pages hard to its virtio-blk swap
        corrupted the guest's memory in the lab (kernel panics after the switch-over), so the in-the-loop test
        copies a paused guest."""
        with self._lock:
            source = self._qemu()
            port = _free_port()
            self._generation += 1
            name = f"guest{self._generation}"
            # As libvirt does: start the target with "-incoming defer", then open the listener over QMP, so
            # the source connects only once the target listens.
            target = self._launch(name, incoming="defer")
            try:
                target.command("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
                started = time.monotonic()
                if not live:
                    source.command("stop")
                source.command("migrate", uri=f"tcp:127.0.0.1:{port}")
                while True:
                    status = source.command("query-migrate")
                    state = status.get("status")
                    if state == "completed":
                        break
                    if state in {"failed", "cancelled"}:
                        raise GuestError(f"migration {state}: {json.dumps(status)}")
                    if time.monotonic() - started > timeout_s:
                        source.command("migrate_cancel")
                        raise GuestError(
                            f"migration did not complete within {timeout_s} s: {json.dumps(status)}"
                        )
                    time.sleep(0.1)
                total_s = float(status.get("total-time", (time.monotonic() - started) * 1000)) / 1000
                _wait_loaded(target, started + timeout_s)
            except BaseException:
                target.stop()
                raise
            if self._control is not None:
                self._control.close()
            source.stop()
            if not live:
                _resume(target, time.monotonic() + 30.0)
            self.qemu = target
            self._connect_control(target)
            self.set_stats_period(self.spec.stats_period_s)
            return total_s


def _wait_loaded(target: _Qemu, deadline: float) -> None:
    """Wait until the target QEMU has loaded the whole incoming state: the source says ``completed`` once it
    has sent the last bytes, while the target may still be reading them (run state ``inmigrate``)."""
    while (state := target.command("query-status").get("status")) == "inmigrate":
        if time.monotonic() > deadline:
            raise GuestError(f"the target QEMU still loads the incoming state ({state})")
        time.sleep(0.05)


def _resume(target: _Qemu, deadline: float) -> None:
    """Run the guest a paused migration left paused, and see that it runs: a guest left paused would plug
    nothing and report nothing, and a test would time out far from the cause. (Measured under two CPU hogs:
    the target was still ``inmigrate`` when the source said ``completed`` in 7 of 12 paused migrations;
    QEMU 7.2 honours a ``cont`` sent then, as autostart, in 3 of 3.)"""
    while (state := target.command("query-status").get("status")) != "running":
        if time.monotonic() > deadline:
            raise GuestError(f"the migrated guest does not run (state {state})")
        target.command("cont")
        time.sleep(0.05)


if __name__ == "__main__":  # `make guestlab`: build (or find) the image and say where it is
    built = build_image()
    print(f"guest lab: kernel {built.kernel_version}, initramfs {built.initramfs}")
