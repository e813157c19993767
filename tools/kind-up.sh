#!/usr/bin/env bash
# A kind cluster with KubeVirt and dynamem, for trying dynamem on a laptop (`make kind`). Needs Docker, kind
# and kubectl on the PATH; x86_64 (KubeVirt hotplugs memory on amd64 only). Not run by CI.
#
#   1. kind cluster "dynamem" (override: DYNAMEM_KIND_CLUSTER): one control plane and two workers, because
#      every memory change is a live migration, which needs a second node to go to.
#   2. KubeVirt ${KUBEVIRT_VERSION} (operator + CR) with what memory hotplug needs: vmRolloutStrategy LiveUpdate,
#      workloadUpdateMethods [LiveMigrate], and software emulation (kind nodes usually have no /dev/kvm).
#   3. docker build -t dynamem:dev, kind load, then manifests/kind: CRDs, dynamem (2 replicas), a small
#      Prometheus scraping virt-handler and dynamem.
#   4. manifests/examples: the seed's finance, sales and engineering VMs (1Gi, up to 4Gi) in dynamem-demo.
#
# Re-running is safe: an existing cluster is reused and everything is applied again.
set -euo pipefail

CLUSTER="${DYNAMEM_KIND_CLUSTER:-dynamem}"
KUBEVIRT_VERSION="${KUBEVIRT_VERSION:-v1.7.0}"
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-}"   # empty: the default node image of your kind release
IMAGE="dynamem:dev"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KUBEVIRT_URL="https://github.com/kubevirt/kubevirt/releases/download/${KUBEVIRT_VERSION}"

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'kind-up: %s\n' "$*" >&2; exit 1; }
k() { kubectl --context "kind-${CLUSTER}" "$@"; }

for tool in docker kind kubectl; do
    command -v "$tool" >/dev/null || die "$tool is not on the PATH (this script needs Docker, kind and kubectl)"
done
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (is it running, may you use it?)"
[[ "$(uname -m)" == "x86_64" ]] || log "warning: $(uname -m): KubeVirt memory hotplug works on amd64 only"

if kind get clusters 2>/dev/null | grep -x "$CLUSTER" >/dev/null; then
    log "kind cluster ${CLUSTER} exists; reusing it"
else
    log "creating kind cluster ${CLUSTER} (1 control plane, 2 workers)"
    image_args=()
    [[ -n "$KIND_NODE_IMAGE" ]] && image_args=(--image "$KIND_NODE_IMAGE")
    # ${a[@]+"${a[@]}"}: an empty array is "unbound" under set -u in bash 3.2 (macOS).
    kind create cluster --name "$CLUSTER" ${image_args[@]+"${image_args[@]}"} --wait 120s --config - <<'KIND'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
  - role: worker
KIND
fi

log "installing KubeVirt ${KUBEVIRT_VERSION}"
# Server-side apply: KubeVirt's CRD is too large for client-side apply's last-applied annotation.
k apply --server-side --force-conflicts -f "${KUBEVIRT_URL}/kubevirt-operator.yaml"
k -n kubevirt rollout status deployment/virt-operator --timeout=300s
k apply --server-side --force-conflicts -f "${KUBEVIRT_URL}/kubevirt-cr.yaml"
k -n kubevirt patch kubevirt kubevirt --type merge --patch '
{
  "spec": {
    "configuration": {
      "vmRolloutStrategy": "LiveUpdate",
      "developerConfiguration": {"useEmulation": true}
    },
    "workloadUpdateStrategy": {"workloadUpdateMethods": ["LiveMigrate"]}
  }
}'
log "waiting for KubeVirt to become Available (several minutes on a first run)"
k -n kubevirt wait kubevirt/kubevirt --for=condition=Available --timeout=900s

log "building ${IMAGE} and loading it into kind"
DOCKER_BUILDKIT=1 docker build --tag "$IMAGE" "$ROOT"
kind load docker-image "$IMAGE" --name "$CLUSTER"

log "installing dynamem (CRDs first, then manifests/kind)"
k apply --server-side -k "$ROOT/crds"
k wait --for=condition=Established --timeout=60s \
    crd/virtualmachinememories.dynamem.io
k apply --server-side -k "$ROOT/manifests/kind"
# A rebuilt dynamem:dev keeps its tag: restart so the pods pick the new image up.
k -n dynamem-system rollout restart deployment/dynamem
k -n dynamem-system rollout status deployment/prometheus --timeout=300s
k -n dynamem-system rollout status deployment/dynamem --timeout=300s

if k -n dynamem-demo get virtualmachine finance >/dev/null 2>&1; then
    # Applying again would take memory.guest back from dynamem (a conflict, or a reset with --force-conflicts).
    log "example VMs exist in dynamem-demo; not applied again (dynamem owns their memory.guest now)"
else
    log "creating the example VMs in namespace dynamem-demo"
    # kubectl keeps owning the memory.guest it applies: manifests/kind runs dynamem with --force-ownership.
    k apply --server-side -k "$ROOT/manifests/examples"
fi

cat >&2 <<EOF_NEXT

dynamem is running in kind cluster ${CLUSTER} (context kind-${CLUSTER}). Next:
  kubectl --context kind-${CLUSTER} -n dynamem-demo get vmi,vmmem -w
  kubectl --context kind-${CLUSTER} -n dynamem-system logs deploy/dynamem -f
  kubectl --context kind-${CLUSTER} -n dynamem-system port-forward svc/prometheus 9090
  virtctl --context kind-${CLUSTER} -n dynamem-demo console finance     # user fedora, password fedora
Delete everything: kind delete cluster --name ${CLUSTER}
EOF_NEXT
