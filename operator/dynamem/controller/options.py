"""The operator's command-line options, validated once at start.

A bad flag value stops ``dynamem run`` before it touches the cluster, with a message that names the flag and
the value (exit code 2), like every other bad input dynamem sees.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from dynamem.controller.balancer import RoundOptions
from dynamem.policy import POLICIES
from dynamem.policy.model import BalanceConfig, format_bytes
from dynamem.settings import SettingsError, parse_bytes

# One set of defaults for the operator and both simulators: BalanceConfig's own. (Growth headroom, once off
# here, is on everywhere: a guest's measured use cannot exceed its memory, so a guest that outgrew its size
# looks like one whose use crept into its buffer, and the headroom is what grows it faster; on the kubevirt
# model it halves the GiB migrated, bench/compare.py.)
OPERATOR_BALANCE = BalanceConfig()


class OptionError(ValueError):
    def __init__(self, flag: str, value: object, problem: str) -> None:
        super().__init__(f"dynamem run: {flag} {value!r}: {problem}")


@dataclass(frozen=True)
class OperatorOptions:
    namespaces: tuple[str, ...] = ()
    all_namespaces: bool = True
    prometheus_url: str = "http://prometheus-k8s.monitoring.svc:9090"
    interval_s: float = 10.0
    min_gap_s: float = 1.0
    balance: BalanceConfig = field(default_factory=lambda: OPERATOR_BALANCE)
    policy: str = "dynamem"
    reserve: int = 0
    default_overhead: int = 0
    metrics_port: int | None = 8080
    metrics_address: str = "0.0.0.0"
    liveness: str | None = None
    standalone: bool = False
    priority: int | None = None
    peering: str = "dynamem"
    dry_run: bool = False
    kubeconfig: str | None = None
    log_level: str = "INFO"

    def round_options(self) -> RoundOptions:
        """What one balancing round needs of these options."""
        return RoundOptions(
            balance=self.balance,
            policy=self.policy,
            reserve=self.reserve,
            default_overhead=self.default_overhead,
            dry_run=self.dry_run,
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynamem run",
        description="Balance the memory of KubeVirt VMs that have a VirtualMachineMemory, node by node.",
    )
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    scope.add_argument("-n", "--namespace", action="append", help="watch this namespace (repeatable)")
    add = parser.add_argument
    add("--prometheus-url", default=OperatorOptions.prometheus_url, help="Prometheus with KubeVirt's metrics")
    add("--interval", type=float, default=10.0, help="seconds between balancing rounds (default 10)")
    add("--min-gap", type=float, default=1.0, help="least seconds between two rounds woken by changes")
    b = OPERATOR_BALANCE
    dead_band, shrink_band = format_bytes(b.dead_band_bytes), format_bytes(b.shrink_band_bytes)
    add(
        "--dead-band", default=dead_band, help=f"changes smaller than this are not made (default {dead_band})"
    )
    add(
        "--dead-band-percent",
        type=int,
        default=b.dead_band_percent,
        help=f"... nor smaller than this percent (default {b.dead_band_percent})",
    )
    add(
        "--shrink-band",
        default=shrink_band,
        help=f"a VM keeps excess over its target up to this (default {shrink_band})",
    )
    add(
        "--shrink-band-percent",
        type=int,
        default=b.shrink_band_percent,
        help=f"... or this percent of its target (default {b.shrink_band_percent})",
    )
    add(
        "--grow-headroom-percent",
        type=int,
        default=b.grow_headroom_percent,
        help=f"grow past target by this %% of the shrink band (default {b.grow_headroom_percent})",
    )
    add(
        "--cooldown",
        type=float,
        default=b.cooldown_s,
        help=f"seconds a VM is held after a change (default {b.cooldown_s:g})",
    )
    add("--max-changes-per-node", type=int, default=None, help="at most this many changes per node per round")
    add("--reserve", default="0", help="memory per node kept back from the VMs (default 0)")
    add("--default-overhead", default="0", help="launcher overhead to assume when a VMI reports none")
    add("--policy", default="dynamem", choices=sorted(POLICIES), help="balancing policy (default dynamem)")
    add("--metrics-port", type=int, default=8080, help="port of the operator's /metrics (0: off)")
    add("--metrics-address", default="0.0.0.0", help="address of the operator's /metrics")
    add("--liveness", default=None, help="kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    add("--standalone", action="store_true", help="no peering: this replica always balances")
    add("--priority", type=int, default=None, help="peering priority (default: random)")
    add("--peering", default="dynamem", help="name of the kopf peering object (default dynamem)")
    add("--dry-run", action="store_true", help="plan and report, but send VM changes as server dry-runs")
    add("--kubeconfig", default=None, help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    add("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def _bytes(flag: str, value: str, *, allow_zero: bool = True) -> int:
    if allow_zero and value.strip() in {"0", ""}:
        return 0
    try:
        return parse_bytes("operator", flag, value)
    except SettingsError as exc:
        raise OptionError(flag, value, exc.problem) from None


def _positive(flag: str, value: float) -> float:
    if not value > 0:
        raise OptionError(flag, value, "must be greater than 0")
    return value


def parse_options(argv: list[str]) -> OperatorOptions:
    """Parse and validate; raises OptionError (argparse itself exits 2 on unknown flags)."""
    args = build_parser().parse_args(argv)
    if not 0 <= args.dead_band_percent <= 100:
        raise OptionError("--dead-band-percent", args.dead_band_percent, "must be 0 to 100")
    for flag, value in (
        ("--shrink-band-percent", args.shrink_band_percent),
        ("--grow-headroom-percent", args.grow_headroom_percent),
    ):
        if not 0 <= value <= 100:
            raise OptionError(flag, value, "must be 0 to 100")
    if not args.cooldown >= 0:  # also refuses NaN
        raise OptionError("--cooldown", args.cooldown, "must not be negative")
    if args.max_changes_per_node is not None and args.max_changes_per_node < 1:
        raise OptionError("--max-changes-per-node", args.max_changes_per_node, "must be at least 1")
    if not 0 <= args.metrics_port <= 65535:
        raise OptionError("--metrics-port", args.metrics_port, "must be 0 to 65535")
    if not args.prometheus_url.startswith(("http://", "https://")):
        raise OptionError("--prometheus-url", args.prometheus_url, "must be an http:// or https:// URL")
    balance = BalanceConfig(
        dead_band_bytes=_bytes("--dead-band", args.dead_band),
        dead_band_percent=args.dead_band_percent,
        shrink_band_bytes=_bytes("--shrink-band", args.shrink_band),
        shrink_band_percent=args.shrink_band_percent,
        grow_headroom_percent=args.grow_headroom_percent,
        cooldown_s=args.cooldown,
        max_changes_per_node=args.max_changes_per_node,
    )
    return OperatorOptions(
        namespaces=tuple(args.namespace or ()),
        all_namespaces=bool(args.all_namespaces),
        prometheus_url=args.prometheus_url,
        interval_s=_positive("--interval", args.interval),
        min_gap_s=max(0.0, args.min_gap),
        balance=balance,
        policy=args.policy,
        reserve=_bytes("--reserve", args.reserve),
        default_overhead=_bytes("--default-overhead", args.default_overhead),
        metrics_port=args.metrics_port or None,
        metrics_address=args.metrics_address,
        liveness=args.liveness,
        standalone=args.standalone,
        priority=args.priority,
        peering=args.peering,
        dry_run=args.dry_run,
        kubeconfig=args.kubeconfig,
        log_level=args.log_level,
    )
