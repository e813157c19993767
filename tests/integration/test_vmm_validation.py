"""The VirtualMachineMemory schema refuses bad input at apply time, naming the field, on the real API server.

One case per rule of crds/virtualmachinememories.yaml: quantity format, at least 1Gi, buffer 5 to 95,
priority 0 to 100 or low/medium/high, the CEL rules minimum <= startup <= maximum (Kubernetes' quantity
library, so 1024Mi equals 1Gi), and the required fields. Defaults and `kubectl explain` are checked too.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from dynamem.testing.controlplane import ControlPlane

GROUP, VERSION, PLURAL = "dynamem.io", "v1alpha1", "virtualmachinememories"


def vmm(name: str, **spec: Any) -> dict[str, Any]:
    body = {"startup": "1Gi", "maximum": "4Gi", **spec}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualMachineMemory",
        "metadata": {"name": name},
        "spec": {k: v for k, v in body.items() if v is not None},
    }


def create(custom: k8s_client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    return custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)  # type: ignore[no-any-return]


REFUSED = [
    pytest.param(
        {"startup": "4GB"},
        "spec.startup must be a Kubernetes quantity such as 1Gi, not 4GB",
        id="startup-not-a-quantity",
    ),
    pytest.param({"maximum": "lots"}, "spec.maximum", id="maximum-not-a-quantity"),
    pytest.param({"minimum": "1.5 Gi"}, "spec.minimum", id="minimum-not-a-quantity"),
    pytest.param(
        {"startup": "512Mi"},
        "spec.startup must be at least 1Gi (KubeVirt memory hotplug needs 1Gi), not 512Mi",
        id="startup-below-1Gi",
    ),
    # each message shows the value as written; a bare number is bytes, and the message says so
    pytest.param(
        {"startup": "2048"},
        "not 2048 (a number without a unit is bytes: give one, e.g. 2Gi)",
        id="startup-no-unit",
    ),
    pytest.param(
        {"maximum": "-4Gi"},
        "spec.maximum must be at least 1Gi (KubeVirt memory hotplug needs 1Gi), not -4Gi",
        id="maximum-negative",
    ),
    pytest.param({"minimum": "256Mi"}, "spec.minimum must be at least 1Gi", id="minimum-below-1Gi"),
    pytest.param(
        {"minimum": "2Gi"}, "spec.minimum 2Gi must not exceed spec.startup 1Gi", id="minimum-over-startup"
    ),
    pytest.param(
        {"startup": "5Gi"}, "spec.startup 5Gi must not exceed spec.maximum 4Gi", id="startup-over-maximum"
    ),
    pytest.param({"buffer": 3}, "spec.buffer", id="buffer-below-5"),
    pytest.param({"buffer": 96}, "spec.buffer", id="buffer-above-95"),
    pytest.param({"buffer": "20%"}, "spec.buffer", id="buffer-not-an-integer"),
    pytest.param(
        {"priority": 101},
        "spec.priority must be an integer from 0 to 100, or low, medium or high, not 101",
        id="priority-above-100",
    ),
    pytest.param({"priority": -1}, "spec.priority must be an integer from 0 to 100", id="priority-negative"),
    pytest.param({"priority": "urgent"}, 'low, medium or high, not \\"urgent\\"', id="priority-unknown-word"),
    pytest.param(
        {"priority": "50"},
        'not \\"50\\" (a string: write the number without quotes)',
        id="priority-quoted-number",
    ),
    pytest.param({"startup": None}, "spec.startup: Required value", id="startup-missing"),
    pytest.param({"maximum": None}, "spec.maximum: Required value", id="maximum-missing"),
]


@pytest.mark.parametrize(("spec", "message"), REFUSED)
def test_invalid_vmm_is_refused_naming_the_field(
    custom_objects: k8s_client.CustomObjectsApi, namespace: str, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApiException) as refused:
        create(custom_objects, namespace, vmm("bad", **spec))
    assert refused.value.status == 422
    assert message in str(refused.value.body), refused.value.body


def test_valid_vmm_gets_defaults_and_quantities_compare_by_value(
    custom_objects: k8s_client.CustomObjectsApi, namespace: str
) -> None:
    # 1024Mi == 1Gi for the CEL quantity library, so minimum <= startup holds.
    created = create(custom_objects, namespace, vmm("ok", minimum="1024Mi"))
    assert created["spec"]["buffer"] == 20
    assert created["spec"]["priority"] == "medium"
    for priority in (0, 100, "low", "high"):
        create(custom_objects, namespace, vmm(f"p-{priority}", priority=priority))


def test_kubectl_explain_describes_every_field(control_plane: ControlPlane) -> None:
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig_path)}
    out = subprocess.run(
        ["kubectl", "explain", "virtualmachinememories.spec"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for field, words in {
        "startup": "Startup RAM",
        "minimum": "Minimum RAM",
        "maximum": "Maximum RAM",
        "buffer": "Memory Buffer",
        "priority": "Memory Priority",
    }.items():
        assert field in out and words in out, (field, out)


def test_printer_columns(
    control_plane: ControlPlane, custom_objects: k8s_client.CustomObjectsApi, namespace: str
) -> None:
    create(custom_objects, namespace, vmm("shown"))
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig_path)}
    out = subprocess.run(
        ["kubectl", "get", "vmmem", "-n", namespace], env=env, capture_output=True, text=True, check=True
    ).stdout
    header = out.splitlines()[0].split()
    assert header == ["NAME", "VM", "NODE", "ASSIGNED", "DEMAND", "PRESSURE", "STATUS", "AGE"]


@pytest.mark.parametrize("spec", [{"maximum": "4GB"}, {"startup": "1 Gi"}, {"minimum": "lots"}])
def test_a_malformed_quantity_gets_its_fields_message_alone(
    custom_objects: k8s_client.CustomObjectsApi, namespace: str, spec: dict[str, Any]
) -> None:
    """The cross-field rules are judged only on quantities: no "evaluating rule" error next to the field's."""
    with pytest.raises(ApiException) as refused:
        create(custom_objects, namespace, vmm("bad", **spec))
    body = str(refused.value.body)
    (field,) = spec
    assert f"spec.{field} must be a Kubernetes quantity" in body and "evaluating rule" not in body, body


def test_the_status_keeps_a_hold_and_a_contest_whole(
    custom_objects: k8s_client.CustomObjectsApi, namespace: str
) -> None:
    """What a new leader reads back to honour (status.hold, status.contest) is not pruned by the schema."""
    from dynamem.controller.contests import Contest
    from dynamem.controller.snapshot import Hold
    from dynamem.kube.objects import GI

    create(custom_objects, namespace, vmm("kept"))
    hold = Hold(reason="KubeVirt refused memory.guest 3Gi", vmi_uid="u-1", since="2026-12-01T10:00:00Z")
    contest = Contest(("argocd-controller",), GI, 3 * GI, 1_796_126_400.0, 2, 1_796_119_200.0, "u-0")
    status = {"hold": hold.to_status(), "contest": contest.to_status()}
    custom_objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "kept", {"status": status}
    )
    read = custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "kept")
    assert Hold.from_status(read["status"]["hold"]) == hold
    assert Contest.from_status(read["status"]["contest"]) == contest
