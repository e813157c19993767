"""Where a VM's volumes let its launcher go (:mod:`dynamem.kube.volumes`), case by case against the
kube-scheduler v1.34's ``VolumeBinding`` (``CheckNodeAffinity``) and ``VolumeZone`` filters."""

from __future__ import annotations

from typing import Any

import pytest

from dynamem.kube.objects import ObjectKey, vmi_claims
from dynamem.kube.volumes import claim_view, volume_allows, volume_view, volumes_allow

ZONE, REGION = "topology.kubernetes.io/zone", "topology.kubernetes.io/region"
BETA_ZONE = "failure-domain.beta.kubernetes.io/zone"


def pv(terms: list[dict[str, Any]] | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany"]}
    if terms is not None:
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": terms}}
    return {"metadata": {"name": "pv-1", "labels": labels or {}}, "spec": spec}


def expression(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"matchExpressions": [{"key": key, "operator": operator, "values": list(values)}]}


@pytest.mark.parametrize(
    ("volume", "labels", "allowed"),
    [
        (pv(), {ZONE: "a"}, True),  # no affinity, no zone label: anywhere
        (pv([expression(ZONE, "In", "a")]), {ZONE: "a"}, True),
        (pv([expression(ZONE, "In", "a")]), {ZONE: "b"}, False),
        (pv([expression(ZONE, "In", "a")]), {}, False),
        (pv([expression(ZONE, "In", "a"), expression(ZONE, "In", "b")]), {ZONE: "b"}, True),  # terms ORed
        (pv([]), {ZONE: "a"}, False),  # required with no term: nothing matches
        # CheckNodeAffinity matches a node built from its labels alone: no name, so no fields, and
        # nodeSelectorTerm.match skips matchFields when there are none (nodeaffinity.go): any node
        (pv([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]), {}, True),
        (
            pv(
                [
                    {
                        **expression(ZONE, "In", "a"),
                        "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}],
                    }
                ]
            ),
            {ZONE: "b"},
            False,  # ... its expressions still count
        ),
        # a field requirement the scheduler cannot parse fails the term all the same
        (pv([{"matchFields": [{"key": "metadata.uid", "operator": "In", "values": ["n1"]}]}]), {}, False),
        (pv(labels={ZONE: "a"}), {ZONE: "a"}, True),
        (pv(labels={ZONE: "a"}), {ZONE: "b"}, False),
        (pv(labels={ZONE: "a__b"}), {ZONE: "b"}, True),  # a multi-zone volume
        (pv(labels={ZONE: "a"}), {}, True),  # a node with no zone or region label takes any volume
        (pv(labels={ZONE: "a"}), {REGION: "r"}, False),  # ... one with any of them must match each
        (pv(labels={BETA_ZONE: "a"}), {ZONE: "a"}, True),  # the beta label matched against the GA one
        (pv(labels={ZONE: "a__"}), {ZONE: "b"}, True),  # an empty zone: the label is ignored
    ],
)
def test_a_volume_allows_the_nodes_its_affinity_and_zone_allow(
    volume: dict[str, Any], labels: dict[str, str], allowed: bool
) -> None:
    assert volume_allows(volume_view(volume), labels) is allowed


def test_every_volume_of_a_pod_must_allow_the_node() -> None:
    a = volume_view(pv(labels={ZONE: "a"}))
    b = volume_view(pv(labels={ZONE: "b"}))
    assert volumes_allow([a], {ZONE: "a"}) and not volumes_allow([a, b], {ZONE: "a"})
    assert volumes_allow([], {ZONE: "a"})


def test_the_claims_a_launcher_mounts() -> None:
    spec = {
        "volumes": [
            {"name": "root", "dataVolume": {"name": "root-dv"}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "extra", "persistentVolumeClaim": {"claimName": "hot", "hotpluggable": True}},
            {"name": "scratch", "ephemeral": {"persistentVolumeClaim": {"claimName": "scratch"}}},
            {"name": "init", "cloudInitNoCloud": {"userData": "#cloud-config"}},
        ]
    }
    assert vmi_claims(spec) == ("data", "root-dv", "scratch")
    bound = {"metadata": {"name": "data", "namespace": "ns"}, "spec": {"volumeName": "pv-1"}}
    assert claim_view(bound).volume == "pv-1" and claim_view(bound).key == ObjectKey("ns", "data")
    assert claim_view({"metadata": {"name": "new", "namespace": "ns"}, "spec": {}}).volume is None
