"""Fixtures for tests against the real local control plane (etcd + kube-apiserver) and Prometheus.

Every test under tests/integration is marked `integration` (see `pytest_collection_modifyitems`).

Session fixtures (started once, shared by all tests; never skipped: missing binaries FAIL the test with the
message saying to run `make controlplane` / `make prometheus`):
    control_plane: ControlPlane
        A running server with our CRDs (crds/*.yaml) and KubeVirt's installed. `.server_url`,
        `.kubeconfig_path`, `.api_client(user=None, groups=())`, `.service_account_client(ns, name)`,
        `.create_node(name, memory=, cpu=, labels=)`, `.http` (httpx as admin). Nodes persist for the whole
        session: give them unique names (`unique_name`).
    prometheus: Prometheus
        No targets at first: `.set_targets([...])`, `.wait_for(promql)`, `.query(promql)`. A test that sets
        targets puts them back (`set_targets([])`) when done.

Function fixtures:
    namespace: str                a fresh namespace (`t-<test name>-<random>`) for this test; namespaces never
                                  finish deleting without a controller-manager, so every test gets its own.
    api_client: ApiClient         admin (system:masters) `kubernetes.client.ApiClient`, closed after the test.
    core_v1: CoreV1Api            on that client.
    custom_objects: CustomObjectsApi   on that client (VirtualMachines, VirtualMachineMemories, ...).
    unique_name: Callable[[str], str]  `unique_name("node")` -> "node-1a2b3c", for cluster-scoped objects.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s_client

from dynamem.testing.controlplane import ControlPlane
from dynamem.testing.prometheus import Prometheus

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test in this directory `integration` (the hook sees the whole session's items)."""
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """etcd + kube-apiserver with all CRDs, once per session. Fails (never skips) if binaries are missing."""
    with ControlPlane() as cp:
        yield cp


@pytest.fixture(scope="session")
def prometheus() -> Iterator[Prometheus]:
    """A Prometheus server (1 s scrape interval, no targets yet), once per session."""
    with Prometheus() as prom:
        yield prom


@pytest.fixture
def api_client(control_plane: ControlPlane) -> Iterator[k8s_client.ApiClient]:
    """An admin ApiClient for this test."""
    api = control_plane.api_client()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def core_v1(api_client: k8s_client.ApiClient) -> k8s_client.CoreV1Api:
    return k8s_client.CoreV1Api(api_client)


@pytest.fixture
def custom_objects(api_client: k8s_client.ApiClient) -> k8s_client.CustomObjectsApi:
    return k8s_client.CustomObjectsApi(api_client)


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Make DNS-1123 names that do not collide across tests: `unique_name("node") -> "node-1a2b3c"`."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:6]}"

    return make


@pytest.fixture
def namespace(request: pytest.FixtureRequest, core_v1: k8s_client.CoreV1Api) -> str:
    """A fresh namespace for this test (left behind: without a controller-manager it would never go away)."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{base}-{uuid.uuid4().hex[:6]}"
    core_v1.create_namespace(k8s_client.V1Namespace(metadata=k8s_client.V1ObjectMeta(name=name)))
    return name
