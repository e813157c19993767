"""The few Kubernetes API calls dynamem makes, on the asyncio client of the official ``kubernetes`` package.

Writes to a VirtualMachine are server-side apply with field manager ``dynamem`` and only the memory fields in
the body, so a GitOps tool that owns the rest of the VM never fights over it. Each apply carries the
``metadata.resourceVersion`` of the VM the decision was made on: if the VM changed since, the API server
refuses it (:class:`StaleObject`) and the next round decides again on the new VM. Applies are not forced:
when another manager owns ``memory.guest`` the server answers with a conflict (:class:`FieldConflict`,
naming the managers) and dynamem takes the field only when told to (``--force-ownership``).

Every request has a timeout; 429 and 5xx answers and dropped connections are retried with backoff and jitter
(:mod:`dynamem.kube.retry`). VirtualMachineMemory status goes through the status subresource; Events are
``events.k8s.io/v1`` objects that ``kubectl describe`` shows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import aiohttp
from kubernetes.aio import client, config
from kubernetes.aio.client.exceptions import ApiException

from dynamem.kube.kubevirt_config import configuration_of
from dynamem.kube.objects import HOLD_ANNOTATION, HOSTNAME_LABEL, PLACEMENT_ANNOTATION
from dynamem.kube.retry import RETRIED_STATUSES, retry_after_of, with_backoff

logger = logging.getLogger("dynamem.kube")

T = TypeVar("T")

FIELD_MANAGER = "dynamem"
FIELD_MANAGER_STOPPED = "dynamem-stopped"  # memory.guest and maxGuest of stopped VMs
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"

KUBEVIRT = ("kubevirt.io", "v1")
MIGRATION_LABEL = "dynamem.io/migration"  # on the VirtualMachineInstanceMigrations dynamem creates
MIGRATION_REASON_ANNOTATION = "dynamem.io/reason"
DYNAMEM = ("dynamem.io", "v1alpha1")
VMM_PLURAL = "virtualmachinememories"

# Every API request gives up after this long (client-go's default is none; controller-runtime's 30 s is too
# long for a round that should take about a second).
REQUEST_TIMEOUT_S = 10.0

__all__ = [
    "DYNAMEM",
    "FIELD_MANAGER",
    "FIELD_MANAGER_STOPPED",
    "KUBEVIRT",
    "REQUEST_TIMEOUT_S",
    "VMM_PLURAL",
    "ApiException",
    "FieldConflict",
    "KubeApi",
    "StaleObject",
    "now_rfc3339",
    "retryable",
]


class StaleObject(Exception):
    """The object changed since the view a decision was made on (its ``resourceVersion`` moved)."""


class FieldConflict(Exception):
    """Another field manager owns a field dynamem applied (server-side apply, not forced)."""

    def __init__(self, managers: Sequence[str], message: str) -> None:
        super().__init__(message)
        self.managers = tuple(managers)


def retryable(exc: BaseException) -> tuple[bool, float | None]:
    """Whether a failed request is worth retrying (429, 5xx, a dropped connection), and after how long."""
    if isinstance(exc, ApiException):
        if exc.status in RETRIED_STATUSES:
            return True, retry_after_of(exc.headers)
        return exc.status == 0, None  # no answer at all
    return isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | OSError), None


def _conflict(exc: ApiException) -> Exception:
    """A 409 as what it means: a field owned by another manager, or a stale resourceVersion."""
    try:
        status = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        status = {}
    causes = (status.get("details") or {}).get("causes") or []
    owners = [str(c.get("message", "")) for c in causes if c.get("reason") == "FieldManagerConflict"]
    if owners:
        managers = sorted({m.split('"')[1] for m in owners if m.count('"') >= 2})
        return FieldConflict(managers, status.get("message") or "; ".join(owners))
    return StaleObject(status.get("message") or str(exc))


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
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self._write_guard: Callable[[], None] | None = None

    def guard_writes(self, check: Callable[[], None]) -> None:
        """Call ``check`` right before every attempt of a retried write (memory applies, status patches); it
        raises to stop them. A replica whose Lease lapses while the API server is slow (its renewals failing
        as its writes are retried, for up to a minute) then sends no attempt after it may no longer write,
        where a check before the first attempt alone would let the retries land after another replica
        took over (:class:`dynamem.controller.leadership.LeaderOnlyWriter`)."""
        self._write_guard = check

    async def _retrying(self, call: Callable[[], Awaitable[T]], what: str, *, write: bool = False) -> T:
        guard = self._write_guard if write else None
        if guard is None:
            return await with_backoff(call, retryable=retryable, what=what)

        async def attempt() -> T:
            guard()
            return await call()

        return await with_backoff(attempt, retryable=retryable, what=what)

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
        self,
        namespace: str,
        name: str,
        guest: str,
        max_guest: str | None,
        *,
        resource_version: str | None,
        force: bool = False,
        dry_run: bool = False,
        placement: str | None = None,
        hold: str | None = None,
    ) -> Mapping[str, Any]:
        """Server-side apply of ``spec.template.spec.domain.memory`` on a VirtualMachine.

        ``resource_version``: the VM's version the decision was made on (the write is refused if it moved:
        :class:`StaleObject`). Not forced unless ``force``: a field owned by another manager raises
        :class:`FieldConflict`.

        A running VM gets ``guest`` only, as field manager ``dynamem``; a stopped one ``guest`` and
        ``maxGuest``, as ``dynamem-stopped``. Two managers because server-side apply removes a field that
        a manager owned and leaves out of its next apply: each manager always applies the same fields, so
        a running VM's ``maxGuest`` (its hotplug ceiling, fixed at boot) is never touched or removed.

        ``placement``: the ``dynamem.io/placement`` annotation, applied in the same request (so a change is
        never in the cluster without where it goes); an apply without it removes the one ``dynamem`` wrote
        before (server-side apply drops a field its manager no longer applies). ``hold``: the
        ``dynamem.io/hold`` annotation, likewise, with a change taken back.
        """
        memory: dict[str, str] = {"guest": guest}
        if max_guest is not None:
            memory["maxGuest"] = max_guest
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        annotations = {
            key: value for key, value in ((PLACEMENT_ANNOTATION, placement), (HOLD_ANNOTATION, hold)) if value
        }
        if annotations:
            metadata["annotations"] = annotations
        body = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": metadata,
            "spec": {"template": {"spec": {"domain": {"memory": memory}}}},
        }
        try:
            result = await self._retrying(
                lambda: self.custom.patch_namespaced_custom_object(
                    *KUBEVIRT,
                    namespace=namespace,
                    plural="virtualmachines",
                    name=name,
                    body=body,
                    field_manager=FIELD_MANAGER if max_guest is None else FIELD_MANAGER_STOPPED,
                    force=force,
                    dry_run="All" if dry_run else None,
                    _content_type=APPLY_PATCH,
                    _request_timeout=REQUEST_TIMEOUT_S,
                ),
                f"apply memory of {namespace}/{name}",
                write=True,
            )
        except ApiException as exc:
            if exc.status == 409:
                raise _conflict(exc) from None
            raise
        return cast(Mapping[str, Any], result)

    async def create_migration(
        self, namespace: str, vmi: str, node: str, *, reason: str, dry_run: bool = False
    ) -> str:
        """Create a VirtualMachineInstanceMigration of ``vmi`` pinned to ``node``; returns its name.

        ``spec.addedNodeSelector`` ``{kubernetes.io/hostname: node}`` is merged into the target pod's node
        selector by KubeVirt's migration controller (``pkg/virt-controller/watch/migration/migration.go``,
        ``createTargetPod``), so the kube-scheduler may only bind it there. Not retried (a retry could make a
        second migration, which KubeVirt's admission refuses anyway); its refusal (400 "in-flight migration
        detected": a migration of this VMI exists, KubeVirt's
        ``pkg/virt-api/webhooks/validating-webhook/admitters/migration-create-admitter.go``) raises
        :class:`ApiException` for the caller to read as a lost race.
        """
        body = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstanceMigration",
            "metadata": {
                "generateName": f"{vmi}-dynamem-",
                "namespace": namespace,
                "labels": {MIGRATION_LABEL: "true"},
                "annotations": {MIGRATION_REASON_ANNOTATION: reason[:1024]},
            },
            "spec": {"vmiName": vmi, "addedNodeSelector": {HOSTNAME_LABEL: node}},
        }
        created = await self.custom.create_namespaced_custom_object(
            *KUBEVIRT,
            namespace=namespace,
            plural="virtualmachineinstancemigrations",
            body=body,
            dry_run="All" if dry_run else None,
            _request_timeout=REQUEST_TIMEOUT_S,
        )
        return str(cast(Mapping[str, Any], created).get("metadata", {}).get("name") or "")

    async def kubevirt_configuration(self) -> Mapping[str, Any] | None:
        """The KubeVirt CR's ``spec.configuration`` (the first CR's): empty when there is no KubeVirt CR
        (or no CRD) or it sets nothing, so KubeVirt's defaults apply; None when it could not be read now
        (not allowed, or no answer: whoever asks keeps what it had, KubeVirt's defaults at start). Transient
        failures (429, 5xx, no answer: the API server restarting) are retried with backoff first; whoever
        asks goes on without it rather than stop (:mod:`dynamem.kube.kubevirt_config`)."""
        try:
            listed = await self._retrying(
                lambda: self.custom.list_cluster_custom_object(
                    *KUBEVIRT, plural="kubevirts", _request_timeout=REQUEST_TIMEOUT_S
                ),
                "list the KubeVirt CR",
            )
        except ApiException as exc:
            if exc.status == 404:  # no KubeVirt CRD: KubeVirt's defaults
                return {}
            logger.warning("the KubeVirt CR is unreadable (%s %s)", exc.status, exc.reason)
            return None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            logger.warning("the KubeVirt CR is unreadable (%s)", exc)
            return None
        return configuration_of(cast(Mapping[str, Any], listed))

    async def patch_vmm_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await self._retrying(
            lambda: self.custom.patch_namespaced_custom_object_status(
                *DYNAMEM,
                namespace=namespace,
                plural=VMM_PLURAL,
                name=name,
                body={"status": dict(status)},
                field_manager=FIELD_MANAGER,
                _content_type=MERGE_PATCH,
                _request_timeout=REQUEST_TIMEOUT_S,
            ),
            f"status of {namespace}/{name}",
            write=True,
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
        await self.custom.create_namespaced_custom_object(  # best effort: not retried (no duplicates)
            "events.k8s.io", "v1", namespace=namespace, plural="events", body=event, _request_timeout=5
        )

    async def list_objects(
        self, kind: str, namespaces: Sequence[str] = ()
    ) -> tuple[int, list[Mapping[str, Any]]]:
        """A fresh LIST of one kind (``virtualmachinememories``, ``virtualmachines``,
        ``virtualmachineinstances``, ``virtualmachineinstancemigrations``, ``nodes``, ``pods``,
        ``persistentvolumeclaims`` or ``persistentvolumes``), in every namespace or in the given ones.

        Returns the list's resourceVersion (the oldest, for several namespaces) and the raw items, each with
        ``apiVersion`` and ``kind`` filled in as a watch event carries them.
        """
        cluster_scoped = kind in {"nodes", "persistentvolumes"}
        scopes: Sequence[str | None] = list(namespaces) if namespaces and not cluster_scoped else [None]
        version: int | None = None
        items: list[Mapping[str, Any]] = []
        for namespace in scopes:
            listed = await self._retrying(lambda ns=namespace: self._list_once(kind, ns), f"list {kind}")  # type: ignore[misc]
            try:
                found = int(listed.get("metadata", {}).get("resourceVersion") or 0)
            except ValueError:
                found = 0
            version = found if version is None else min(version, found)
            items.extend(listed.get("items") or [])
        return version or 0, items

    async def _list_once(self, kind: str, namespace: str | None) -> Mapping[str, Any]:
        timeout = REQUEST_TIMEOUT_S * 6  # a LIST of ten thousand objects takes a few seconds
        core = self.core
        listing: dict[str, Callable[[], Awaitable[Any]]] = {
            "nodes": lambda: core.list_node_without_preload_content(_request_timeout=timeout),
            "persistentvolumes": lambda: core.list_persistent_volume_without_preload_content(
                _request_timeout=timeout
            ),
        }
        if namespace is None:
            listing["pods"] = lambda: core.list_pod_for_all_namespaces_without_preload_content(
                _request_timeout=timeout
            )
            listing["persistentvolumeclaims"] = lambda: (
                core.list_persistent_volume_claim_for_all_namespaces_without_preload_content(
                    _request_timeout=timeout
                )
            )
        else:
            listing["pods"] = lambda: core.list_namespaced_pod_without_preload_content(
                namespace, _request_timeout=timeout
            )
            listing["persistentvolumeclaims"] = lambda: (
                core.list_namespaced_persistent_volume_claim_without_preload_content(
                    namespace, _request_timeout=timeout
                )
            )
        if kind in listing:
            response = await listing[kind]()
            raw = await response.read()
            if not 200 <= response.status < 300:
                raise ApiException(
                    status=response.status, reason=response.reason, body=raw.decode(errors="replace")
                )
            return cast(Mapping[str, Any], json.loads(raw))
        group, version = DYNAMEM if kind == VMM_PLURAL else KUBEVIRT
        if namespace is None:
            result = await self.custom.list_cluster_custom_object(
                group, version, kind, _request_timeout=timeout
            )
        else:
            result = await self.custom.list_namespaced_custom_object(
                group, version, namespace, kind, _request_timeout=timeout
            )
        return cast(Mapping[str, Any], result)
