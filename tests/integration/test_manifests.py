"""The shipped manifests against a real kube-apiserver: they apply, and the operator's RBAC is least
privilege.

What is checked, and how:
- Every kustomization under manifests/ (the install, the kind overlay, the examples) is built with
  `kubectl kustomize` and sent through `kubectl apply --server-side --dry-run=server` with strict field
  validation, so the server's own schemas (apps/v1, RBAC, our CRD with its CEL rules, KubeVirt's
  VirtualMachine schema) judge every field.
- The ServiceMonitor and PrometheusRule under manifests/optional/ cannot go to the server: the Prometheus
  Operator's CRDs are not installed here. They are checked as YAML instead (required fields, the Service port
  and labels they point at, the metric names against the operator's own registry), and the alert rules and
  the kind Prometheus configuration go through `promtool`.
- The RBAC objects are really applied, then the service account is asked about every permission the operator
  needs and about things it must not do, by SubjectAccessReview and by acting as the account.
- A fresh, empty server shows that the documented install order (`kubectl apply -k crds/`, then
  `kubectl apply -k manifests/`) works, and that one apply of `manifests/` alone installs everything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from dynamem.controller.metrics import OperatorMetrics
from dynamem.testing.controlplane import ControlPlane, repo_root

ROOT = repo_root()
MANIFESTS = ROOT / "manifests"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
OPERATOR_NAMESPACE = "dynamem-system"
SA_NAME = "dynamem"
SA_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{SA_NAME}"
SA_GROUPS = ("system:serviceaccounts", f"system:serviceaccounts:{OPERATOR_NAMESPACE}", "system:authenticated")


def kubectl(args: Sequence[str], *, kubeconfig: Path | None = None, stdin: str | None = None) -> str:
    command = [KUBECTL, *args]
    if kubeconfig is not None:
        command += ["--kubeconfig", str(kubeconfig)]
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}{result.stdout}"
        )
    return result.stdout


def kustomize(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(kubectl(["kustomize", str(path)])) if doc]


def find(docs: Sequence[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def ensure_namespace(core: k8s_client.CoreV1Api, name: str) -> None:
    try:
        core.create_namespace(k8s_client.V1Namespace(metadata=k8s_client.V1ObjectMeta(name=name)))
    except ApiException as exc:
        if exc.status != 409:
            raise


def server_dry_run(control_plane: ControlPlane, docs: Sequence[dict[str, Any]]) -> str:
    return kubectl(
        [
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=dynamem-manifest-test",
            "--dry-run=server",
            "--validate=strict",
            "-f",
            "-",
        ],
        kubeconfig=control_plane.kubeconfig_path,
        stdin=yaml.safe_dump_all(docs),
    )


@pytest.fixture(scope="module")
def installed_rbac(control_plane: ControlPlane) -> Iterator[None]:
    """The operator's Namespace, ServiceAccount, (Cluster)Roles and their bindings, really applied."""
    docs = kustomize(MANIFESTS)
    kinds = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    rbac = [doc for doc in docs if doc["kind"] in kinds]
    assert {doc["kind"] for doc in rbac} == kinds
    kubectl(
        ["apply", "--server-side", "--field-manager=dynamem-manifest-test", "-f", "-"],
        kubeconfig=control_plane.kubeconfig_path,
        stdin=yaml.safe_dump_all(rbac),
    )
    yield


# -- every manifest passes the server's validation ---------------------------------------------------------


@pytest.mark.parametrize("folder", ["manifests", "manifests/kind", "manifests/examples", "crds"])
def test_kustomization_passes_server_side_dry_run(
    folder: str, control_plane: ControlPlane, core_v1: k8s_client.CoreV1Api
) -> None:
    docs = kustomize(ROOT / folder)
    assert docs, f"{folder} builds to nothing"
    # Dry-run creates nothing, so the namespaces objects go to must exist for real (kubevirt: kind's Role).
    for namespace in {doc["metadata"].get("namespace") for doc in docs} - {None}:
        ensure_namespace(core_v1, namespace)
    out = server_dry_run(control_plane, docs)
    for doc in docs:
        assert doc["metadata"]["name"] in out, (
            f"{doc['kind']}/{doc['metadata']['name']} not in kubectl's output"
        )


def test_every_manifest_file_is_in_some_kustomization() -> None:
    """A YAML file nobody lists would never be dry-run above (nor installed)."""
    listed: set[Path] = set()
    for kustomization in [*MANIFESTS.rglob("kustomization.yaml"), ROOT / "crds" / "kustomization.yaml"]:
        for entry in yaml.safe_load(kustomization.read_text()).get("resources", []):
            listed.add((kustomization.parent / entry).resolve())
    files = {path.resolve() for path in MANIFESTS.rglob("*.yaml") if path.name != "kustomization.yaml"}
    assert files - listed == set()


def test_install_objects_and_images() -> None:
    docs = kustomize(MANIFESTS)
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in docs}
    assert {
        ("CustomResourceDefinition", "virtualmachinememories.dynamem.io"),
        ("Namespace", OPERATOR_NAMESPACE),
        ("ServiceAccount", SA_NAME),
        ("ClusterRole", "dynamem"),
        ("ClusterRoleBinding", "dynamem"),
        ("Role", "dynamem-leader-election"),
        ("RoleBinding", "dynamem-leader-election"),
        ("Deployment", "dynamem"),
        ("Service", "dynamem-metrics"),
        ("PodDisruptionBudget", "dynamem"),
    } <= kinds
    assert find(docs, "Role", "dynamem-leader-election")["metadata"]["namespace"] == OPERATOR_NAMESPACE
    deployment = find(docs, "Deployment", "dynamem")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("ghcr.io/dynamem/dynamem:")
    # a drain evicts the two replicas one at a time, and the budget covers exactly the operator's pods
    budget = find(docs, "PodDisruptionBudget", "dynamem")
    assert budget["metadata"]["namespace"] == OPERATOR_NAMESPACE
    assert budget["spec"]["maxUnavailable"] == 1 and deployment["spec"]["replicas"] == 2
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"  # a broken replica blocks no drain
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_kind_overlay_uses_the_local_image_and_prometheus() -> None:
    docs = kustomize(MANIFESTS / "kind")
    (container,) = find(docs, "Deployment", "dynamem")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "dynamem:dev"
    urls = [arg for arg in container["args"] if arg.startswith("--prometheus-url")]
    assert urls == ["--prometheus-url=http://prometheus.dynamem-system.svc:9090"]
    service = find(docs, "Service", "prometheus")
    assert service["metadata"]["namespace"] == "dynamem-system"
    assert [port["port"] for port in service["spec"]["ports"]] == [9090]


def test_kind_prometheus_config_is_valid(tmp_path: Path) -> None:
    docs = kustomize(MANIFESTS / "kind")
    config = find(docs, "ConfigMap", "prometheus")["data"]["prometheus.yml"]
    jobs = {job["job_name"]: job for job in yaml.safe_load(config)["scrape_configs"]}
    assert set(jobs) == {"kubevirt", "dynamem"}
    assert jobs["kubevirt"]["scheme"] == "https"
    assert jobs["kubevirt"]["tls_config"] == {"insecure_skip_verify": True}
    for job in jobs.values():
        (sd,) = job["kubernetes_sd_configs"]
        assert sd["role"] == "endpointslice"
        assert sd["namespaces"]["names"] == [
            {"kubevirt": "kubevirt", "dynamem": "dynamem-system"}[job["job_name"]]
        ]
    # Debian's promtool is built without Kubernetes discovery, so swap it for a static target and let promtool
    # judge the rest (relabelling, TLS). The real image (quay.io/prometheus/prometheus) has it.
    parsed = yaml.safe_load(config)
    for job in parsed["scrape_configs"]:
        job["static_configs"] = [{"targets": ["placeholder:8443"]}]
        del job["kubernetes_sd_configs"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(parsed))
    promtool(["check", "config", "--syntax-only", str(tmp_path / "prometheus.yml")])


# -- optional add-ons (Prometheus Operator CRDs are not installed: checked as YAML and with promtool) -------


def promtool(args: Sequence[str]) -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing; run `make prometheus` (the Debian package ships it)"
    result = subprocess.run([binary, *args], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def operator_metric_names() -> set[str]:
    names: set[str] = set()
    for family in OperatorMetrics().registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def component(name: str) -> list[dict[str, Any]]:
    path = MANIFESTS / "optional" / name
    kustomization = yaml.safe_load((path / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    return [
        doc for entry in kustomization["resources"] for doc in yaml.safe_load_all((path / entry).read_text())
    ]


def test_optional_components_build_with_the_install(tmp_path: Path) -> None:
    """A user's overlay: the install plus the components, as the comments in the components show."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(MANIFESTS, tmp_path)],
                "components": [
                    os.path.relpath(MANIFESTS / "optional" / name, tmp_path)
                    for name in ("servicemonitor", "alerts", "dashboard")
                ],
            }
        )
    )
    out = kubectl(["kustomize", str(tmp_path)])  # kustomize takes folders outside the root, if relative
    kinds = {doc["kind"] for doc in yaml.safe_load_all(out) if doc}
    assert {"ServiceMonitor", "PrometheusRule", "Deployment", "ConfigMap"} <= kinds


def test_service_monitor_points_at_the_metrics_service() -> None:
    (monitor,) = component("servicemonitor")
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == OPERATOR_NAMESPACE
    service = find(kustomize(MANIFESTS), "Service", "dynamem-metrics")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    port_names = {port["name"] for port in service["spec"]["ports"]}
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == ["metrics"]
    # the per-VM series' own namespace label is the VM's, not the scrape target's (dynamem-system)
    assert [endpoint.get("honorLabels") for endpoint in monitor["spec"]["endpoints"]] == [True]
    assert "metrics" in port_names


def test_prometheus_rule_alerts_are_valid_and_use_real_metrics(tmp_path: Path) -> None:
    (rule,) = component("alerts")
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["metadata"]["namespace"] == OPERATOR_NAMESPACE
    groups = rule["spec"]["groups"]
    alerts = {r["alert"]: r for group in groups for r in group["rules"]}
    assert alerts["DynamemVmMemoryWarning"]["expr"].endswith("(dynamem_vm_warning) == 1")
    assert alerts["DynamemVmMemoryWarning"]["for"] == "5m"
    assert "dynamem_node_over_subscribed" in alerts["DynamemNodeOverSubscribed"]["expr"]
    for name, alert in alerts.items():
        assert {"expr", "for", "labels", "annotations"} <= alert.keys(), name
        assert alert["annotations"].get("summary"), name
    # Every dynamem_* name in an expression is a metric the operator exports (so a rename breaks this test).
    exported = operator_metric_names()
    for name, alert in alerts.items():
        used = {word for word in _identifiers(alert["expr"]) if word.startswith("dynamem_")}
        assert used and used <= exported, f"{name}: {sorted(used - exported)} not exported by the operator"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": groups}))
    promtool(["check", "rules", str(tmp_path / "rules.yml")])


def test_memory_writes_failing_fires_on_failures_that_go_on_not_on_one(tmp_path: Path) -> None:
    """The alert's behaviour, by promtool's own rule tests: one failed write (a VM backs off, the next
    round's write passes) raises nothing; a failure every minute for 40 minutes does."""
    (rule,) = component("alerts")
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    alert = "DynamemMemoryWritesFailing"
    firing = {
        "exp_labels": {"severity": "warning"},
        "exp_annotations": {a: rule_annotation(rule, alert, a) for a in ("summary", "description")},
    }
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'dynamem_api_write_failures_total{pod="a"}', "values": "0+1x60"},
                ],
                "alert_rule_test": [
                    {"eval_time": "10m", "alertname": alert, "exp_alerts": []},
                    {"eval_time": "40m", "alertname": alert, "exp_alerts": [firing]},
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'dynamem_api_write_failures_total{pod="a"}', "values": "0x10 1x50"},
                ],
                "alert_rule_test": [
                    *({"eval_time": f"{m}m", "alertname": alert, "exp_alerts": []} for m in range(11, 41)),
                ],
            },
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    promtool(["test", "rules", str(tmp_path / "tests.yml")])


def rule_annotation(rule: dict[str, Any], alert: str, key: str) -> str:
    (found,) = [r for g in rule["spec"]["groups"] for r in g["rules"] if r.get("alert") == alert]
    return str(found["annotations"][key])


def _identifiers(expr: str) -> set[str]:
    import re

    return set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))


# -- RBAC: what the operator's service account can and cannot do -------------------------------------------

# (verb, group, resource, subresource, name): in a user namespace, or cluster-wide for the *_CLUSTER lists.
ALLOWED = [
    ("list", "dynamem.io", "virtualmachinememories", "", ""),
    ("watch", "dynamem.io", "virtualmachinememories", "", ""),
    ("patch", "dynamem.io", "virtualmachinememories", "status", "vm"),
    ("list", "kubevirt.io", "virtualmachines", "", ""),
    ("watch", "kubevirt.io", "virtualmachines", "", ""),
    ("patch", "kubevirt.io", "virtualmachines", "", "vm"),
    ("list", "kubevirt.io", "virtualmachineinstances", "", ""),
    ("watch", "kubevirt.io", "virtualmachineinstances", "", ""),
    ("list", "kubevirt.io", "virtualmachineinstancemigrations", "", ""),
    ("watch", "kubevirt.io", "virtualmachineinstancemigrations", "", ""),
    ("create", "kubevirt.io", "virtualmachineinstancemigrations", "", ""),  # pinned to the plan's node
    ("list", "kubevirt.io", "kubevirts", "", ""),
    ("list", "", "pods", "", ""),
    ("watch", "", "pods", "", ""),
    ("list", "", "persistentvolumeclaims", "", ""),
    ("watch", "", "persistentvolumeclaims", "", ""),
    ("create", "events.k8s.io", "events", "", ""),
]
ALLOWED_CLUSTER = [
    ("list", "", "nodes", "", ""),
    ("watch", "", "nodes", "", ""),
    ("list", "", "persistentvolumes", "", ""),
    ("watch", "", "persistentvolumes", "", ""),
    ("list", "apiextensions.k8s.io", "customresourcedefinitions", "", ""),
    ("watch", "apiextensions.k8s.io", "customresourcedefinitions", "", ""),
]
DENIED = [
    # get of one object: never needed (kopf and the loop list and watch), so not granted
    ("get", "dynamem.io", "virtualmachinememories", "", "vm"),
    ("get", "kubevirt.io", "virtualmachines", "", "vm"),
    ("get", "kubevirt.io", "virtualmachineinstances", "", "vm"),
    ("get", "kubevirt.io", "virtualmachineinstancemigrations", "", "m"),
    ("get", "", "secrets", "", "any"),
    ("list", "", "secrets", "", ""),
    ("watch", "", "secrets", "", ""),
    ("get", "", "configmaps", "", "any"),
    ("list", "", "configmaps", "", ""),
    ("create", "", "configmaps", "", ""),
    ("patch", "", "configmaps", "", "any"),
    ("patch", "kubevirt.io", "virtualmachineinstances", "", "vm"),
    ("update", "kubevirt.io", "virtualmachineinstances", "", "vm"),
    ("delete", "kubevirt.io", "virtualmachineinstances", "", "vm"),
    ("create", "kubevirt.io", "virtualmachines", "", ""),
    ("delete", "kubevirt.io", "virtualmachines", "", "vm"),
    ("update", "kubevirt.io", "virtualmachines", "", "vm"),
    ("delete", "kubevirt.io", "virtualmachineinstancemigrations", "", "m"),
    ("patch", "kubevirt.io", "kubevirts", "", "kubevirt"),
    ("patch", "", "pods", "", "any"),
    ("delete", "", "pods", "", "any"),
    ("create", "", "pods", "", ""),
    ("create", "", "pods", "eviction", "any"),
    ("get", "", "pods", "log", "any"),
    ("patch", "", "persistentvolumeclaims", "", "any"),
    ("delete", "", "persistentvolumeclaims", "", "any"),
    ("patch", "dynamem.io", "virtualmachinememories", "", "vm"),
    ("update", "dynamem.io", "virtualmachinememories", "", "vm"),
    ("delete", "dynamem.io", "virtualmachinememories", "", "vm"),
    ("create", "dynamem.io", "virtualmachinememories", "", ""),
    (
        "create",
        "",
        "events",
        "",
        "",
    ),  # kopf's core Events: posting is off (handlers.py), dynamem's are events.k8s.io
    ("patch", "", "events", "", "any"),
    ("delete", "events.k8s.io", "events", "", "any"),
    ("patch", "kopf.dev", "kopfpeerings", "", "dynamem"),
]
# Leases only in the operator's namespace: not in a user's.
DENIED_USER_NAMESPACE = [
    ("update", "coordination.k8s.io", "leases", "", "dynamem"),
    ("create", "coordination.k8s.io", "leases", "", ""),
]
# The Lease, in the operator's namespace only: create (not narrowable by name), get and update by name.
ALLOWED_OPERATOR_NAMESPACE = [
    ("create", "coordination.k8s.io", "leases", "", ""),
    ("get", "coordination.k8s.io", "leases", "", "dynamem"),
    ("update", "coordination.k8s.io", "leases", "", "dynamem"),
]
DENIED_OPERATOR_NAMESPACE = [
    ("update", "coordination.k8s.io", "leases", "", "someone-else"),
    ("delete", "coordination.k8s.io", "leases", "", "dynamem"),
    ("list", "coordination.k8s.io", "leases", "", ""),
]
DENIED_CLUSTER = [
    ("patch", "", "nodes", "", "any"),
    ("patch", "", "nodes", "status", "any"),
    ("delete", "", "nodes", "", "any"),
    ("list", "", "secrets", "", ""),
    ("list", "", "configmaps", "", ""),
    ("create", "", "namespaces", "", ""),
    ("patch", "kopf.dev", "clusterkopfpeerings", "", "dynamem"),
    ("update", "coordination.k8s.io", "leases", "", "dynamem"),
    ("patch", "apiextensions.k8s.io", "customresourcedefinitions", "", "virtualmachinememories.dynamem.io"),
    ("create", "rbac.authorization.k8s.io", "clusterrolebindings", "", ""),
    ("impersonate", "", "serviceaccounts", "", "default"),
    ("*", "*", "*", "", ""),
]


def sa_can(
    api_client: k8s_client.ApiClient, namespace: str | None, rule: tuple[str, str, str, str, str]
) -> bool:
    verb, group, resource, subresource, name = rule
    review = k8s_client.V1SubjectAccessReview(
        spec=k8s_client.V1SubjectAccessReviewSpec(
            user=SA_USER,
            groups=list(SA_GROUPS),
            resource_attributes=k8s_client.V1ResourceAttributes(
                verb=verb,
                group=group,
                resource=resource,
                subresource=subresource or None,
                name=name or None,
                namespace=namespace,
            ),
        )
    )
    result = k8s_client.AuthorizationV1Api(api_client).create_subject_access_review(review)
    return bool(result.status.allowed)


def _rule_id(rule: tuple[str, str, str, str, str]) -> str:
    verb, group, resource, subresource, name = rule
    sub = f"/{subresource}" if subresource else ""
    return f"{verb}-{group or 'core'}-{resource}{sub}{'-' + name if name else ''}"


@pytest.mark.usefixtures("installed_rbac")
@pytest.mark.parametrize("rule", ALLOWED, ids=_rule_id)
def test_service_account_may(rule: tuple[str, str, str, str, str], api_client: k8s_client.ApiClient) -> None:
    assert sa_can(api_client, "any-user-namespace", rule)


@pytest.mark.usefixtures("installed_rbac")
@pytest.mark.parametrize("rule", ALLOWED_CLUSTER, ids=_rule_id)
def test_service_account_may_cluster_wide(
    rule: tuple[str, str, str, str, str], api_client: k8s_client.ApiClient
) -> None:
    assert sa_can(api_client, None, rule)


@pytest.mark.usefixtures("installed_rbac")
@pytest.mark.parametrize("rule", ALLOWED_OPERATOR_NAMESPACE, ids=_rule_id)
def test_service_account_may_hold_its_lease(
    rule: tuple[str, str, str, str, str], api_client: k8s_client.ApiClient
) -> None:
    assert sa_can(api_client, OPERATOR_NAMESPACE, rule)


@pytest.mark.usefixtures("installed_rbac")
@pytest.mark.parametrize("rule", DENIED_USER_NAMESPACE, ids=_rule_id)
def test_service_account_has_no_lease_in_user_namespaces(
    rule: tuple[str, str, str, str, str], api_client: k8s_client.ApiClient
) -> None:
    assert not sa_can(api_client, "any-user-namespace", rule)


@pytest.mark.usefixtures("installed_rbac")
@pytest.mark.parametrize("rule", DENIED_OPERATOR_NAMESPACE, ids=_rule_id)
def test_service_account_may_not_touch_other_leases(
    rule: tuple[str, str, str, str, str], api_client: k8s_client.ApiClient
) -> None:
    assert not sa_can(api_client, OPERATOR_NAMESPACE, rule)


@pytest.mark.usefixtures("installed_rbac")
@pytest.mark.parametrize("rule", DENIED, ids=_rule_id)
def test_service_account_may_not(
    rule: tuple[str, str, str, str, str], api_client: k8s_client.ApiClient
) -> None:
    assert not sa_can(api_client, "any-user-namespace", rule)
    assert not sa_can(api_client, OPERATOR_NAMESPACE, rule)


@pytest.mark.usefixtures("installed_rbac")
@pytest.mark.parametrize("rule", DENIED_CLUSTER, ids=_rule_id)
def test_service_account_may_not_cluster_wide(
    rule: tuple[str, str, str, str, str], api_client: k8s_client.ApiClient
) -> None:
    assert not sa_can(api_client, None, rule)


def test_cluster_role_has_no_wildcards_and_no_secrets() -> None:
    role = find(kustomize(MANIFESTS), "ClusterRole", "dynamem")
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(key, []), rule
        assert not {"secrets", "configmaps"} & set(rule["resources"]), rule
        assert not {"delete", "deletecollection", "update", "escalate", "bind", "impersonate"} & set(
            rule["verbs"]
        )


# -- RBAC in action: acting as the service account ---------------------------------------------------------


def _example_vm(name: str) -> dict[str, Any]:
    docs = yaml.safe_load_all((MANIFESTS / "examples" / "finance.yaml").read_text())
    vm = next(doc for doc in docs if doc["kind"] == "VirtualMachine")
    vm["metadata"]["name"] = name
    vm["spec"]["runStrategy"] = "Halted"
    return vm


def _memory_apply(namespace: str, name: str, guest: str) -> dict[str, Any]:
    """The body dynamem's KubeApi.apply_vm_memory sends."""
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": {"spec": {"domain": {"memory": {"guest": guest, "maxGuest": "4Gi"}}}}},
    }


@pytest.mark.usefixtures("installed_rbac")
def test_acting_as_the_service_account(
    control_plane: ControlPlane, custom_objects: k8s_client.CustomObjectsApi, namespace: str
) -> None:
    custom_objects.create_namespaced_custom_object(
        "kubevirt.io", "v1", namespace, "virtualmachines", _example_vm("finance")
    )
    vmm = next(
        d
        for d in yaml.safe_load_all((MANIFESTS / "examples" / "finance.yaml").read_text())
        if d["kind"] != "VirtualMachine"
    )
    custom_objects.create_namespaced_custom_object(
        "dynamem.io", "v1alpha1", namespace, "virtualmachinememories", vmm
    )

    sa_api = control_plane.service_account_client(OPERATOR_NAMESPACE, SA_NAME)
    try:
        sa = k8s_client.CustomObjectsApi(sa_api)
        core = k8s_client.CoreV1Api(sa_api)
        # What the operator does: server-side apply of memory.guest, VMM status, an Event, read the world.
        vm = sa.patch_namespaced_custom_object(
            "kubevirt.io",
            "v1",
            namespace,
            "virtualmachines",
            "finance",
            _memory_apply(namespace, "finance", "2Gi"),
            field_manager="dynamem",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        assert vm["spec"]["template"]["spec"]["domain"]["memory"]["guest"] == "2Gi"
        sa.patch_namespaced_custom_object_status(
            "dynamem.io",
            "v1alpha1",
            namespace,
            "virtualmachinememories",
            "finance",
            {"status": {"memoryStatus": "Unknown"}},
            _content_type="application/merge-patch+json",
        )
        sa.list_cluster_custom_object("kubevirt.io", "v1", "virtualmachineinstances")
        core.list_node()
        core.list_pod_for_all_namespaces(field_selector="spec.nodeName!=")

        # What it must not: create a VM by applying to a missing name, touch Secrets or ConfigMaps, ...
        # A complete, valid VM applied to a missing name would be created with `create`: refused (403). (The
        # memory-only body dynamem sends fails even earlier there, as an invalid VM: 422.)
        ghost = {**_example_vm("ghost"), "metadata": {"name": "ghost", "namespace": namespace}}
        for body, status in ((ghost, 403), (_memory_apply(namespace, "ghost", "2Gi"), 422)):
            with pytest.raises(ApiException) as missing:
                sa.patch_namespaced_custom_object(
                    "kubevirt.io",
                    "v1",
                    namespace,
                    "virtualmachines",
                    "ghost",
                    body,
                    field_manager="dynamem",
                    force=True,
                    _content_type="application/apply-patch+yaml",
                )
            assert missing.value.status == status, missing.value.body
        for call in (
            lambda: core.list_namespaced_secret(namespace),
            lambda: core.list_secret_for_all_namespaces(),
            lambda: core.list_namespaced_config_map(namespace),
            lambda: sa.delete_namespaced_custom_object(
                "kubevirt.io", "v1", namespace, "virtualmachines", "finance"
            ),
            lambda: sa.patch_namespaced_custom_object(
                "dynamem.io",
                "v1alpha1",
                namespace,
                "virtualmachinememories",
                "finance",
                {"spec": {"maximum": "8Gi"}},
                _content_type="application/merge-patch+json",
            ),
        ):
            with pytest.raises(ApiException) as denied:
                call()
            assert denied.value.status == 403
    finally:
        sa_api.close()


# -- a fresh cluster: one apply installs everything ---------------------------------------------------------


def test_install_on_an_empty_cluster(tmp_path: Path) -> None:
    """One `kubectl apply -k manifests/` installs everything on an empty cluster (no custom object needs the
    CRDs first since the kopf peering object is gone: leadership is a coordination.k8s.io Lease)."""
    empty = tmp_path / "no-crds"
    empty.mkdir()
    with ControlPlane(crd_dir=empty, kubevirt_crds=False) as fresh:
        config = fresh.kubeconfig_path
        out = kubectl(["apply", "--server-side", "-k", str(MANIFESTS)], kubeconfig=config)
        assert "deployment.apps/dynamem serverside-applied" in out
        assert "role.rbac.authorization.k8s.io/dynamem-leader-election serverside-applied" in out
        kubectl(["wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"], kubeconfig=config)
        got = kubectl(["get", "crd", "virtualmachinememories.dynamem.io", "-o", "name"], kubeconfig=config)
        assert (
            got.strip() == "customresourcedefinition.apiextensions.k8s.io/virtualmachinememories.dynamem.io"
        )


def test_an_overlay_sets_its_own_image_as_the_docs_say(tmp_path: Path) -> None:
    """docs/install.md and the README: an overlay's `images:` entry under the base's name for the image
    (ghcr.io/dynamem/dynamem) sets the operator's image; one under the Deployment's own `dynamem` matches
    nothing once the base has renamed it, and the default image stays."""
    for name, expected in (
        ("ghcr.io/dynamem/dynamem", "registry.example/dynamem:7"),
        ("dynamem", "ghcr.io/dynamem/dynamem:"),
    ):
        (tmp_path / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [os.path.relpath(MANIFESTS, tmp_path)],
                    "images": [{"name": name, "newName": "registry.example/dynamem", "newTag": "7"}],
                }
            )
        )
        docs = [doc for doc in yaml.safe_load_all(kubectl(["kustomize", str(tmp_path)])) if doc]
        deployment = find(docs, "Deployment", "dynamem")
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image.startswith(expected), (name, image)
