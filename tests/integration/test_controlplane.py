"""The local control plane is real: version, KubeVirt's schema, RBAC, nodes, and Prometheus scraping."""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
import yaml
from kubernetes import client as k8s_client
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from dynamem.testing import controlplane
from dynamem.testing.controlplane import ControlPlane, ControlPlaneError, free_port
from dynamem.testing.prometheus import Prometheus

KUBEVIRT = {"group": "kubevirt.io", "version": "v1", "plural": "virtualmachines"}


def make_vm(name: str, guest: str = "2Gi") -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"app": "dynamem-test"}},
        "spec": {
            "runStrategy": "Halted",
            "template": {
                "metadata": {"labels": {"kubevirt.io/vm": name}},
                "spec": {
                    "domain": {
                        "cpu": {"cores": 2},
                        "memory": {"guest": guest, "maxGuest": "8Gi"},
                        "resources": {"requests": {"memory": guest}},
                        "devices": {
                            "disks": [{"name": "rootdisk", "disk": {"bus": "virtio"}}],
                            "interfaces": [{"name": "default", "masquerade": {}}],
                        },
                    },
                    "networks": [{"name": "default", "pod": {}}],
                    "volumes": [
                        {"name": "rootdisk", "containerDisk": {"image": "quay.io/containerdisks/fedora:41"}}
                    ],
                },
            },
        },
    }


def test_version_is_the_pinned_release(control_plane: ControlPlane, api_client: k8s_client.ApiClient) -> None:
    raw = control_plane.http.get("/version").json()
    assert (raw["gitVersion"], raw["major"], raw["minor"]) == (controlplane.K8S_VERSION, "1", "34")
    assert k8s_client.VersionApi(api_client).get_code().git_version == "v1.34.4"


def test_harness_versions_match_the_build_script() -> None:
    script = (controlplane.repo_root() / "tools" / "build-controlplane.sh").read_text()
    pinned = dict(
        re.findall(r"^(K8S_VERSION|ETCD_VERSION|KUBEVIRT_VERSION|KWOK_VERSION)=(\S+)$", script, re.MULTILINE)
    )
    assert pinned == {
        "K8S_VERSION": controlplane.K8S_VERSION,
        "ETCD_VERSION": controlplane.ETCD_VERSION,
        "KUBEVIRT_VERSION": controlplane.KUBEVIRT_VERSION,
        "KWOK_VERSION": controlplane.KWOK_VERSION,
    }


def test_repository_crds_are_established(control_plane: ControlPlane) -> None:
    names = [
        doc["metadata"]["name"]
        for path in sorted((controlplane.repo_root() / "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"
    ]
    names += ["virtualmachines.kubevirt.io", "virtualmachineinstances.kubevirt.io"]
    names += ["virtualmachineinstancemigrations.kubevirt.io"]
    control_plane.wait_for_crds(names, timeout=1.0)


def test_kubevirt_schema_accepts_a_virtual_machine(
    custom_objects: k8s_client.CustomObjectsApi, namespace: str
) -> None:
    body = make_vm("vm-a")
    created = custom_objects.create_namespaced_custom_object(**KUBEVIRT, namespace=namespace, body=body)
    assert created["spec"]["template"]["spec"]["domain"]["memory"]["guest"] == "2Gi"
    stored = custom_objects.get_namespaced_custom_object(**KUBEVIRT, namespace=namespace, name="vm-a")
    assert stored["spec"]["runStrategy"] == "Halted"


def _set(obj: dict[str, Any], dotted: str, value: object) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    *parents, last = dotted.split(".")
    target = obj
    for key in parents:
        target = target[key]
    target[last] = value
    return obj


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("spec.runStrategy", 42),
        ("spec.template.spec.domain.devices.disks", "not-a-list"),
        ("spec.template.spec.domain.cpu.cores", "two"),
    ],
    ids=["runStrategy-int", "disks-string", "cores-string"],
)
def test_kubevirt_schema_rejects_a_malformed_virtual_machine(
    custom_objects: k8s_client.CustomObjectsApi, namespace: str, field: str, value: object
) -> None:
    body = _set(make_vm("vm-bad"), field, value)
    with pytest.raises(k8s_client.ApiException) as caught:
        custom_objects.create_namespaced_custom_object(**KUBEVIRT, namespace=namespace, body=body)
    assert caught.value.status == 422
    assert field in str(caught.value.body)


def test_rbac_denies_a_service_account_until_it_is_bound(
    control_plane: ControlPlane, api_client: k8s_client.ApiClient, namespace: str
) -> None:
    sa_api = control_plane.service_account_client(namespace, "dynamem")
    sa_objects = k8s_client.CustomObjectsApi(sa_api)
    with pytest.raises(k8s_client.ApiException) as caught:
        sa_objects.list_namespaced_custom_object(**KUBEVIRT, namespace=namespace)
    assert caught.value.status == 403
    assert f"system:serviceaccount:{namespace}:dynamem" in str(caught.value.body)

    rbac = k8s_client.RbacAuthorizationV1Api(api_client)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "vm-reader"},
            "rules": [
                {"apiGroups": ["kubevirt.io"], "resources": ["virtualmachines"], "verbs": ["get", "list"]}
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "vm-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "vm-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "dynamem", "namespace": namespace}],
        },
    )
    listed = _eventually(lambda: sa_objects.list_namespaced_custom_object(**KUBEVIRT, namespace=namespace))
    expected = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineList", "items": [], "metadata": ANY}
    assert listed == expected
    sa_api.close()


def test_a_certificate_user_gets_what_its_group_is_bound_to(
    control_plane: ControlPlane, api_client: k8s_client.ApiClient, unique_name: Callable[[str], str]
) -> None:
    group = unique_name("node-readers")
    with control_plane.api_client(user="alice", groups=[group]) as alice:
        with pytest.raises(k8s_client.ApiException) as caught:
            k8s_client.CoreV1Api(alice).list_node()
        assert caught.value.status == 403
        # Our own ClusterRole: the built-in "view" is aggregated by the controller-manager, absent here.
        rbac = k8s_client.RbacAuthorizationV1Api(api_client)
        rule = {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}
        rbac.create_cluster_role({"metadata": {"name": group}, "rules": [rule]})
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": group},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": group},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}],
            }
        )
        _eventually(lambda: k8s_client.CoreV1Api(alice).list_node())


def _eventually(call: Callable[[], object], timeout: float = 10.0) -> object:
    """Retry `call` while it is denied: the RBAC authorizer reads bindings through an informer cache."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except k8s_client.ApiException as exc:
            if exc.status != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_nodes_have_the_given_capacity_and_are_ready(
    control_plane: ControlPlane, core_v1: k8s_client.CoreV1Api, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("node")
    control_plane.create_node(
        name, memory="64Gi", cpu="16", labels={"topology.kubernetes.io/zone": "a"}, allocatable_memory="62Gi"
    )
    node = core_v1.read_node(name)
    assert node.status.capacity == {"cpu": "16", "memory": "64Gi", "pods": "110"}
    assert node.status.allocatable["memory"] == "62Gi"
    assert [(c.type, c.status) for c in node.status.conditions] == [("Ready", "True")]
    assert node.metadata.labels["topology.kubernetes.io/zone"] == "a"
    assert node.metadata.labels["kubernetes.io/hostname"] == name


def test_prometheus_scrapes_an_exporter(prometheus: Prometheus) -> None:
    registry = CollectorRegistry()
    gauge = Gauge("dynamem_itest_value", "A value the test sets.", ["vm"], registry=registry)
    gauge.labels(vm="vm-a").set(42)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        prometheus.set_targets([f"127.0.0.1:{port}"])
        samples = prometheus.wait_for('dynamem_itest_value{vm="vm-a"}', timeout=20)
        got = [(s.labels["vm"], s.labels["job"], s.value) for s in samples]
        assert got == [("vm-a", "dynamem-test", 42.0)]
    finally:
        prometheus.set_targets([])
        server.shutdown()
        thread.join(5)


def test_missing_binaries_fail_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYNAMEM_CONTROLPLANE_BINARIES", str(tmp_path))
    with pytest.raises(ControlPlaneError, match=r"kube-apiserver is missing; run `make controlplane`"):
        ControlPlane()
