"""The Grafana dashboard (manifests/optional/dashboard) asks a real Prometheus what a real operator exports.

The dashboard is built as a user installs it (the install plus the component, by kustomize) and each of its
queries is run, with Grafana's variables filled in, against the test session's Prometheus while it scrapes a
running ``dynamem run`` that balances a paging VM: every query must parse, and every panel must show data.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dynamem.testing.prometheus import Prometheus

from .operator_harness import Stack, one_node, scenario_stack
from .test_manifests import MANIFESTS, OPERATOR_NAMESPACE, find, kubectl, operator_metric_names

_SAMPLE_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


def installed_dashboard(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the ConfigMap, the dashboard) from the install with the component, as a user's overlay builds them."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(MANIFESTS, tmp_path)],
                "components": [os.path.relpath(MANIFESTS / "optional" / "dashboard", tmp_path)],
            }
        )
    )
    docs = [doc for doc in yaml.safe_load_all(kubectl(["kustomize", str(tmp_path)])) if doc]
    config_map = find(docs, "ConfigMap", "dynamem-dashboard")
    return config_map, json.loads(config_map["data"]["dynamem.json"])


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target."""
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


@pytest.fixture
def stack(request: pytest.FixtureRequest, unique_name: Callable[[str], str]) -> Iterator[Stack]:
    yield from scenario_stack(
        request, one_node(unique_name("node"), "8Gi", {"db": {"startup": "1Gi", "maximum": "4Gi"}})
    )


def test_the_dashboard_is_a_labelled_config_map_of_exported_metrics(tmp_path: Path) -> None:
    config_map, dashboard = installed_dashboard(tmp_path)
    assert config_map["metadata"]["namespace"] == OPERATOR_NAMESPACE
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"  # what Grafana's sidecar looks for
    assert dashboard["uid"] == "dynamem" and len({p["id"] for p in dashboard["panels"]}) == len(
        dashboard["panels"]
    )
    exported = operator_metric_names()
    # a labelled counter has no sample before its first labels: its family name stands for it
    exported |= {f"{name}{suffix}" for name in exported for suffix in _SAMPLE_SUFFIXES}
    for title, expr in queries(dashboard):
        used = set(re.findall(r"\bdynamem_[a-z_]+", expr))
        assert used and used <= exported, f"{title}: {sorted(used - exported)} not exported by the operator"
    for panel in dashboard["panels"]:  # an override by name that names no series of its panel does nothing
        legends = {target.get("legendFormat") for target in panel["targets"]}
        for override in panel.get("fieldConfig", {}).get("overrides", []):
            if override["matcher"]["id"] == "byName":
                assert override["matcher"]["options"] in legends, (panel["title"], override["matcher"])


def test_every_panel_shows_what_a_running_operator_exports(
    stack: Stack, prometheus: Prometheus, tmp_path: Path
) -> None:
    _, dashboard = installed_dashboard(tmp_path)
    stack.set_demand(db=1.6)  # pages at 1Gi: the operator grows it, so the change counters move too
    operator = stack.start_operator()
    prometheus.add_target(f"127.0.0.1:{operator.metrics_port}")
    stack.reach({"db": 1.6})
    variables = {"$namespace": stack.namespace, "$vm": ".*", "$__rate_interval": "1m"}

    def filled(expr: str) -> str:
        for name, value in variables.items():
            expr = expr.replace(name, value)
        return expr

    prometheus.wait_for(filled('dynamem_vm_assigned_bytes{namespace="$namespace"}'), timeout=30)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = _LABEL_VALUES.match(variable["definition"])
        assert match is not None, variable
        shown = prometheus.wait_for(f"count by ({match['label']}) ({filled(match['selector'])})")
        assert any(sample.labels.get(match["label"]) for sample in shown), (variable["name"], shown)
    for title, expr in queries(dashboard):
        assert prometheus.wait_for(filled(expr), timeout=30), title  # parses, and has data
