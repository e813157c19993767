"""``dynamem simulate SCENARIO.yaml [--model M] [--policy P] [--interval D] [--json F] [--plot F.png]``.

Plays a scenario file through one policy without a cluster and shows what each VM would get: under
``--model kubevirt`` (the default) every change is a live migration to another node, as KubeVirt does it;
``--model hyperv`` resizes in place on one host's pool, as the seed's Hyper-V does. Bad input ends
with exit code 2 and one line on stderr that names the file, the VM and the field, never a traceback: the
simulator is the first thing a user runs on their own numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dynamem.arguments import ArgumentParser
from dynamem.policy import POLICIES
from dynamem.policy.cluster_peers import CLUSTER_POLICIES

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="dynamem simulate", description="Play a scenario file through a balancing policy."
    )
    parser.add_argument("scenario", help="scenario YAML: step, nodes, vms, demand")
    parser.add_argument(
        "--model",
        default="kubevirt",
        choices=["kubevirt", "hyperv"],
        help="kubevirt (default): a change is a live migration to another node, the policy sees what the "
        "guest shows; hyperv: in place on each node's pool, the policy sees the true demand",
    )
    parser.add_argument(
        "--policy",
        default="dynamem",
        choices=sorted(set(POLICIES) | set(CLUSTER_POLICIES)),
        help="default: dynamem (kubevirt: the cluster plan; node-local: today's per-node plan; descheduler "
        "needs --model kubevirt)",
    )
    parser.add_argument(
        "--interval",
        metavar="DURATION",
        help="kubevirt model: the policy decides this often within each step (e.g. 1m), as the operator's "
        "--interval; default: the scenario's interval, else once per step",
    )
    parser.add_argument("--json", metavar="FILE", help="write steps and summary as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="write a chart per node")
    parser.add_argument("--quiet", action="store_true", help="print the summary only")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from dynamem.sim.kubevirt import check_hotplug_sizes
    from dynamem.sim.scenario import ScenarioError, interval_option, load_scenario
    from dynamem.sim.simulate import simulate

    interval: float | None = None
    if args.json:  # told before the run, not after its table, as --plot is
        target = Path(args.json)
        problem = (
            "is a directory"
            if target.is_dir()
            else None
            if target.parent.is_dir()
            else f"no such directory {str(target.parent)!r}"
        )
        if problem is not None:
            print(f"dynamem simulate: --json {args.json!r}: {problem}", file=sys.stderr)
            return 2
    if args.plot:
        from dynamem.sim.plot import chart_problem

        try:
            problem = chart_problem(args.plot)
        except RuntimeError as err:  # PlotUnavailable: matplotlib is an optional extra
            problem = str(err)
        if problem is not None:
            print(f"dynamem simulate: --plot {args.plot!r}: {problem}", file=sys.stderr)
            return 2
    try:
        scenario = load_scenario(args.scenario)
        if args.model == "kubevirt":
            check_hotplug_sizes(scenario)
        if args.interval is not None:
            if args.model != "kubevirt":
                raise ScenarioError(
                    f"--interval {args.interval}: only the kubevirt model decides within a step"
                )
            interval = interval_option(args.interval, scenario.step_seconds)
    except ScenarioError as err:
        print(f"dynamem simulate: {err}", file=sys.stderr)
        return 2
    try:
        result = simulate(scenario, args.policy, model=args.model, interval_s=interval)
    except ValueError as err:
        print(f"dynamem simulate: --policy {err}", file=sys.stderr)
        return 2

    from rich.console import Console

    from dynamem.sim.report import print_result

    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    print_result(result, console, steps=not args.quiet)
    try:
        if args.json:
            Path(args.json).write_text(json.dumps(result.to_json(), indent=1) + "\n", encoding="utf-8")
        if args.plot:
            from dynamem.sim.plot import plot_result

            plot_result(result, args.plot)
    except OSError as err:
        print(f"dynamem simulate: cannot write {err.filename}: {err.strerror}", file=sys.stderr)
        return 1
    except RuntimeError as err:  # PlotUnavailable: matplotlib is an optional extra
        print(f"dynamem simulate: --plot {args.plot}: {err}", file=sys.stderr)
        return 2
    return 0
