"""Scenario files: nodes, VMs with their settings, and what each guest uses over time.

A scenario is the seed's story told as data: how much memory each node lends its VMs, each VM's Dynamic
Memory settings, and one demand value per step (null while the VM is off). The simulator plays it through a
policy, the benchmarks play it through every policy, and the KubeVirt stand-in reuses :func:`load_scenario`
to feed demand into a real control plane, so the file is read, checked and turned into bytes here, once.

A bad file must not end in a traceback: every problem raises :class:`ScenarioError` with one line naming the
file, the VM (or node) and the field, e.g. ``workday.yaml: vm 'sales': field 'node': 'hots' is not a node``.

Format::

    step: 15m                                  # wall time one step stands for (s, m, h, or seconds)
    nodes:
      - {name: host, memory: 8Gi}              # memory the VMs on this node share
    vms:
      - {name: finance, node: host, startup: 1Gi, maximum: 4Gi}   # minimum, buffer, priority optional
    demand:
      finance: [0.5Gi, 2.4Gi, 1.6Gi]           # memory in use per step; null = not running
    overhead: 200Mi                            # optional: virt-launcher overhead per VM (default 0)
    migration:                                 # optional: KubeVirt's live-migration limits
      bandwidth: 1Gi                           # bytes per second per migration (default 1Gi, a 10 GbE link)
      per_cluster: 5                           # parallelMigrationsPerCluster (default 5)
      outbound_per_node: 2                     # parallelOutboundMigrationsPerNode (default 2)
      pending_timeout: 5m                      # an unschedulable target pod fails after this (default 5m)

Sizes are Kubernetes quantities; a number without a unit is bytes, and one under 1Mi is refused as a missing
unit. ``vms[].node`` is where a VM starts. Under ``dynamem simulate --model kubevirt`` (the default) the VM
leaves it at its first memory change, since every change is a live migration; ``overhead`` and ``migration``
only matter there (``--model hyperv`` resizes in place). The defaults are KubeVirt v1.7.0's
(``pkg/virt-config/virt-config.go``: ``ParallelMigrationsPerClusterDefault`` 5,
``ParallelOutboundMigrationsPerNodeDefault`` 2; ``pkg/virt-controller/watch/migration/migration.go``:
``defaultUnschedulablePendingTimeoutSeconds`` 300), except the bandwidth: KubeVirt's default is unlimited
(``BandwidthPerMigrationDefault = "0Mi"``), so a 10 GbE link (about 1Gi per second) stands in for it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pydantic
import yaml

from dynamem.policy.model import MiB
from dynamem.settings import SettingsError, VmSettings, is_zero_quantity, parse_bytes

__all__ = [
    "MigrationSettings",
    "Scenario",
    "ScenarioError",
    "ScenarioNode",
    "ScenarioVm",
    "check_interval",
    "interval_option",
    "load_scenario",
    "parse_duration",
    "parse_scenario",
]

_DURATION = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_VM_KEYS = frozenset({"name", "node", "startup", "minimum", "maximum", "buffer", "priority", "hugepage"})
_TOP_KEYS = ("step", "nodes", "vms", "demand", "description", "overhead", "migration", "interval")
_NODE_KEYS = ("name", "memory")
# the page sizes KubeVirt backs a guest with (``spec.domain.memory.hugepages.pageSize``) on x86_64
_HUGEPAGE_SIZES = {"2Mi": 2 * MiB, "1Gi": 1024 * MiB}


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error: PyYAML keeps the last value and
    drops the first without a word, and a scenario must lose nothing it was given."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, list | dict):
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key may not be a list or mapping: {key!r}", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_MIGRATION_KEYS = ("bandwidth", "per_cluster", "outbound_per_node", "pending_timeout")
_BANDWIDTH = re.compile(r"^(.*?)\s*/\s*s\s*$")


class ScenarioError(ValueError):
    """A scenario file that cannot be played; the message is one line naming file, VM or node, and field."""


class ScenarioNode(pydantic.BaseModel, frozen=True):
    name: str
    memory: int = pydantic.Field(gt=0, description="bytes the VMs on this node share")


class ScenarioVm(pydantic.BaseModel, frozen=True):
    name: str
    node: str
    settings: VmSettings
    hugepage: int = 2 * MiB
    hugepages: bool = False  # the scenario names its page size: its guest is backed by hugepages of that size


class MigrationSettings(pydantic.BaseModel, frozen=True):
    """KubeVirt's live-migration limits, as the scenario's ``migration`` key sets them.

    ``bandwidth``: bytes per second one migration copies (a migration of a VM of size S lasts S / bandwidth
    seconds). ``per_cluster``/``outbound_per_node``: KubeVirt's ``parallelMigrationsPerCluster`` and
    ``parallelOutboundMigrationsPerNode``. ``pending_timeout``: seconds a target pod may stay unschedulable
    before the migration fails (``kubevirt.io/migrationUnschedulablePodTimeoutSeconds``).
    """

    bandwidth: int = pydantic.Field(default=1 << 30, gt=0)
    per_cluster: int = pydantic.Field(default=5, ge=1)
    outbound_per_node: int = pydantic.Field(default=2, ge=1)
    pending_timeout: float = pydantic.Field(default=300.0, gt=0)


class Scenario(pydantic.BaseModel, frozen=True):
    """A checked scenario: step length, nodes, VMs, and per VM one demand (bytes or None) per step.

    ``overhead``: bytes KubeVirt's virt-launcher pod requests on top of the guest memory (its request is
    guest + overhead). ``migration``: the live-migration limits of the kubevirt model. ``interval_seconds``:
    how often the policy decides within a step in the kubevirt model, as the operator's ``--interval`` (None:
    once per step); a step's demand holds for all its rounds.
    """

    source: str = "<scenario>"
    step_seconds: float = pydantic.Field(gt=0)
    nodes: tuple[ScenarioNode, ...]
    vms: tuple[ScenarioVm, ...]
    demand: Mapping[str, tuple[int | None, ...]]
    overhead: int = pydantic.Field(default=0, ge=0)
    migration: MigrationSettings = MigrationSettings()
    interval_seconds: float | None = pydantic.Field(default=None, gt=0)

    @property
    def steps(self) -> int:
        return len(next(iter(self.demand.values()), ()))

    def node(self, name: str) -> ScenarioNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; raises :class:`ScenarioError` with a one-line message."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ScenarioError(f"{source}: cannot read: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        bad = f"byte {err.object[err.start]:#04x} at offset {err.start}"
        raise ScenarioError(f"{source}: not UTF-8 text ({bad})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no Python objects
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "syntax error"
        raise ScenarioError(f"{source}: not valid YAML{where}: {problem}") from None
    return parse_scenario(data, source)


def _steps_problem(lengths: dict[str, int]) -> str | None:
    """Every VM's demand has one value per step: the VM whose count differs from most VMs' is named (of two
    that differ, both)."""
    counts = Counter(lengths.values())
    if len(counts) < 2:
        return None
    (usual, times), (_, next_times) = counts.most_common(2)
    if times == next_times:
        shown = ", ".join(f"vm {name!r} has {count}" for name, count in lengths.items())
        return f"field 'demand': one value per step for every VM, but {shown}"
    odd = next(name for name, count in lengths.items() if count != usual)
    return f"vm {odd!r}: field 'demand': {lengths[odd]} values, the other VMs have {usual}"


def parse_scenario(data: object, source: str = "<scenario>") -> Scenario:
    """Check an already parsed scenario (a mapping as YAML gives it)."""

    def fail(message: str) -> ScenarioError:
        return ScenarioError(f"{source}: {message}")

    if not isinstance(data, Mapping):
        raise fail("not a scenario: expected a mapping with step, nodes, vms and demand")
    for key in ("step", "nodes", "vms", "demand"):
        if key not in data:
            raise fail(f"field {key!r}: missing")
    unknown = sorted(str(k) for k in data if k not in _TOP_KEYS)
    if unknown:
        raise fail(f"field {unknown[0]!r}: unknown (expected {', '.join(_TOP_KEYS)})")

    step_seconds = parse_duration(data["step"], source)
    interval_seconds = None
    if data.get("interval") is not None:
        interval_seconds = check_interval(
            parse_duration(data["interval"], source, "interval"), step_seconds, source
        )
    overhead = 0
    raw_overhead = data.get("overhead")
    if raw_overhead is not None and not is_zero_quantity(raw_overhead):
        try:
            overhead = parse_bytes("scenario", "overhead", raw_overhead)
        except SettingsError as err:
            raise fail(f"field 'overhead': {_problem(err)}") from None
    migration = _migration(data.get("migration"), source)

    raw_nodes = data["nodes"]
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise fail("field 'nodes': expected a non-empty list of {name, memory}")
    nodes: list[ScenarioNode] = []
    for index, raw in enumerate(raw_nodes):
        if not isinstance(raw, Mapping):
            raise fail(f"node #{index + 1}: {raw!r} is not a mapping of {', '.join(_NODE_KEYS)}")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            got = "missing" if name is None else f"{name!r} is not a name"
            raise fail(f"node #{index + 1}: field 'name': {got}")
        if any(n.name == name for n in nodes):
            raise fail(f"node {name!r}: field 'name': defined twice")
        assert isinstance(raw, Mapping)
        extra = sorted(str(k) for k in raw if k not in _NODE_KEYS)
        if extra:
            raise fail(f"node {name!r}: field {extra[0]!r}: unknown (expected {', '.join(_NODE_KEYS)})")
        try:
            memory = parse_bytes(name, "memory", raw.get("memory"))
        except SettingsError as err:
            raise fail(f"node {name!r}: field 'memory': {_problem(err)}") from None
        nodes.append(ScenarioNode(name=name, memory=memory))
    node_names = {n.name for n in nodes}

    raw_vms = data["vms"]
    if not isinstance(raw_vms, list) or not raw_vms:
        raise fail("field 'vms': expected a non-empty list of {name, node, startup, maximum, ...}")
    vms: list[ScenarioVm] = []
    for index, raw in enumerate(raw_vms):
        if not isinstance(raw, Mapping):
            raise fail(f"vm #{index + 1}: {raw!r} is not a mapping of name, node, startup, maximum, ...")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            got = "missing" if name is None else f"{name!r} is not a name"
            raise fail(f"vm #{index + 1}: field 'name': {got}")
        if any(v.name == name for v in vms):
            raise fail(f"vm {name!r}: field 'name': defined twice")
        assert isinstance(raw, Mapping)
        extra = sorted(str(k) for k in raw if k not in _VM_KEYS)
        if extra:
            raise fail(f"vm {name!r}: field {extra[0]!r}: unknown")
        node = raw.get("node")
        if node is None:
            raise fail(f"vm {name!r}: field 'node': missing")
        if not isinstance(node, str) or node not in node_names:
            raise fail(f"vm {name!r}: field 'node': {node!r} is not a node of this scenario")
        try:
            settings = VmSettings.from_spec(name, raw)
        except SettingsError as err:
            raise fail(str(err)) from None
        page = raw.get("hugepage")
        hugepage = 2 * MiB if page is None else _HUGEPAGE_SIZES.get(str(page).strip(), 0)
        if not hugepage:
            raise fail(f"vm {name!r}: field 'hugepage': {page!r} is not a page size (expected 2Mi or 1Gi)")
        vms.append(
            ScenarioVm(
                name=name,
                node=str(node),
                settings=settings,
                hugepage=hugepage,
                hugepages=raw.get("hugepage") is not None,
            )
        )

    raw_demand = data["demand"]
    if not isinstance(raw_demand, Mapping):
        raise fail("field 'demand': expected a mapping of VM name to a list of quantities")
    vm_names = [v.name for v in vms]
    for key in raw_demand:
        if key not in vm_names:
            raise fail(f"vm {key!r}: field 'demand': not a VM of this scenario")
    demand: dict[str, tuple[int | None, ...]] = {}
    for name in vm_names:
        series = raw_demand.get(name)
        if series is None:
            raise fail(f"vm {name!r}: field 'demand': missing")
        if not isinstance(series, list) or not series:
            raise fail(f"vm {name!r}: field 'demand': expected a non-empty list of quantities or null")
    steps_problem = _steps_problem({name: len(raw_demand[name]) for name in vm_names})
    if steps_problem is not None:
        raise fail(steps_problem)
    for name in vm_names:
        series = raw_demand[name]
        values: list[int | None] = []
        for step, value in enumerate(series):
            if value is None:
                values.append(None)
            elif value == 0 and not isinstance(value, bool):
                values.append(0)
            else:
                try:
                    values.append(parse_bytes(name, f"demand[{step}]", value))
                except SettingsError as err:
                    raise fail(str(err)) from None
        demand[name] = tuple(values)
    return Scenario(
        source=source,
        step_seconds=step_seconds,
        nodes=tuple(nodes),
        vms=tuple(vms),
        demand=demand,
        overhead=overhead,
        migration=migration,
        interval_seconds=interval_seconds,
    )


def check_interval(interval: float, step: float, source: str, field: str = "interval") -> float:
    """``interval`` seconds if the policy can decide that often within a step of ``step`` seconds (at most
    once a second, at least once a step), else a :class:`ScenarioError` naming ``field`` and the value."""
    if not 1.0 <= interval <= step:
        raise ScenarioError(
            f"{source}: field {field!r}: {interval:g}s is not between 1s and the step ({step:g}s): the "
            "policy decides at most once a second and at least once a step"
        )
    return interval


def interval_option(value: str, step: float) -> float:
    """Seconds of an ``--interval DURATION`` option for steps of ``step`` seconds, else a
    :class:`ScenarioError` naming ``--interval`` and the value as written."""
    seconds, problem = _duration(value)
    if seconds is None:
        raise ScenarioError(f"--interval {value}: {problem}")
    if not 1.0 <= seconds <= step:
        raise ScenarioError(
            f"--interval {value}: {seconds:g}s is not between 1s and the step ({step:g}s): the policy "
            "decides at most once a second and at least once a step"
        )
    return seconds


BANDWIDTH_PROBLEM = "is not a positive quantity per second (e.g. 1Gi, 500Mi/s)"


def bandwidth_bytes(value: object) -> int:
    """Bytes a second of a live migration's bandwidth written as a quantity, with or without ``/s``
    (``1Gi``, ``500Mi/s``); :class:`SettingsError` when it is none."""
    text = value
    if isinstance(value, str):
        per_second = _BANDWIDTH.match(value)
        text = per_second.group(1) if per_second else value
    return parse_bytes("scenario", "migration.bandwidth", text)


def _migration(raw: object, source: str) -> MigrationSettings:
    """The optional ``migration`` mapping; every bad value names ``migration.<field>`` and the value."""
    if raw is None:
        return MigrationSettings()
    if not isinstance(raw, Mapping):
        raise ScenarioError(
            f"{source}: field 'migration': {raw!r} is not a mapping of {', '.join(_MIGRATION_KEYS)}"
        )
    unknown = sorted(str(k) for k in raw if k not in _MIGRATION_KEYS)
    if unknown:
        raise ScenarioError(
            f"{source}: field 'migration.{unknown[0]}': unknown (expected {', '.join(_MIGRATION_KEYS)})"
        )
    values: dict[str, object] = {}
    if raw.get("bandwidth") is not None:
        value = raw["bandwidth"]
        try:
            values["bandwidth"] = bandwidth_bytes(value)
        except SettingsError:
            raise ScenarioError(
                f"{source}: field 'migration.bandwidth': {value!r} {BANDWIDTH_PROBLEM}"
            ) from None
    for key in ("per_cluster", "outbound_per_node"):
        if raw.get(key) is not None:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ScenarioError(f"{source}: field 'migration.{key}': {value!r} is not an integer >= 1")
            values[key] = value
    if raw.get("pending_timeout") is not None:
        values["pending_timeout"] = parse_duration(
            raw["pending_timeout"], source, "migration.pending_timeout"
        )
    return MigrationSettings.model_validate(values)


def _problem(err: SettingsError) -> str:
    return str(err).split(": ", 2)[-1]


def duration_seconds(text: str) -> float | None:
    """Seconds of a duration written as scenario files and flags write it (``30``, ``30s``, ``15m``, ``1h``,
    ``1d``, ``500ms``; signed, so a caller can say "-5s" is not above 0), or None when ``text`` is none."""
    match = _DURATION.match(text)
    return None if match is None else float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _duration(value: object) -> tuple[float, None] | tuple[None, str]:
    """(seconds, None) of a number or a duration such as ``15m``, ``30s``, ``1h``; else (None, why not)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds: float | None = float(value) if math.isfinite(value) else None
    else:
        seconds = duration_seconds(value) if isinstance(value, str) else None
    if seconds is None:
        return None, "is not a duration (e.g. 15m, 30s, 1h)"
    if seconds <= 0:
        return None, "must be longer than 0 (e.g. 15m, 30s, 1h)"
    return seconds, None


def parse_duration(value: object, source: str, field: str = "step") -> float:
    """Seconds from a number or a duration such as ``15m``, ``30s``, ``1h``; else a :class:`ScenarioError`
    naming ``source``, ``field`` and the value."""
    seconds, problem = _duration(value)
    if seconds is None:
        raise ScenarioError(f"{source}: field {field!r}: {value!r} {problem}")
    return seconds
