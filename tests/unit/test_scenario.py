"""Scenario files: the seed's workday loads to exact bytes; every bad input names file, VM and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynamem.policy import GiB, MiB
from dynamem.sim.scenario import ScenarioError, load_scenario, parse_scenario

GOOD = """\
step: 15m
nodes:
  - {name: host, memory: 8Gi}
vms:
  - {name: a, node: host, startup: 1Gi, maximum: 4Gi}
  - {name: b, node: host, startup: 1Gi, maximum: 4Gi, minimum: 512Mi, buffer: 30, priority: high}
demand:
  a: [0.5Gi, 2.4Gi]
  b: [null, 0]
"""


def test_workday_loads_exactly(workday_path: str) -> None:
    scenario = load_scenario(workday_path)
    assert scenario.step_seconds == 900
    assert [(n.name, n.memory) for n in scenario.nodes] == [("host", 8 * GiB)]
    assert [v.name for v in scenario.vms] == ["finance", "sales", "engineering", "service"]
    assert scenario.steps == 3
    assert scenario.demand["service"] == (None, None, 512 * MiB)
    assert scenario.demand["finance"][1] == 2576980378  # 2.4Gi = 2576980377.6 bytes, rounded up


def test_optional_settings(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(GOOD)
    b = load_scenario(path).vms[1].settings
    assert (b.minimum, b.buffer, b.priority) == (512 * MiB, 30, 75)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        pytest.param(
            "node: host, startup: 1Gi, maximum: 4Gi}\n  - {name: b",
            "node: hots, startup: 1Gi, maximum: 4Gi}\n  - {name: b",
            "vm 'a': field 'node': 'hots' is not a node of this scenario",
            id="unknown-node",
        ),
        pytest.param("  b: [null, 0]\n", "", "vm 'b': field 'demand': missing", id="vm-without-demand"),
        pytest.param(
            "a: [0.5Gi, 2.4Gi]",
            "a: [0.5Gi, 2.4Gx]",
            "vm 'a': field 'demand[1]': '2.4Gx' is not a quantity (e.g. 1Gi, 512Mi)",
            id="bad-demand",
        ),
        pytest.param(
            "a, node: host, startup: 1Gi",
            "a, node: host, startup: 1Gx",
            "vm 'a': field 'startup': '1Gx' is not a quantity (e.g. 1Gi, 512Mi)",
            id="malformed-quantity",
        ),
        pytest.param(
            "buffer: 30", "buffer: 300", "vm 'b': field 'buffer': 300 is out of range 5..95", id="settings"
        ),
        pytest.param(
            "minimum: 512Mi", "minimum: 2Gi", "vm 'b': field 'minimum': '2Gi' is above startup 1Gi", id="min"
        ),
        pytest.param(
            "memory: 8Gi",
            "memory: lots",
            "node 'host': field 'memory': 'lots' is not a quantity (e.g. 1Gi, 512Mi)",
            id="node-memory",
        ),
        pytest.param(
            "step: 15m", "step: soon", "field 'step': 'soon' is not a duration (e.g. 15m, 30s, 1h)", id="step"
        ),
        # a duration, but none a step can be: said so, not "not a duration"
        pytest.param("step: 15m", "step: 0", "field 'step': 0 must be longer than 0", id="step-zero"),
        pytest.param("step: 15m", "step: -15m", "field 'step': '-15m' must be longer than 0", id="step-neg"),
        pytest.param(
            "b: [null, 0]",
            "b: [null]",
            "field 'demand': one value per step for every VM, but vm 'a' has 2, vm 'b' has 1",
            id="length",
        ),
        pytest.param(
            "  b: [null, 0]\n",
            "  b: [null, 0]\n  c: [1Gi, 1Gi]\n",
            "vm 'c': field 'demand': not a VM of this scenario",
            id="demand-for-unknown-vm",
        ),
        pytest.param(
            "maximum: 4Gi}\n  - {name: b",
            "maximum: 4Gi, colour: red}\n  - {name: b",
            "vm 'a': field 'colour': unknown",
            id="unknown-field",
        ),
        pytest.param("step: 15m\n", "", "field 'step': missing", id="missing-step"),
        pytest.param(
            "  b: [null, 0]\n",
            "  b: [null, 0]\n  a: [3Gi, 3Gi]\n",
            "not valid YAML at line 10: key 'a' given twice in one mapping",
            id="demand-given-twice",
        ),
        pytest.param(
            "buffer: 30", "buffer: 30, buffer: 10", "key 'buffer' given twice in one mapping", id="key-twice"
        ),
        pytest.param(
            "{name: host, memory: 8Gi}",
            "{name: host, memory: 8Gi, reserve: 2Gi}",
            "node 'host': field 'reserve': unknown (expected name, memory)",
            id="unknown-node-field",
        ),
        pytest.param(
            "node: host, startup: 1Gi, maximum: 4Gi}\n  - {name: b",
            "node: [host], startup: 1Gi, maximum: 4Gi}\n  - {name: b",
            "vm 'a': field 'node': ['host'] is not a node of this scenario",
            id="node-a-list",
        ),
        pytest.param(
            "{name: host, memory: 8Gi}", "host", "node #1: 'host' is not a mapping of name, memory", id="row"
        ),
        pytest.param(
            "{name: a, node: host", "{name: 1, node: host", "vm #1: field 'name': 1 is not a name", id="name"
        ),
        pytest.param(
            "maximum: 4Gi}\n  - {name: b",
            "maximum: 4Gi, hugepage: 3Mi}\n  - {name: b",
            "vm 'a': field 'hugepage': '3Mi' is not a page size (expected 2Mi or 1Gi)",
            id="hugepage-size",
        ),
        pytest.param("nodes:\n", "nodes: [\n", "not valid YAML at line", id="yaml"),
    ],
)
def test_bad_input_names_file_vm_and_field(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ")
    assert message in text
    assert "\n" not in text


def test_a_file_that_is_not_utf8_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(GOOD.replace("step: 15m", "description: café\nstep: 15m").encode("latin-1"))
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value).startswith(f"{path}: not UTF-8 text (byte 0xe9 at offset")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"missing\.yaml: cannot read"):
        load_scenario(tmp_path / "missing.yaml")


def test_overhead_and_migration_keys(tmp_path: Path) -> None:
    path = tmp_path / "kv.yaml"
    path.write_text(
        GOOD + "overhead: 200Mi\n"
        "migration: {bandwidth: 500Mi/s, per_cluster: 3, outbound_per_node: 1, pending_timeout: 2m}\n"
        "interval: 30s\n"
    )
    scenario = load_scenario(path)
    assert scenario.overhead == 200 * MiB
    assert scenario.interval_seconds == 30.0
    m = scenario.migration
    assert (m.bandwidth, m.per_cluster, m.outbound_per_node, m.pending_timeout) == (500 * MiB, 3, 1, 120.0)


def test_kubevirt_defaults(workday_path: str) -> None:
    # Old files keep working: KubeVirt's limits (5 per cluster, 2 out of a node, 5m pending), a 10 GbE link.
    scenario = load_scenario(workday_path)
    m = scenario.migration
    assert scenario.overhead == 0
    assert scenario.interval_seconds is None  # the policy decides once a step
    assert (m.bandwidth, m.per_cluster, m.outbound_per_node, m.pending_timeout) == (GiB, 5, 2, 300.0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param("overhead: lots\n", "field 'overhead': 'lots' is not a quantity", id="overhead"),
        pytest.param(
            "overhead: -1Gi\n", "field 'overhead': '-1Gi' must be a positive quantity", id="overhead<0"
        ),
        pytest.param("migration: fast\n", "field 'migration': 'fast' is not a mapping", id="migration"),
        pytest.param(
            "migration: {bandwidth: 1Gbps}\n",
            "field 'migration.bandwidth': '1Gbps' is not a positive",
            id="bw",
        ),
        pytest.param(
            "migration: {bandwidth: 0}\n", "field 'migration.bandwidth': 0 is not a positive", id="bw0"
        ),
        pytest.param(
            "migration: {per_cluster: 0}\n",
            "field 'migration.per_cluster': 0 is not an integer >= 1",
            id="pc",
        ),
        pytest.param(
            "migration: {outbound_per_node: two}\n",
            "field 'migration.outbound_per_node': 'two' is not an integer >= 1",
            id="opn",
        ),
        pytest.param(
            "migration: {pending_timeout: never}\n",
            "field 'migration.pending_timeout': 'never' is not a duration",
            id="timeout",
        ),
        pytest.param("migration: {speed: 1Gi}\n", "field 'migration.speed': unknown", id="unknown"),
        pytest.param("interval: soon\n", "field 'interval': 'soon' is not a duration", id="interval"),
        pytest.param(
            "interval: 0.5s\n",
            "field 'interval': 0.5s is not between 1s and the step",
            id="interval<1s",
        ),
        pytest.param(
            "interval: 1h\n",
            "field 'interval': 3600s is not between 1s and the step",
            id="interval>step",
        ),
    ],
)
def test_bad_kubevirt_keys_name_the_field(tmp_path: Path, extra: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD + extra)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_the_vm_whose_demand_has_a_step_too_few_is_the_one_named() -> None:
    """Of three VMs, the first has one value too few: it is named, not the two that agree."""
    data = {
        "step": "15m",
        "nodes": [{"name": "host", "memory": "8Gi"}],
        "vms": [{"name": n, "node": "host", "startup": "1Gi", "maximum": "4Gi"} for n in ("a", "b", "c")],
        "demand": {"a": ["1Gi", "1Gi"], "b": ["1Gi"] * 3, "c": ["1Gi"] * 3},
    }
    with pytest.raises(
        ScenarioError, match=r"^<scenario>: vm 'a': field 'demand': 2 values, the other VMs have 3$"
    ):
        parse_scenario(data)
