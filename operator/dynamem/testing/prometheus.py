"""A real Prometheus server on a loopback port, scraping targets that tests set and change at run time.

Why: dynamem reads guest memory from Prometheus (KubeVirt's `kubevirt_vmi_memory_*` series). Testing the
PromQL and the HTTP client against the real server catches what a canned JSON reply cannot: staleness,
scrape timing, label handling, query errors. The binary is the Debian package's `/usr/bin/prometheus`
(`make prometheus` installs it).

Targets are given through `file_sd_configs`: `set_targets()` rewrites a JSON file that Prometheus watches,
so a test can start an exporter on a free port and point the running server at it. Prometheus batches
discovery updates every 5 s, so a new target is scraped 5 to 7 s after `set_targets`: `wait_for` a series.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import yaml

from dynamem.testing.controlplane import ServerProcess, free_port, log_tail

__all__ = ["DEFAULT_BINARY", "Prometheus", "PrometheusError", "Sample"]

DEFAULT_BINARY = Path("/usr/bin/prometheus")


class PrometheusError(RuntimeError):
    """Prometheus is missing, did not become ready, or rejected a query."""


@dataclass(frozen=True)
class Sample:
    """One instant-vector sample: its labels (with `__name__`), timestamp (seconds) and value."""

    labels: Mapping[str, str]
    timestamp: float
    value: float


class Prometheus:
    """`/usr/bin/prometheus` on a free loopback port with a temporary config and data dir.

        with Prometheus(targets=["127.0.0.1:9100"]) as prom:
            prom.wait_for("up == 1")
            samples = prom.query("my_metric")

    `scrape_interval` is in seconds (default 1). `lifecycle` adds `--web.enable-lifecycle` (POST /-/reload,
    /-/quit). `job` names the scrape job (the `job` label of every scraped series).
    """

    def __init__(
        self,
        targets: Sequence[str] = (),
        *,
        scrape_interval: float = 1.0,
        binary: Path = DEFAULT_BINARY,
        work_dir: Path | None = None,
        lifecycle: bool = False,
        job: str = "dynamem-test",
        start_timeout: float = 30.0,
    ) -> None:
        if not binary.is_file():
            raise PrometheusError(f"{binary} is missing; run `make prometheus` (installs the Debian package)")
        self.binary = binary
        self.scrape_interval = scrape_interval
        self.lifecycle = lifecycle
        self.job = job
        self.start_timeout = start_timeout
        self._owns_work_dir = work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="dynamem-prom-")) if work_dir is None else work_dir
        self.targets_path = self.work_dir / "targets.json"
        self.config_path = self.work_dir / "prometheus.yml"
        self.log_path = self.work_dir / "prometheus.log"
        self._targets: list[str] = list(targets)
        self._process: ServerProcess | None = None
        self._http: httpx.Client | None = None
        self._url = ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The server's base URL, e.g. `http://127.0.0.1:40123`."""
        if not self._url:
            raise PrometheusError("Prometheus is not started")
        return self._url

    @property
    def targets(self) -> list[str]:
        return list(self._targets)

    def start(self) -> Self:
        """Write the config, start the server and wait for /-/ready."""
        if self._process is not None:
            return self
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.set_targets(self._targets)
        interval = f"{max(1, round(self.scrape_interval * 1000))}ms"
        config = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "file_sd_configs": [{"files": [str(self.targets_path)], "refresh_interval": "1s"}],
                }
            ],
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        self._url = f"http://127.0.0.1:{port}"
        args = [
            str(self.binary),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        if self.lifecycle:
            args.append("--web.enable-lifecycle")
        self._process = ServerProcess("prometheus", args, self.log_path)
        self._http = httpx.Client(base_url=self._url, timeout=10.0)
        http = self._http
        self._process.wait_ready(
            time.monotonic() + self.start_timeout,
            lambda: http.get("/-/ready").status_code == 200,
            self.start_timeout,
            PrometheusError,
        )

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): its port stays open and queries hang, as with a stuck Prometheus."""
        if self._process is None:
            raise PrometheusError("Prometheus is not started")
        os.killpg(self._process.popen.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a paused server (SIGCONT)."""
        if self._process is not None:
            os.killpg(self._process.popen.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove a temporary work dir. Idempotent."""
        atexit.unregister(self.stop)
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self._owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def set_targets(self, targets: Sequence[str], labels: Mapping[str, str] | None = None) -> None:
        """Replace the scrape targets (`host:port` list), with extra `labels` on all of them.

        Prometheus sees the file at once but its discovery manager passes changes on at most every 5 s, so
        the first scrape of a new target comes 5 to 7 s later: use `wait_for` rather than a sleep.
        """
        self._targets = list(targets)
        groups = [{"targets": self._targets, "labels": dict(labels or {})}] if self._targets else []
        tmp = self.targets_path.with_name(self.targets_path.name + ".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets_path)

    def add_target(self, target: str) -> None:
        """Add one `host:port` target to those already scraped."""
        if target not in self._targets:
            self.set_targets([*self._targets, target])

    def query(self, promql: str, at: float | None = None) -> list[Sample]:
        """Evaluate an instant query; returns its samples (a scalar comes back as one unlabelled sample)."""
        if self._http is None:
            raise PrometheusError("Prometheus is not started")
        params = {"query": promql}
        if at is not None:
            params["time"] = repr(at)
        response = self._http.get("/api/v1/query", params=params)
        body: dict[str, Any] = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            error = body.get("error", body)
            raise PrometheusError(f"query {promql!r} failed: {response.status_code} {error}")
        data = body["data"]
        if data["resultType"] == "vector":
            return [
                Sample(dict(item["metric"]), float(item["value"][0]), float(item["value"][1]))
                for item in data["result"]
            ]
        if data["resultType"] == "scalar":
            return [Sample({}, float(data["result"][0]), float(data["result"][1]))]
        raise PrometheusError(f"query {promql!r} returned a {data['resultType']}, not an instant vector")

    def wait_for(self, promql: str, timeout: float = 15.0) -> list[Sample]:
        """Poll `query(promql)` until it returns samples; raises `PrometheusError` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            samples = self.query(promql)
            if samples:
                return samples
            if time.monotonic() > deadline:
                raise PrometheusError(
                    f"no samples for {promql!r} after {timeout:.0f}s; targets {self._targets}; "
                    f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.2)
