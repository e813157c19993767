"""The operator's API calls against the real API server: applies on a stale view and on another manager's
field are refused as such; a fresh LIST drops what a watch missed (issue 10, items 2 and 3)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from kubernetes import client as k8s_client

from dynamem.controller.loop import OperatorState, resync
from dynamem.controller.options import OperatorOptions
from dynamem.controller.view import Kind
from dynamem.kube.api import FieldConflict, KubeApi, StaleObject
from dynamem.testing.controlplane import ControlPlane


def run(control_plane: ControlPlane, body: Callable[[KubeApi], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        api = await KubeApi.connect(str(control_plane.kubeconfig_path))
        try:
            return await body(api)
        finally:
            await api.close()

    return asyncio.run(main())


def make_vm(custom: k8s_client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    body = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "runStrategy": "Halted",
            "template": {"spec": {"domain": {"memory": {"guest": "1Gi"}, "devices": {}}}},
        },
    }
    return custom.create_namespaced_custom_object(  # type: ignore[no-any-return]
        "kubevirt.io", "v1", namespace, "virtualmachines", body, field_manager="kubectl-create"
    )


def guest(custom: k8s_client.CustomObjectsApi, namespace: str, name: str) -> str:
    vm = custom.get_namespaced_custom_object("kubevirt.io", "v1", namespace, "virtualmachines", name)
    return str(vm["spec"]["template"]["spec"]["domain"]["memory"]["guest"])


def test_an_apply_on_a_stale_resource_version_is_refused(
    control_plane: ControlPlane, namespace: str, custom_objects: k8s_client.CustomObjectsApi
) -> None:
    created = make_vm(custom_objects, namespace, "vm")
    seen = created["metadata"]["resourceVersion"]
    custom_objects.patch_namespaced_custom_object(
        "kubevirt.io", "v1", namespace, "virtualmachines", "vm", {"metadata": {"labels": {"touched": "yes"}}}
    )

    async def body(api: KubeApi) -> None:
        with pytest.raises(StaleObject):
            await api.apply_vm_memory(namespace, "vm", "2Gi", None, resource_version=seen, force=True)

    run(control_plane, body)
    assert guest(custom_objects, namespace, "vm") == "1Gi"


def test_a_field_applied_by_another_manager_is_a_conflict_unless_forced(
    control_plane: ControlPlane, namespace: str, custom_objects: k8s_client.CustomObjectsApi
) -> None:
    make_vm(custom_objects, namespace, "vm")
    applied = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "vm", "namespace": namespace},
        "spec": {"template": {"spec": {"domain": {"memory": {"guest": "3Gi"}}}}},
    }
    gitops = custom_objects.patch_namespaced_custom_object(
        "kubevirt.io",
        "v1",
        namespace,
        "virtualmachines",
        "vm",
        applied,
        field_manager="gitops",
        force=True,
        _content_type="application/apply-patch+yaml",
    )
    version = gitops["metadata"]["resourceVersion"]

    async def body(api: KubeApi) -> None:
        with pytest.raises(FieldConflict) as raised:
            await api.apply_vm_memory(namespace, "vm", "2Gi", None, resource_version=version)
        assert "gitops" in raised.value.managers
        await api.apply_vm_memory(namespace, "vm", "2Gi", None, resource_version=version, force=True)

    run(control_plane, body)
    assert guest(custom_objects, namespace, "vm") == "2Gi"


def test_memory_guest_of_a_created_vm_needs_taking_over(
    control_plane: ControlPlane, namespace: str, custom_objects: k8s_client.CustomObjectsApi
) -> None:
    """Why dynamem forces over imperative owners: even the creator's ownership is a conflict to apply."""
    created = make_vm(custom_objects, namespace, "vm")
    version = created["metadata"]["resourceVersion"]

    async def body(api: KubeApi) -> None:
        with pytest.raises(FieldConflict) as raised:
            await api.apply_vm_memory(namespace, "vm", "2Gi", None, resource_version=version)
        assert raised.value.managers == ("kubectl-create",)

    run(control_plane, body)


def test_a_fresh_list_drops_a_ghost_the_watch_never_reported(
    control_plane: ControlPlane, namespace: str, custom_objects: k8s_client.CustomObjectsApi
) -> None:
    make_vm(custom_objects, namespace, "kept")
    gone = make_vm(custom_objects, namespace, "gone")
    state = OperatorState(OperatorOptions(namespaces=(namespace,), all_namespaces=False), identity="test")

    async def body(api: KubeApi) -> set[str]:
        await resync(state, api)
        assert {vm.key.name for vm in state.view.stores[Kind.VM].values()} == {"kept", "gone"}
        custom_objects.delete_namespaced_custom_object(
            "kubevirt.io", "v1", namespace, "virtualmachines", "gone"
        )
        state.view.apply_event(Kind.VM, None, gone)  # a re-list that still carried it, then no DELETED
        kinds = state.view.kinds_to_list()
        assert kinds == {Kind.VM}  # the kind kopf re-listed, not all six
        await resync(state, api, kinds)
        return {vm.key.name for vm in state.view.stores[Kind.VM].values()}

    assert run(control_plane, body) == {"kept"}
