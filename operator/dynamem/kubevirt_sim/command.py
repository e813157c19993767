"""``dynamem kubevirt-sim SCENARIO.yaml``: play KubeVirt and a scenario's guests against the current cluster.

For people and what-if runs: creates the scenario's nodes, VMs and VirtualMachineMemories in a namespace,
runs the simulated virt-controller/virt-handler, serves the guests' ``kubevirt_vmi_memory_*`` metrics (point
Prometheus at the printed address) and walks the demand trace at ``--speed`` times real time.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
import time

from dynamem.arguments import ArgumentParser, typed_number
from dynamem.kube.credentials import credentials_problem
from dynamem.kubevirt_sim.controller import SimulatorOptions
from dynamem.kubevirt_sim.launcher import Rendering
from dynamem.kubevirt_sim.metrics import DemandFeed
from dynamem.kubevirt_sim.migrations import MigrationOptions
from dynamem.kubevirt_sim.play import SetupError
from dynamem.kubevirt_sim.runner import SimulatorRunner
from dynamem.serving import address_problem
from dynamem.settings import SettingsError, is_zero_quantity, parse_bytes
from dynamem.sim.kubevirt import check_hotplug_sizes
from dynamem.sim.scenario import BANDWIDTH_PROBLEM, ScenarioError, bandwidth_bytes, load_scenario


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="dynamem kubevirt-sim", description=(__doc__ or "").replace("``", "`"))
    parser.add_argument("scenario", help="scenario file (the format of 'dynamem simulate')")
    parser.add_argument("--speed", type=typed_number, default=1.0, help="times real time (default 1)")
    parser.add_argument("--namespace", default="default", help="where the VMs go (default 'default')")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=9101,
        help="port of the guests' metrics (default 9101; 0: any free port)",
    )
    parser.add_argument(
        "--metrics-address", default="127.0.0.1", help="address of the guests' metrics (default 127.0.0.1)"
    )
    parser.add_argument(
        "--bandwidth",
        default="1Gi",
        help="bytes per second a live migration copies, e.g. 500Mi/s (default 1Gi: 10 GbE)",
    )
    parser.add_argument(
        "--pending-timeout",
        type=typed_number,
        default=300.0,
        help="seconds an unschedulable migration target waits (default 300, KubeVirt's)",
    )
    parser.add_argument(
        "--updater-delay",
        type=typed_number,
        default=5.0,
        help="seconds before the workload-updater migrates a VMI (default 5, KubeVirt's)",
    )
    parser.add_argument("--overhead", default="0", help="launcher overhead each VMI reports (default 0)")
    parser.add_argument(
        "--memory-overcommit",
        type=int,
        default=100,
        help="percent: a launcher asks its guest x 100 / this, where the cluster's KubeVirt CR sets no"
        " developerConfiguration.memoryOvercommit (the CR wins, as it does for the operator; default 100)",
    )
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig (default $KUBECONFIG)")
    parser.add_argument("--exit-at-end", action="store_true", help="stop after the trace's last step")
    return parser


class FlagError(ValueError):
    def __init__(self, flag: str, value: object, problem: str) -> None:
        super().__init__(f"{flag} {value!r}: {problem}")


def _bytes(flag: str, value: str) -> int:
    try:
        return parse_bytes("kubevirt-sim", flag, value)
    except SettingsError as exc:
        raise FlagError(flag, value, exc.problem) from None


def _bandwidth(value: str) -> int:
    try:
        return bandwidth_bytes(value)
    except SettingsError:
        raise FlagError("--bandwidth", value, BANDWIDTH_PROBLEM) from None


def _checked(args: argparse.Namespace) -> None:
    """Every flag's value, checked before anything is created in the cluster."""
    if not (math.isfinite(args.speed) and args.speed > 0):
        raise FlagError("--speed", args.speed, "must be a number greater than 0")
    for flag, seconds in (
        ("--pending-timeout", args.pending_timeout),
        ("--updater-delay", args.updater_delay),
    ):
        if not (math.isfinite(seconds) and seconds >= 0):
            raise FlagError(flag, seconds, "must be a number of seconds, 0 or more")
    if args.memory_overcommit <= 0:  # KubeVirt refuses it too (configuration.go, validateConfig)
        raise FlagError("--memory-overcommit", args.memory_overcommit, "must be greater than 0")
    if not 0 <= args.metrics_port <= 65535:
        raise FlagError("--metrics-port", args.metrics_port, "must be 0 to 65535")
    serving = address_problem(args.metrics_address, args.metrics_port)
    if serving is not None:
        raise FlagError("--metrics-address", args.metrics_address, serving)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        _checked(args)
        scenario = load_scenario(args.scenario)
        check_hotplug_sizes(scenario, ("startup", "minimum"))  # the CRD would refuse its VirtualMachineMemory
        overhead = 0 if is_zero_quantity(args.overhead) else _bytes("--overhead", args.overhead)
        migration = MigrationOptions(
            bandwidth=_bandwidth(args.bandwidth),
            pending_timeout_s=args.pending_timeout,
            updater_delay_s=args.updater_delay,
        )
        options = SimulatorOptions(
            overhead=overhead,
            migration=migration,
            rendering=Rendering(memory_overcommit=args.memory_overcommit),
        )
    except (ScenarioError, ValueError) as exc:
        print(f"dynamem kubevirt-sim: {exc}", file=sys.stderr)
        return 2
    problem = credentials_problem(args.kubeconfig)
    if problem is not None:
        print(f"dynamem kubevirt-sim: {problem}", file=sys.stderr)
        return 2
    runner = SimulatorRunner(
        args.kubeconfig,
        options,
        DemandFeed(speed=args.speed),
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        runner.start(scenario, args.namespace)
    except SetupError as exc:  # e.g. a VirtualMachineMemory the CRD's rules refuse
        runner.stop()
        print(f"dynamem kubevirt-sim: the API server refused {exc}", file=sys.stderr)
        return 2
    print(f"simulating {len(scenario.vms)} VMs on {len(scenario.nodes)} nodes in namespace {args.namespace}")
    print(f"guest metrics: http://{runner.metrics_target}/metrics (add it to Prometheus' scrape targets)")
    end = scenario.steps * scenario.step_seconds / args.speed
    try:
        while not done.wait(0.5):
            if args.exit_at_end and time.monotonic() - runner.feed.started > end:
                break
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()
    return 0
