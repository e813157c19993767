"""The operator as its own process (``dynamem run``), as it runs in a cluster: for tests and the demo."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from dynamem.testing.controlplane import free_port

LOG_DIR = Path(tempfile.gettempdir()) / "dynamem-operator-logs"
KEPT_LOGS = 60  # the newest; a test run starts some fifty replicas, a demo one
KEPT_FOR_S = 3600.0  # and any younger than this: another run going on meanwhile may still read its own


def _age(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed meanwhile by another run
        return 0.0


def new_log() -> Path:
    """A fresh log file in :data:`LOG_DIR`, the oldest beyond :data:`KEPT_LOGS` removed once older than
    :data:`KEPT_FOR_S`: the logs of the latest runs stay for reading after a failure (runs going on at once
    share the folder), and runs do not pile them up for ever."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    logs = sorted(LOG_DIR.glob("dynamem-operator-*.log"), key=_age, reverse=True)
    for old in logs[KEPT_LOGS - 1 :]:
        if time.time() - _age(old) > KEPT_FOR_S:
            old.unlink(missing_ok=True)
    return Path(tempfile.mkstemp(prefix="dynamem-operator-", suffix=".log", dir=LOG_DIR)[1])


class OperatorProcess:
    """``dynamem run --namespace NS [--standalone]`` against a kubeconfig, logging to a temporary file."""

    def __init__(
        self,
        kubeconfig: Path,
        prometheus_url: str,
        namespace: str,
        *extra: str,
        interval: float = 1.0,
        metrics_port: int | None = None,
        standalone: bool = True,
    ) -> None:
        self.metrics_port = metrics_port or free_port()
        self.liveness_port = free_port()
        self.log = new_log()
        self.args = [
            sys.executable,
            "-m",
            "dynamem.cli",
            "run",
            "--namespace",
            namespace,
            *(["--standalone"] if standalone else []),
            "--kubeconfig",
            str(kubeconfig),
            "--prometheus-url",
            prometheus_url,
            "--interval",
            str(interval),
            "--min-gap",
            "0.2",
            "--metrics-port",
            str(self.metrics_port),
            "--metrics-address",
            "127.0.0.1",
            "--liveness",
            f"http://127.0.0.1:{self.liveness_port}/healthz",
            "--log-level",
            "DEBUG",
            *extra,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def gauge(self, name: str) -> float | None:
        """The value of an unlabelled metric on the replica's /metrics (None: not served, or no answer)."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return None
        values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
        return values[0] if values else None

    def health(self) -> tuple[int, dict[str, Any]] | None:
        """The replica's ``/healthz`` (``--liveness``): its HTTP status and JSON (None: no answer)."""
        try:
            answer = httpx.get(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=5)
        except httpx.HTTPError:
            return None
        try:
            body = answer.json()
        except ValueError:
            body = {"text": answer.text}
        return answer.status_code, body

    def logs(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:  # removed by another run's pruning (new_log): nothing to show, no new error
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
