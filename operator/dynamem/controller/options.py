"""The operator's command-line options, validated once at start.

A bad flag value stops ``dynamem run`` before it touches the cluster, with a message that names the flag and
the value (exit code 2), like every other bad input dynamem sees.
"""

from __future__ import annotations

import argparse
import math
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from dynamem.arguments import ArgumentParser, Typed, typed_number
from dynamem.controller.balancer import OPERATOR_POLICIES, RoundOptions
from dynamem.policy.cluster import PARKED_AFTER_S
from dynamem.policy.model import BalanceConfig, format_bytes
from dynamem.serving import address_problem
from dynamem.settings import SettingsError, is_zero_quantity, parse_bytes
from dynamem.sim.scenario import duration_seconds

# One set of defaults for the operator and both simulators: BalanceConfig's own (its grow headroom is 0, the
# value the operator always had, so the seed's workday keeps its exact numbers end to end).
OPERATOR_BALANCE = BalanceConfig()
MIN_SHRINK_WINDOW_S = 60.0  # Prometheus is asked for a minute at least (controller/demand.py, signal_queries)


class OptionError(ValueError):
    def __init__(self, flag: str, value: object, problem: str) -> None:
        super().__init__(f"dynamem run: {flag} {value!r}: {problem}")


# Kubernetes' names (apimachinery's validation: IsDNS1123Label, IsDNS1123Subdomain)
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _seconds(text: str) -> float:
    """A time flag's value: a number of seconds or a duration as scenario files write it (30s, 5m, 1h)."""
    try:
        return Typed(float(text), text)
    except ValueError:
        pass
    seconds = duration_seconds(text)
    if seconds is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds or a duration (e.g. 30, 30s, 5m)"
        )
    return Typed(seconds, text)


def _name_problem(value: str, label: bool) -> str | None:
    pattern, most = (_DNS_LABEL, 63) if label else (_DNS_SUBDOMAIN, 253)
    if len(value) > most or not pattern.fullmatch(value):
        kind = "DNS-1123 label" if label else "DNS-1123 subdomain"
        return f"not a Kubernetes name (a {kind}: lower-case letters, digits and '-', at most {most})"
    return None


@dataclass(frozen=True)
class OperatorOptions:
    namespaces: tuple[str, ...] = ()
    all_namespaces: bool = True
    prometheus_url: str = "http://prometheus-k8s.monitoring.svc:9090"
    interval_s: float = 10.0
    min_gap_s: float = 1.0
    balance: BalanceConfig = field(default_factory=lambda: OPERATOR_BALANCE)
    policy: str = "dynamem"
    parallel_migrations_given: bool = (
        False  # else the KubeVirt CR's parallelMigrationsPerCluster, if readable
    )
    reserve: int = 0
    default_overhead: int = 0
    metrics_port: int | None = 8080
    metrics_address: str = "0.0.0.0"
    liveness: str | None = None
    standalone: bool = False
    lease_name: str = "dynamem"
    lease_namespace: str | None = None
    lease_duration_s: float = 15.0
    resync_period_s: float = 300.0
    force_ownership: bool = False
    prometheus_token_file: str | None = None
    prometheus_ca_file: str | None = None
    status_writes_per_s: float = 20.0
    change_deadline_s: float = 360.0
    parked_after_s: float = PARKED_AFTER_S
    demand_max_age_s: float | None = None  # None: the interval
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
            force_ownership=self.force_ownership,
            status_writes_per_s=self.status_writes_per_s,
            change_deadline_s=self.change_deadline_s,
            parked_after_s=self.parked_after_s,
        )

    def demand_max_age(self) -> float:
        """How old a demand reading read ahead may be when a round uses it: --demand-max-age, else the
        interval (a regular round's reading, read a lead ahead, is much younger)."""
        return self.interval_s if self.demand_max_age_s is None else self.demand_max_age_s

    def lease_place(self, pod_namespace: str | None) -> str:
        """The Lease's namespace: --lease-namespace, else the pod's, else the first watched, else default."""
        if self.lease_namespace:
            return self.lease_namespace
        if pod_namespace:
            return pod_namespace
        return self.namespaces[0] if self.namespaces else "default"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="dynamem run",
        description="Balance the memory of KubeVirt VMs that have a VirtualMachineMemory: sizes and nodes.",
    )
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    scope.add_argument("-n", "--namespace", action="append", help="watch this namespace (repeatable)")
    add = parser.add_argument
    add("--prometheus-url", default=OperatorOptions.prometheus_url, help="Prometheus with KubeVirt's metrics")
    add(
        "--interval",
        type=_seconds,
        default=10.0,
        help="seconds after --min-gap that a round waits for a change before it runs anyway (default 10)",
    )
    add("--min-gap", type=_seconds, default=1.0, help="least seconds between two rounds woken by changes")
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
        "--shrink-idle-always",
        action="store_true",
        help="shrink a VM whose use stayed low even while the cluster has more memory to spare than any VM "
        "can grow by (default: keep it there, a shrink being a migration)",
    )
    add(
        "--cooldown",
        type=_seconds,
        default=b.cooldown_s,
        help=f"seconds a VM is held after a change (default {b.cooldown_s:g})",
    )
    add(
        "--shrink-window",
        type=_seconds,
        default=b.shrink_window_s,
        help=f"a VM shrinks only on use that stayed low this long, the window its peak use and rise are read "
        f"over, and a rising use is grown ahead of by as long (default {b.shrink_window_s:g} s, at least "
        f"{MIN_SHRINK_WINDOW_S:g}; shorter for a scenario played faster than real time)",
    )
    add("--max-changes-per-node", type=int, default=None, help="at most this many changes per node per round")
    add("--reserve", default="0", help="memory per node kept back from the VMs (default 0)")
    add(
        "--default-overhead",
        default="0",
        help="launcher overhead to assume when a VMI reports none and its launcher pod is not in view "
        "(else: what that pod requests beyond its guest)",
    )
    add(
        "--policy",
        default="dynamem",
        choices=OPERATOR_POLICIES,
        help="balancing policy (default dynamem: the cluster plan; node-local: each node on its own)",
    )
    add(
        "--max-parallel-migrations",
        type=int,
        default=None,
        help="migrations in flight at once in the cluster (default: the KubeVirt CR's "
        "parallelMigrationsPerCluster when readable, else 5)",
    )
    add("--metrics-port", type=int, default=8080, help="port of the operator's /metrics (0: off)")
    add("--metrics-address", default="0.0.0.0", help="address of the operator's /metrics")
    add("--liveness", default=None, help="kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    add("--standalone", action="store_true", help="no leader election: this replica always balances")
    add("--lease-name", default="dynamem", help="name of the coordination.k8s.io Lease (default dynamem)")
    add(
        "--lease-namespace",
        default=None,
        help="namespace of the Lease (default: $POD_NAMESPACE, else the first -n namespace, else default)",
    )
    add("--lease-duration", type=_seconds, default=15.0, help="seconds a Lease lasts unrenewed (default 15)")
    add("--resync-period", type=_seconds, default=300.0, help="seconds between fresh LISTs (default 300)")
    add(
        "--force-ownership",
        action="store_true",
        help="take memory.guest from another field manager (default: report FieldOwnedByOtherManager, hold)",
    )
    add("--prometheus-token-file", default=None, help="bearer token file for Prometheus (read each query)")
    add("--prometheus-ca-file", default=None, help="CA bundle to verify Prometheus' certificate")
    add(
        "--status-writes-per-second",
        type=typed_number,
        default=20.0,
        help="at most this many VirtualMachineMemory status writes per second (default 20)",
    )
    add(
        "--change-deadline",
        type=_seconds,
        default=360.0,
        help="seconds a memory change may take before it is taken back and the VM held (default 360: "
        "KubeVirt's 300 s unschedulable-target timeout plus a margin; its failed migrations are retried "
        "by KubeVirt meanwhile)",
    )
    add(
        "--parked-after",
        type=_seconds,
        default=PARKED_AFTER_S,
        help="seconds a VM may be off and still keep a hole of its own to start in (default 86400, a day: "
        "one stopped last night starts this morning); VMs off for longer share one hole, for the largest",
    )
    add(
        "--demand-max-age",
        type=_seconds,
        default=None,
        help="seconds a demand reading, read ahead of the round, may be old when a round uses it; older, "
        "the round reads afresh and waits (default: the interval; 0: every round waits for its own reading)",
    )
    add("--dry-run", action="store_true", help="plan and report, but send VM changes as server dry-runs")
    add("--kubeconfig", default=None, help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    add(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="the operator's log level (default INFO; DEBUG logs every round)",
    )
    return parser


def _bytes(flag: str, value: str, *, allow_zero: bool = True) -> int:
    if allow_zero and (not value.strip() or is_zero_quantity(value)):
        return 0
    try:
        return parse_bytes("operator", flag, value)
    except SettingsError as exc:
        problem = exc.problem
        if allow_zero and problem == "must be a positive quantity":
            problem = "must be 0 or a positive quantity"
        raise OptionError(flag, value, problem) from None


def _positive(flag: str, value: float) -> float:
    if not value > 0:
        raise OptionError(flag, value, "must be greater than 0")
    return value


def parse_options(argv: list[str]) -> OperatorOptions:
    """Parse and validate; raises OptionError (argparse itself exits 2 on unknown flags)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for action in parser._actions:  # NaN and infinities are no number of seconds, writes or ratios
        value = getattr(args, action.dest, None)
        numeric = action.type in (float, _seconds, typed_number)
        if numeric and isinstance(value, float) and not math.isfinite(value):
            raise OptionError(action.option_strings[-1], value, "must be a finite number")
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
    if not args.shrink_window >= MIN_SHRINK_WINDOW_S:  # also refuses NaN
        raise OptionError(
            "--shrink-window", args.shrink_window, f"must be at least {MIN_SHRINK_WINDOW_S:g} s"
        )
    if args.max_changes_per_node is not None and args.max_changes_per_node < 1:
        raise OptionError("--max-changes-per-node", args.max_changes_per_node, "must be at least 1")
    if args.max_parallel_migrations is not None and args.max_parallel_migrations < 1:
        raise OptionError("--max-parallel-migrations", args.max_parallel_migrations, "must be at least 1")
    if not 0 <= args.metrics_port <= 65535:
        raise OptionError("--metrics-port", args.metrics_port, "must be 0 to 65535")
    if not args.lease_duration >= 3:
        raise OptionError("--lease-duration", args.lease_duration, "must be at least 3 seconds")
    for flag, path in (
        ("--prometheus-token-file", args.prometheus_token_file),
        ("--prometheus-ca-file", args.prometheus_ca_file),
    ):
        if path is not None and not Path(path).is_file():
            raise OptionError(flag, path, "no such file")
    if args.demand_max_age is not None and not args.demand_max_age >= 0:  # also refuses NaN
        raise OptionError("--demand-max-age", args.demand_max_age, "must not be negative")
    url = urlparse(args.prometheus_url)
    if url.scheme not in {"http", "https"} or not url.hostname:
        raise OptionError("--prometheus-url", args.prometheus_url, "must be an http:// or https:// URL")
    if not args.min_gap >= 0:
        raise OptionError("--min-gap", args.min_gap, "must not be negative")
    for flag, name, label in (
        ("--lease-name", args.lease_name, False),
        ("--lease-namespace", args.lease_namespace, True),
        *(("--namespace", namespace, True) for namespace in args.namespace or ()),
    ):
        problem = None if name is None else _name_problem(name, label)
        if problem is not None:
            raise OptionError(flag, name, problem)
    if args.prometheus_ca_file is not None:
        try:
            ssl.create_default_context(cafile=args.prometheus_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise OptionError(
                "--prometheus-ca-file", args.prometheus_ca_file, f"no CA certificate ({exc})"
            ) from None
    if args.liveness is not None:
        live = urlparse(args.liveness)
        if live.scheme != "http" or not live.hostname:
            raise OptionError(
                "--liveness", args.liveness, "must be an http:// URL, e.g. http://0.0.0.0:8081/healthz"
            )
    serving = address_problem(args.metrics_address, args.metrics_port) if args.metrics_port else None
    if serving is not None:
        raise OptionError("--metrics-address", args.metrics_address, serving)
    balance = BalanceConfig(
        dead_band_bytes=_bytes("--dead-band", args.dead_band),
        dead_band_percent=args.dead_band_percent,
        shrink_band_bytes=_bytes("--shrink-band", args.shrink_band),
        shrink_band_percent=args.shrink_band_percent,
        grow_headroom_percent=args.grow_headroom_percent,
        idle_spare_ranges=None if args.shrink_idle_always else OPERATOR_BALANCE.idle_spare_ranges,
        cooldown_s=args.cooldown,
        shrink_window_s=args.shrink_window,
        trend_horizon_s=args.shrink_window,
        max_changes_per_node=args.max_changes_per_node,
        max_parallel_migrations=args.max_parallel_migrations or OPERATOR_BALANCE.max_parallel_migrations,
    )
    return OperatorOptions(
        namespaces=tuple(args.namespace or ()),
        all_namespaces=bool(args.all_namespaces),
        prometheus_url=args.prometheus_url,
        interval_s=_positive("--interval", args.interval),
        min_gap_s=args.min_gap,
        balance=balance,
        policy=args.policy,
        parallel_migrations_given=args.max_parallel_migrations is not None,
        reserve=_bytes("--reserve", args.reserve),
        default_overhead=_bytes("--default-overhead", args.default_overhead),
        metrics_port=args.metrics_port or None,
        metrics_address=args.metrics_address,
        liveness=args.liveness,
        standalone=args.standalone,
        lease_name=args.lease_name,
        lease_namespace=args.lease_namespace,
        lease_duration_s=args.lease_duration,
        resync_period_s=_positive("--resync-period", args.resync_period),
        force_ownership=args.force_ownership,
        prometheus_token_file=args.prometheus_token_file,
        prometheus_ca_file=args.prometheus_ca_file,
        status_writes_per_s=_positive("--status-writes-per-second", args.status_writes_per_second),
        change_deadline_s=_positive("--change-deadline", args.change_deadline),
        parked_after_s=_positive("--parked-after", args.parked_after),
        demand_max_age_s=args.demand_max_age,
        dry_run=args.dry_run,
        kubeconfig=args.kubeconfig,
        log_level=args.log_level,
    )
