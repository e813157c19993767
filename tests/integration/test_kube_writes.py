"""The operator's API calls against the real API server: applies on a stale view and on another manager's
field are refused as such; a fresh LIST drops what a watch missed (issue 10, items 2 and 3)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client

from dynamem.controller.contests import Written, fought_back, written_at
from dynamem.controller.loop import OperatorState, resync
from dynamem.controller.options import OperatorOptions
from dynamem.controller.snapshot import precondition_problem
from dynamem.controller.view import Kind
from dynamem.kube.api import FieldConflict, KubeApi, StaleObject
from dynamem.kube.objects import vm_view
from dynamem.policy import GiB as GI
from dynamem.testing.controlplane import ControlPlane, repo_root


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


def kubectl_apply(control_plane: ControlPlane, manifest: dict[str, Any], *flags: str) -> None:
    """``kubectl apply`` (client-side unless ``--server-side``) of one manifest, as a user or tool would."""
    subprocess.run(
        [
            shutil.which("kubectl") or "kubectl",
            "--kubeconfig",
            str(control_plane.kubeconfig_path),
            "apply",
            *flags,
            "-f",
            "-",
        ],
        input=yaml.safe_dump(manifest),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
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


def test_an_example_vm_applied_by_kubectl_is_held_unless_forced_as_the_kind_overlay_does(
    control_plane: ControlPlane, namespace: str, custom_objects: k8s_client.CustomObjectsApi
) -> None:
    """The kind guide creates manifests/examples with `kubectl apply --server-side`: kubectl then owns each
    VM's memory.guest as a declarative manager, so dynamem's default holds the VM (FieldOwnedByOtherManager)
    and the kind overlay runs dynamem with --force-ownership, which takes the field. Real kubectl, real API
    server; without the flag in the overlay the try-out never resizes a VM."""
    kind = yaml.safe_load_all(
        subprocess.run(
            [shutil.which("kubectl") or "kubectl", "kustomize", str(repo_root() / "manifests" / "kind")],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
    )
    (container,) = next(
        doc for doc in kind if doc and doc["kind"] == "Deployment" and doc["metadata"]["name"] == "dynamem"
    )["spec"]["template"]["spec"]["containers"]
    assert "--force-ownership" in container["args"]
    finance = yaml.safe_load_all((repo_root() / "manifests" / "examples" / "finance.yaml").read_text())
    vm = next(doc for doc in finance if doc and doc["kind"] == "VirtualMachine")
    vm["metadata"]["namespace"] = namespace
    kubectl_apply(control_plane, vm, "--server-side")
    name = vm["metadata"]["name"]
    body = custom_objects.get_namespaced_custom_object(
        "kubevirt.io", "v1", namespace, "virtualmachines", name
    )
    view = vm_view(body)
    assert view.applied_by_others() == ("kubectl",)
    assert precondition_problem(view, None, view.applied_by_others()) == (
        "memory.guest is owned by field manager kubectl: not taken (--force-ownership)"
    )
    version = body["metadata"]["resourceVersion"]

    async def resize(api: KubeApi) -> None:
        with pytest.raises(FieldConflict):
            await api.apply_vm_memory(namespace, name, "2Gi", None, resource_version=version)
        await api.apply_vm_memory(namespace, name, "2Gi", None, resource_version=version, force=True)

    run(control_plane, resize)
    assert guest(custom_objects, namespace, name) == "2Gi"


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


def test_a_tool_that_applies_memory_guest_back_is_seen_fighting(
    control_plane: ControlPlane, namespace: str, custom_objects: k8s_client.CustomObjectsApi
) -> None:
    """A GitOps tool applies memory.guest; dynamem takes it (--force-ownership) and the tool applies its own
    value again: the view after the tool's apply shows the fight, with the API server's own managedFields
    (owners, times); the views before it (the one dynamem decided on, dynamem's own) show none."""

    def tool_applies(size: str) -> dict[str, Any]:
        manifest = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": "vm", "namespace": namespace},
            "spec": {"template": {"spec": {"domain": {"memory": {"guest": size}}}}},
        }
        return custom_objects.patch_namespaced_custom_object(  # type: ignore[no-any-return]
            "kubevirt.io",
            "v1",
            namespace,
            "virtualmachines",
            "vm",
            manifest,
            field_manager="argocd-controller",
            force=True,
            _content_type="application/apply-patch+yaml",
        )

    make_vm(custom_objects, namespace, "vm")
    decided_on = tool_applies("1Gi")

    async def take(api: KubeApi) -> Written:
        version = decided_on["metadata"]["resourceVersion"]
        answer = await api.apply_vm_memory(namespace, "vm", "2Gi", None, resource_version=version, force=True)
        return Written(2 * GI, version, written_at(answer, "dynamem"))

    written = run(control_plane, take)
    assert written.at is not None
    ours = vm_view(
        custom_objects.get_namespaced_custom_object("kubevirt.io", "v1", namespace, "virtualmachines", "vm")
    )
    assert ours.guest == 2 * GI
    assert fought_back(vm_view(decided_on), written) == ()  # the view dynamem decided on: before its write
    assert fought_back(ours, written) == ()
    back = vm_view(tool_applies("1Gi"))
    assert back.guest == GI
    assert fought_back(back, written) == ("argocd-controller",)


def test_a_client_side_apply_that_sets_memory_guest_is_a_declarative_owner(
    control_plane: ControlPlane, namespace: str, custom_objects: k8s_client.CustomObjectsApi
) -> None:
    """Argo CD's default sync is a client-side apply under its own manager name (an Update, not an Apply):
    what tells it from a one-off write is the last-applied-configuration annotation it leaves, naming
    memory.guest. Real kubectl, real API server."""
    manifest = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "vm", "namespace": namespace},
        "spec": {
            "runStrategy": "Halted",
            "template": {"spec": {"domain": {"memory": {"guest": "1Gi"}, "devices": {}}}},
        },
    }
    kubectl_apply(control_plane, manifest, "--field-manager", "argocd-controller")
    body = custom_objects.get_namespaced_custom_object(
        "kubevirt.io", "v1", namespace, "virtualmachines", "vm"
    )
    view = vm_view(body)
    assert view.guest_owners == (("argocd-controller", "Update"),)
    assert view.guest_declared
    assert view.applied_by_others() == ("argocd-controller",)
    # the same write without the annotation (kubectl create under that name) is a one-off: taken over
    custom_objects.delete_namespaced_custom_object("kubevirt.io", "v1", namespace, "virtualmachines", "vm")
    body = custom_objects.create_namespaced_custom_object(
        "kubevirt.io", "v1", namespace, "virtualmachines", manifest, field_manager="argocd-controller"
    )
    assert vm_view(body).applied_by_others() == ()


def test_a_revert_carries_its_hold_and_the_next_apply_removes_it(
    control_plane: ControlPlane, namespace: str, custom_objects: k8s_client.CustomObjectsApi
) -> None:
    """On the real API server: a change's placement, then its revert's hold, each in the same server-side
    apply as memory.guest, each gone with dynamem's next apply that leaves it out (its manager no longer
    applies it), and read back as the hold a new leader keeps (:meth:`Hold.from_annotation`)."""
    from dynamem.controller.snapshot import Hold
    from dynamem.kube.objects import vm_view

    make_vm(custom_objects, namespace, "vm")
    hold = Hold(reason="2Gi not carried out within 360s", vmi_uid="uid-1", since="2026-11-30T06:00:00Z")

    def annotations() -> dict[str, str]:
        vm = custom_objects.get_namespaced_custom_object(
            "kubevirt.io", "v1", namespace, "virtualmachines", "vm"
        )
        return dict(vm["metadata"].get("annotations") or {})

    async def body(api: KubeApi) -> dict[str, Any]:
        await api.apply_vm_memory(
            namespace, "vm", "2Gi", None, resource_version=None, force=True, placement="p"
        )
        assert annotations() == {"dynamem.io/placement": "p"}
        note = json.dumps(hold.to_status())
        answer = await api.apply_vm_memory(namespace, "vm", "1Gi", None, resource_version=None, hold=note)
        assert annotations() == {"dynamem.io/hold": note}
        await api.apply_vm_memory(namespace, "vm", "3Gi", None, resource_version=None)
        assert annotations() == {}
        return dict(answer)

    answer = run(control_plane, body)
    assert Hold.from_annotation(vm_view(answer).hold) == hold
