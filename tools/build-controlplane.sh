#!/usr/bin/env bash
# Builds (or reuses) the control-plane binaries tests and the demo run: kube-apiserver, kube-scheduler and etcd
# from the Go module in tools/controlplane/, kwok (the kubelet of simulated nodes) from tools/kwok/, and
# KubeVirt's CRDs printed by tools/kubevirt-crds/. Nothing upstream is committed; everything is built from
# pinned Go modules through the module proxy.
#
# Output: ${DYNAMEM_CACHE:-$HOME/.cache/dynamem}/controlplane/<key>/
#         {kube-apiserver,kube-scheduler,etcd,kwok,kubevirt-crds.yaml}
# The cache lives outside the repository on purpose: CI runs in a fresh clone on the same machine and reuses it.
# A directory is complete only when its COMPLETE marker exists (written last); otherwise it is rebuilt.
#
# Cost (2 cores, 24 GiB): see tools/README.md for the measured cold build time and peak memory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.4
KUBEVIRT_VERSION=v1.7.0
KWOK_VERSION=v0.7.0

# Keep the versions above in step with the go.mod files (a mismatch would mislabel the cache).
grep -q "k8s.io/kubernetes ${K8S_VERSION}\$" "$here/controlplane/go.mod" || { echo "build-controlplane: tools/controlplane/go.mod does not pin k8s.io/kubernetes ${K8S_VERSION}" >&2; exit 1; }
grep -q "go.etcd.io/etcd/server/v3 ${ETCD_VERSION}\$" "$here/controlplane/go.mod" || { echo "build-controlplane: tools/controlplane/go.mod does not pin etcd ${ETCD_VERSION}" >&2; exit 1; }
grep -q "kubevirt.io/kubevirt ${KUBEVIRT_VERSION}\$" "$here/kubevirt-crds/go.mod" || { echo "build-controlplane: tools/kubevirt-crds/go.mod does not pin kubevirt ${KUBEVIRT_VERSION}" >&2; exit 1; }
grep -q "sigs.k8s.io/kwok ${KWOK_VERSION}\$" "$here/kwok/go.mod" || { echo "build-controlplane: tools/kwok/go.mod does not pin kwok ${KWOK_VERSION}" >&2; exit 1; }

key="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kubevirt-${KUBEVIRT_VERSION}_kwok-${KWOK_VERSION}"
cache="${DYNAMEM_CACHE:-$HOME/.cache/dynamem}"
out="$cache/controlplane/$key"
marker="$out/COMPLETE"

if [[ -f "$marker" ]]; then
    echo "build-controlplane: reusing $out"
    exit 0
fi

command -v go >/dev/null || { echo "build-controlplane: 'go' is not on PATH; install Go 1.24 or newer" >&2; exit 1; }
echo "build-controlplane: building into $out (cold builds take many minutes on 2 cores)"
mkdir -p "$out"
tmp="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-X k8s.io/component-base/version.gitVersion=${K8S_VERSION}"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor}"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"

start=$SECONDS
echo "build-controlplane: go build k8s.io/kubernetes/cmd/kube-apiserver@${K8S_VERSION}"
(cd "$here/controlplane" && go build -trimpath -p 2 -ldflags "$ldflags" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
echo "build-controlplane: go build k8s.io/kubernetes/cmd/kube-scheduler@${K8S_VERSION}"
(cd "$here/controlplane" && go build -trimpath -p 2 -ldflags "$ldflags" -o "$tmp/kube-scheduler" k8s.io/kubernetes/cmd/kube-scheduler)
echo "build-controlplane: go build go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
(cd "$here/controlplane" && go build -trimpath -p 2 -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
echo "build-controlplane: go build sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
(cd "$here/kwok" && go build -trimpath -p 2 -o "$tmp/kwok" sigs.k8s.io/kwok/cmd/kwok)
echo "build-controlplane: generating KubeVirt ${KUBEVIRT_VERSION} CRDs"
(cd "$here/kubevirt-crds" && go build -trimpath -p 2 -o "$tmp/kubevirt-crds" .)
"$tmp/kubevirt-crds" > "$tmp/kubevirt-crds.yaml"

"$tmp/kube-apiserver" --version
"$tmp/kube-scheduler" --version
"$tmp/etcd" --version | sed -n 1p  # sed reads it all: head would end the pipe early, and etcd's SIGPIPE fails the script (pipefail)
"$tmp/kwok" --version

mv -f "$tmp/kube-apiserver" "$tmp/kube-scheduler" "$tmp/etcd" "$tmp/kwok" "$tmp/kubevirt-crds.yaml" "$out/"
printf 'k8s %s\netcd %s\nkubevirt %s\nkwok %s\nbuilt %s in %ss\n' "$K8S_VERSION" "$ETCD_VERSION" "$KUBEVIRT_VERSION" \
    "$KWOK_VERSION" "$(date -u +%FT%TZ)" "$((SECONDS - start))" > "$marker"
echo "build-controlplane: done in $((SECONDS - start))s: $out"
