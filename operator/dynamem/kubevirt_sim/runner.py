"""Running the simulator (and optionally a scenario) in a background thread: for tests, the demo and the CLI.

The simulator is asyncio code; tests and the demo are mostly synchronous. :class:`SimulatorRunner` gives
them a started simulator with its metrics endpoint, its demand feed to steer, and a ``stop()`` that leaves
nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kubernetes.aio import client, config

from dynamem.kube.objects import ObjectKey
from dynamem.kubevirt_sim.controller import GuestState, KubeVirtSimulator, SimulatorOptions
from dynamem.kubevirt_sim.metrics import DemandFeed, MetricsServer, serve_metrics
from dynamem.kubevirt_sim.play import ScenarioPlayer
from dynamem.sim.scenario import Scenario

T = TypeVar("T")


async def api_client_from(kubeconfig: str | Path | None) -> client.ApiClient:
    configuration = client.Configuration()
    await config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig) if kubeconfig else None, client_configuration=configuration
    )
    return client.ApiClient(configuration)


@dataclass
class SimulatorRunner:
    """A KubeVirt simulator in its own thread and event loop, with its metrics served on loopback."""

    kubeconfig: str | Path | None
    options: SimulatorOptions = field(default_factory=SimulatorOptions)
    feed: DemandFeed = field(default_factory=DemandFeed)
    metrics_port: int = 0
    metrics_address: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kubevirt-sim", daemon=True)
        self.stop_event: asyncio.Event | None = None
        self.simulator: KubeVirtSimulator | None = None
        self.player: ScenarioPlayer | None = None
        self.metrics: MetricsServer | None = None
        self.tasks: list[Future[Any]] = []

    def call(self, coro: Any, timeout: float = 60.0) -> Any:
        """Run a coroutine on the simulator's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(
        self, scenario: Scenario | None = None, namespace: str = "default", *, pool: str | None = None
    ) -> SimulatorRunner:
        """Start the simulator; with a scenario, set it up in ``namespace`` (``pool``: see ScenarioPlayer)."""
        self.thread.start()

        async def boot() -> None:
            self.stop_event = asyncio.Event()
            api = await api_client_from(self.kubeconfig)
            self.simulator = KubeVirtSimulator(api, self.options)
            if scenario is not None:
                self.feed.step_s = scenario.step_seconds
                self.player = ScenarioPlayer(api, scenario, namespace, self.feed, self.options.overhead, pool)
                await self.player.setup()
                self.feed.started = self.feed.clock()

        self.call(boot())
        assert self.simulator is not None and self.stop_event is not None
        self.metrics = serve_metrics(
            self.guests, self.feed, port=self.metrics_port, addr=self.metrics_address
        )
        self.tasks.append(asyncio.run_coroutine_threadsafe(self.simulator.run(self.stop_event), self.loop))
        if self.player is not None:
            self.tasks.append(asyncio.run_coroutine_threadsafe(self.player.play(self.stop_event), self.loop))
        return self

    def guests(self) -> list[GuestState]:
        return list(self.simulator.guests.values()) if self.simulator else []

    @property
    def metrics_target(self) -> str:
        """Where Prometheus reaches the guests' metrics: the address served on (loopback for a wildcard),
        with the port bound (``metrics_port`` 0 takes any free one)."""
        assert self.metrics is not None
        host = self.metrics_address if self.metrics_address not in ("", "0.0.0.0", "::") else "127.0.0.1"
        return f"[{host}]:{self.metrics.port}" if ":" in host else f"{host}:{self.metrics.port}"

    def set_demand(self, namespace: str, name: str, demand: int) -> None:
        self.feed.set(ObjectKey(namespace, name), demand)

    def guest(self, namespace: str, name: str) -> GuestState | None:
        return self.simulator.guests.get(ObjectKey(namespace, name)) if self.simulator else None

    def run(self, fn: Callable[[KubeVirtSimulator], Any]) -> Any:
        assert self.simulator is not None
        return self.call(fn(self.simulator))

    def stop(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
        if self.stop_event is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self.stop_event.set)
            for task in self.tasks:
                with contextlib.suppress(Exception):  # a failed task was logged where it failed
                    task.result(timeout=10)
            if self.simulator is not None:
                self.call(self.simulator.api_client.close())  # type: ignore[no-untyped-call]
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)

    def __enter__(self) -> SimulatorRunner:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
