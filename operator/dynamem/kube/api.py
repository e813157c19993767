"""The few Kubernetes API calls dynamem makes, on the asyncio client of the official ``kubernetes`` package.

Writes to a VirtualMachine are server-side apply with field manager ``dynamem`` and only the memory fields in
the body, so a GitOps tool that owns the rest of the VM never fights over it. VirtualMachineMemory status goes
through the status subresource; Events are ``events.k8s.io/v1`` objects that ``kubectl describe`` shows.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Mapping
from typing import Any, cast

from kubernetes.aio import client, config
from kubernetes.aio.client.exceptions import ApiException

FIELD_MANAGER = "dynamem"
FIELD_MANAGER_STOPPED = "dynamem-stopped"  # memory.guest and maxGuest of stopped VMs
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"

KUBEVIRT = ("kubevirt.io", "v1")
DYNAMEM = ("dynamem.io", "v1alpha1")
VMM_PLURAL = "virtualmachinememories"

__all__ = [
    "DYNAMEM",
    "FIELD_MANAGER",
    "FIELD_MANAGER_STOPPED",
    "KUBEVIRT",
    "VMM_PLURAL",
    "ApiException",
    "KubeApi",
    "now_rfc3339",
]


def now_rfc3339(now: float | None = None) -> str:
    moment = dt.datetime.now(dt.UTC) if now is None else dt.datetime.fromtimestamp(now, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class KubeApi:
    """A thin async facade over the API calls dynamem makes. One instance per process."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> KubeApi:
        """In-cluster credentials in a pod, else the kubeconfig (``$KUBECONFIG`` or the default)."""
        configuration = client.Configuration()
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            await config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, client_configuration=configuration
            )
        return cls(client.ApiClient(configuration))

    async def close(self) -> None:
        await self.api_client.close()  # type: ignore[no-untyped-call]

    async def apply_vm_memory(
        self, namespace: str, name: str, guest: str, max_guest: str | None, *, dry_run: bool = False
    ) -> Mapping[str, Any]:
        """Server-side apply of ``spec.template.spec.domain.memory`` on a VirtualMachine.

        A running VM gets ``guest`` only, as field manager ``dynamem``; a stopped one ``guest`` and
        ``maxGuest``, as ``dynamem-stopped``. Two managers because server-side apply removes a field that
        a manager owned and leaves out of its next apply: each manager always applies the same fields, so
        a running VM's ``maxGuest`` (its hotplug ceiling, fixed at boot) is never touched or removed.
        """
        memory: dict[str, str] = {"guest": guest}
        if max_guest is not None:
            memory["maxGuest"] = max_guest
        body = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"template": {"spec": {"domain": {"memory": memory}}}},
        }
        result = await self.custom.patch_namespaced_custom_object(
            *KUBEVIRT,
            namespace=namespace,
            plural="virtualmachines",
            name=name,
            body=body,
            field_manager=FIELD_MANAGER if max_guest is None else FIELD_MANAGER_STOPPED,
            force=True,
            dry_run="All" if dry_run else None,
            _content_type=APPLY_PATCH,
        )
        return cast(Mapping[str, Any], result)

    async def patch_vmm_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await self.custom.patch_namespaced_custom_object_status(
            *DYNAMEM,
            namespace=namespace,
            plural=VMM_PLURAL,
            name=name,
            body={"status": dict(status)},
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
        )

    async def create_event(
        self,
        regarding: Mapping[str, Any],
        *,
        type_: str,
        reason: str,
        note: str,
        action: str,
        now: float | None = None,
    ) -> None:
        """Post an ``events.k8s.io/v1`` Event about an object (``regarding``: its body or a reference)."""
        meta = regarding.get("metadata", {})
        namespace = str(meta.get("namespace") or "default")
        event = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name', 'dynamem')}.{uuid.uuid4().hex[:12]}",
                "namespace": namespace,
            },
            "eventTime": now_rfc3339(now).replace("Z", ".000000Z"),
            "reportingController": "dynamem.io/operator",
            "reportingInstance": os.environ.get("POD_NAME", "dynamem"),
            "action": action,
            "reason": reason,
            "note": note[:1024],
            "type": type_,
            "regarding": {
                "apiVersion": regarding.get("apiVersion"),
                "kind": regarding.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
        }
        await self.custom.create_namespaced_custom_object(
            "events.k8s.io", "v1", namespace=namespace, plural="events", body=event
        )
