"""`python -m dynamem.testing.cluster up|down|status`: a local control plane for people, in the background.

Why: to try the operator, kubectl or the demo by hand you want the same etcd + kube-apiserver (+ Prometheus)
the tests use, but living longer than one command. `up` starts a detached keeper process that owns the
servers (they die with it) and leaves its state in `$DYNAMEM_CACHE/cluster/`:

    pid            the keeper's process id
    kubeconfig     admin kubeconfig (system:masters), certificates embedded
    state.json     server URL, Prometheus URL, the Prometheus targets file, the paths above
    keeper.log     the keeper's own output; work/ holds the servers' logs and data

Both commands are idempotent: `up` while running prints the export line again; `down` with nothing running
says so and exits 0. `status` exits 0 when running, 1 when not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dynamem.testing.controlplane import ControlPlane, ControlPlaneError, cache_dir, log_tail
from dynamem.testing.prometheus import DEFAULT_BINARY, Prometheus, PrometheusError

__all__ = ["main", "read_state", "state_dir"]

_MODULE = "dynamem.testing.cluster"
UP_TIMEOUT = 120.0
SIMULATOR_METRICS = "127.0.0.1:9101"  # `dynamem kubevirt-sim --metrics-port` default
DOWN_TIMEOUT = 30.0


def state_dir() -> Path:
    return cache_dir() / "cluster"


def _keeper_pid() -> int | None:
    """The running keeper's pid, or None (a stale pid file or a reused pid does not count)."""
    try:
        pid = int((state_dir() / "pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if _MODULE.encode() in cmdline and b"keep" in cmdline else None


def _running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def read_state() -> dict[str, Any] | None:
    """The running cluster's state.json (URLs and paths), or None when no cluster is up."""
    if _keeper_pid() is None:
        return None
    try:
        state: dict[str, Any] = json.loads((state_dir() / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return state


def _print_state(state: dict[str, Any]) -> None:
    print(f"export KUBECONFIG={state['kubeconfig']}")
    print(f"# kube-apiserver {state['server_url']}  (keeper pid {state['pid']}, logs in {state['work_dir']})")
    if state.get("prometheus_url"):
        print(f"# prometheus {state['prometheus_url']}  (scrape targets: {state['prometheus_targets']})")


def _clean(directory: Path) -> None:
    for name in ("pid", "state.json", "kubeconfig"):
        (directory / name).unlink(missing_ok=True)
    shutil.rmtree(directory / "work", ignore_errors=True)


def up(prometheus: bool = True) -> int:
    state = read_state()
    if state is not None:
        _print_state(state)
        return 0
    directory = state_dir()
    if _keeper_pid() is not None:
        log_path = directory / "keeper.log"
        print(f"a keeper is running but not ready; see {log_path} or run `down`", file=sys.stderr)
        return 1
    directory.mkdir(parents=True, exist_ok=True)
    _clean(directory)
    log_path = directory / "keeper.log"
    args = [sys.executable, "-m", _MODULE, "keep"]
    if not prometheus:
        args.append("--no-prometheus")
    with open(log_path, "wb") as log:
        keeper = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + UP_TIMEOUT
    while (state := read_state()) is None:
        code = keeper.poll()
        if code is not None or time.monotonic() > deadline:
            if code is None:
                keeper.terminate()
            print(f"the local cluster did not start; last lines of {log_path}:", file=sys.stderr)
            print(log_tail(log_path), file=sys.stderr)
            return 1
        time.sleep(0.1)
    _print_state(state)
    return 0


def down() -> int:
    pid = _keeper_pid()
    if pid is None:
        print("no local cluster is running")
        _clean(state_dir())
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + DOWN_TIMEOUT
    # Wait for the process itself, not its pid file: the keeper removes its files before it has stopped
    # every server, and on a busy machine that gap is seconds.
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _running(pid):
        # The servers get SIGKILL from the kernel when their keeper dies (PR_SET_PDEATHSIG).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    _clean(state_dir())
    print("local cluster stopped")
    return 0


def status() -> int:
    state = read_state()
    if state is None:
        print("no local cluster is running")
        return 1
    _print_state(state)
    return 0


def keep(prometheus: bool = True) -> int:
    """The keeper: start the servers, publish state.json, and hold them until SIGTERM or SIGINT."""
    directory = state_dir()
    work = directory / "work"
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    (directory / "pid").write_text(f"{os.getpid()}\n")
    control_plane: ControlPlane | None = None
    prom: Prometheus | None = None
    try:
        control_plane = ControlPlane(work_dir=work / "controlplane").start()
        kubeconfig = control_plane.write_kubeconfig(directory / "kubeconfig")
        if prometheus and DEFAULT_BINARY.is_file():
            # Scrapes `dynamem kubevirt-sim`'s guest metrics at their default address from the start.
            prom = Prometheus([SIMULATOR_METRICS], work_dir=work / "prometheus").start()
        elif prometheus:
            print(f"{DEFAULT_BINARY} is missing (run `make prometheus`); continuing without Prometheus")
        state = {
            "pid": os.getpid(),
            "kubeconfig": str(kubeconfig),
            "server_url": control_plane.server_url,
            "work_dir": str(work),
            "prometheus_url": prom.url if prom else None,
            "prometheus_targets": str(prom.targets_path) if prom else None,
        }
        tmp = directory / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(directory / "state.json")
        print(f"ready: {json.dumps(state)}", flush=True)
        while not stopping.wait(1.0):
            if not control_plane.running:
                print("kube-apiserver exited; stopping", flush=True)
                return 1
        return 0
    except (ControlPlaneError, PrometheusError) as exc:
        print(f"error: {exc}", flush=True)
        return 1
    finally:
        if prom is not None:
            prom.stop()
        if control_plane is not None:
            control_plane.stop()
        _clean(directory)
        print("stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {_MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status", "keep"])
    parser.add_argument("--no-prometheus", action="store_true", help="start only etcd and kube-apiserver")
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(prometheus=not args.no_prometheus)
    if args.command == "down":
        return down()
    if args.command == "status":
        return status()
    return keep(prometheus=not args.no_prometheus)


if __name__ == "__main__":
    sys.exit(main())
