"""The image and the Deployment keep their hardening: checked from the files, so they cannot drift quietly.

No Docker and no cluster here: the Dockerfile is parsed line by line, the manifests are read as YAML, and the
Deployment's arguments go through the operator's own option parser (a renamed flag breaks this test, not a
rollout). tests/integration/test_manifests.py sends the same manifests to a real kube-apiserver.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dynamem.controller.options import parse_options

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "manifests" / "base"
PINNED_TAG = re.compile(r"^[\w.\-/]+:\d+\.\d+\.\d+[\w.\-]*(@sha256:[0-9a-f]{64})?$")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    pairs = []
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        instruction, _, rest = stripped.partition(" ")
        pairs.append((instruction.upper(), rest.strip()))
    return pairs


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def deployment() -> dict[str, Any]:
    (doc,) = [doc for doc in load(BASE / "deployment.yaml") if doc["kind"] == "Deployment"]
    return doc


def container() -> dict[str, Any]:
    (only,) = deployment()["spec"]["template"]["spec"]["containers"]
    return only


# -- Dockerfile --------------------------------------------------------------------------------------------


def test_every_base_image_is_pinned_to_a_release_tag() -> None:
    images = [args.split()[0] for name, args in dockerfile_instructions() if name == "FROM"]
    assert len(images) >= 2, "multi-stage: build the wheel in one stage, install it in another"
    for image in images:
        assert "$" not in image, f"{image}: no build-arg base images (they escape the pin)"
        assert PINNED_TAG.match(image), (
            f"{image}: pin a full version tag such as python:3.11.11-slim-bookworm"
        )
        assert "slim" in image, f"{image}: use a slim base"
    assert len(set(images)) == 1, "both stages use the same Python, so the venv matches the wheels"


def test_image_runs_dynamem_as_a_numeric_non_root_user() -> None:
    stage = final_stage()
    users = [args for name, args in stage if name == "USER"]
    assert users, "the final stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric uid (runAsNonRoot can only verify numbers), not root"
    assert json.loads(dict(stage)["ENTRYPOINT"]) == ["dynamem"]
    assert json.loads(dict(stage)["CMD"]) == ["run", "-A"]
    parse_options(json.loads(dict(stage)["CMD"])[1:])
    env = " ".join(args for name, args in stage if name == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "no .pyc writes on a read-only root filesystem"


def test_deployment_user_matches_the_image() -> None:
    uid = [args for name, args in final_stage() if name == "USER"][-1].split(":")[0]
    pod = deployment()["spec"]["template"]["spec"]["securityContext"]
    assert str(pod["runAsUser"]) == uid


def test_dockerignore_keeps_what_the_build_needs() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines, "ignore everything by default: a small build context"
    for needed in ("!pyproject.toml", "!operator/", "!README*"):
        assert needed in lines
    copied = [args for name, args in dockerfile_instructions() if name == "COPY"]
    assert any("pyproject.toml" in args for args in copied) and any("operator" in args for args in copied)


# -- Deployment --------------------------------------------------------------------------------------------


def test_deployment_security_context() -> None:
    spec = deployment()["spec"]["template"]["spec"]
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    box = container()["securityContext"]
    assert box["allowPrivilegeEscalation"] is False
    assert box["readOnlyRootFilesystem"] is True
    assert box["capabilities"] == {"drop": ["ALL"]}
    assert box.get("privileged", False) is False
    assert spec.get("hostNetwork", False) is False and spec.get("hostPID", False) is False
    # A read-only root needs somewhere to write: /tmp is an emptyDir (and HOME in the image).
    mounts = {mount["mountPath"]: mount["name"] for mount in container()["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_deployment_has_resources_and_probes() -> None:
    box = container()
    assert {"cpu", "memory"} <= box["resources"]["requests"].keys()
    assert "memory" in box["resources"]["limits"]
    ports = {port["name"]: port["containerPort"] for port in box["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        get = box[probe]["httpGet"]
        assert get["path"] == "/healthz"
        assert ports[get["port"]] == 8081


def test_deployment_args_are_valid_operator_options() -> None:
    box = container()
    assert box["args"][0] == "run"
    options = parse_options(box["args"][1:])
    assert options.all_namespaces and not options.standalone, "cluster-wide, with a Lease between replicas"
    assert options.lease_name == "dynamem"
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in box["env"]}
    assert env["POD_NAMESPACE"] == "metadata.namespace", "the Lease lives in the operator's namespace"
    ports = {port["name"]: port["containerPort"] for port in box["ports"]}
    assert options.metrics_port == ports["metrics"]
    assert options.liveness is not None
    assert options.liveness.endswith(f":{ports['healthz']}/healthz")
    assert deployment()["spec"]["replicas"] == 2
    env = {item["name"]: item for item in box["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    role = [doc for doc in load(BASE / "rbac.yaml") if doc["kind"] == "Role"]
    names = [
        rule.get("resourceNames") for doc in role for rule in doc["rules"] if "leases" in rule["resources"]
    ]
    assert [options.lease_name] in names, "the Role lets the operator renew its Lease by name"


def test_metrics_service_targets_the_metrics_port() -> None:
    (service,) = load(BASE / "service.yaml")
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert [(port["port"], port["targetPort"]) for port in service["spec"]["ports"]] == [(8080, "metrics")]


@pytest.mark.parametrize("path", sorted((ROOT / "manifests").rglob("*.yaml")), ids=lambda p: str(p.name))
def test_no_manifest_mentions_secrets_or_wildcard_rbac(path: Path) -> None:
    for doc in load(path):
        for rule in doc.get("rules", []) if doc.get("kind") in {"ClusterRole", "Role"} else []:
            assert "*" not in rule.get("verbs", []) + rule.get("resources", []) + rule.get("apiGroups", [])
            assert "secrets" not in rule.get("resources", [])
