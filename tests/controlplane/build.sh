#!/usr/bin/env bash
# Builds the upstream Kubernetes binaries the tests run against (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, helm; kubelet and kube-proxy for the pod
# lab's nodes; containerd and its runc shim as their container runtime) from Go modules at
# pinned versions, and caches them under ${LVSTUN_CACHE:-~/.cache/lvstun}. A second run finds
# the binaries and does nothing.
#
# Each upstream project gets its own wrapper module so their dependency versions never mix.
# Prints the bin directory on the last line of stdout.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.2.10}"

CACHE="${LVSTUN_CACHE:-$HOME/.cache/lvstun}"
export GOMODCACHE="$CACHE/go/mod"
export GOCACHE="$CACHE/go/build"
export GOFLAGS="-mod=mod -modcacherw"
export GOTOOLCHAIN=local
export CGO_ENABLED=0
SRC="$CACHE/go/src"
BIN="$CACHE/bin"
mkdir -p "$SRC" "$BIN"

log() { echo "[controlplane/build] $*" >&2; }

build_k8s() {
  local out="$BIN/k8s-$K8S_VERSION"
  local b have=1
  for b in "${K8S_BINS[@]}"; do [[ -x "$out/$b" ]] || have=0; done
  ((have)) && return
  log "building ${K8S_BINS[*]} $K8S_VERSION (first time: tens of minutes)"
  local dir="$SRC/k8s-$K8S_VERSION"
  mkdir -p "$dir"
  # The release's own go.mod names its staging modules (k8s.io/X => ./staging/src/k8s.io/X);
  # those replaces do not reach a dependent module, so map each to the matching v0.Y.Z release.
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  local staging="v0.${K8S_VERSION#v1.}"
  {
    echo "module lvstun.local/k8s-build"
    echo
    grep -E '^go [0-9]' "$gomod"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    sed -n 's#^\s*\(k8s.io/[A-Za-z0-9._-]*\) => \./staging/.*#\t\1 => \1 '"$staging"'#p' "$gomod"
    echo ")"
  } > "$dir/go.mod"
  cat > "$dir/tools.go" <<'GO'
//go:build tools

// Package tools pins the upstream commands this module builds.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$dir" && { go mod tidy -e >/dev/null 2>&1 || true; })
  mkdir -p "$out.tmp"
  local pkgs=()
  for b in "${K8S_BINS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  # One go build for all six: the packages they share compile once.
  (cd "$dir" && go build -trimpath -tags tools -ldflags "$ld" -o "$out.tmp/" "${pkgs[@]}")
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_etcd() {
  local out="$BIN/etcd-$ETCD_VERSION"
  [[ -x "$out/etcd" ]] && return
  log "building etcd $ETCD_VERSION"
  local dir="$SRC/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  cat > "$dir/go.mod" <<GOMOD
module lvstun.local/etcd-build

go 1.25.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat > "$dir/main.go" <<'GO'
// Command etcd is upstream etcd's server entry point, built from its Go module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$dir" && go mod tidy && mkdir -p "$out.tmp" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" .)
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_helm() {
  local out="$BIN/helm-$HELM_VERSION"
  [[ -x "$out/helm" ]] && return
  log "building helm $HELM_VERSION"
  local dir="$SRC/helm-$HELM_VERSION"
  mkdir -p "$dir"
  cat > "$dir/go.mod" <<GOMOD
module lvstun.local/helm-build

go 1.25.0

require helm.sh/helm/v3 $HELM_VERSION
GOMOD
  cat > "$dir/tools.go" <<'GO'
//go:build tools

// Package tools pins the upstream command this module builds.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
GO
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  (cd "$dir" && { go mod tidy -e >/dev/null 2>&1 || true; })
  mkdir -p "$out.tmp"
  (cd "$dir" && go build -trimpath -tags tools -ldflags "$ld" -o "$out.tmp/helm" helm.sh/helm/v3/cmd/helm)
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# containerd 2.x and its runc shim: the pod lab's container runtime (runc itself is Debian's).
build_containerd() {
  local out="$BIN/containerd-$CONTAINERD_VERSION"
  [[ -x "$out/containerd" && -x "$out/containerd-shim-runc-v2" && -x "$out/ctr" ]] && return
  log "building containerd $CONTAINERD_VERSION"
  local dir="$SRC/containerd-$CONTAINERD_VERSION"
  mkdir -p "$dir"
  cat > "$dir/go.mod" <<GOMOD
module lvstun.local/containerd-build

go 1.25.0

require github.com/containerd/containerd/v2 $CONTAINERD_VERSION
GOMOD
  cat > "$dir/tools.go" <<'GO'
//go:build tools

// Package tools pins the upstream commands this module builds.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
GO
  local ld="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
  (cd "$dir" && { go mod tidy -e >/dev/null 2>&1 || true; })
  mkdir -p "$out.tmp"
  # No cgo: the btrfs snapshotter needs it and the lab uses overlayfs.
  (cd "$dir" && go build -trimpath -tags "tools no_btrfs" -ldflags "$ld" -o "$out.tmp/" \
      github.com/containerd/containerd/v2/cmd/containerd \
      github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
      github.com/containerd/containerd/v2/cmd/ctr)
  rm -rf "$out" && mv "$out.tmp" "$out"
}

K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
build_etcd
build_helm
build_k8s
build_containerd

# One folder with stable names, so tests need no version knowledge.
mkdir -p "$BIN/current"
ln -sf "../etcd-$ETCD_VERSION/etcd" "$BIN/current/etcd"
ln -sf "../helm-$HELM_VERSION/helm" "$BIN/current/helm"
for b in "${K8S_BINS[@]}"; do
  ln -sf "../k8s-$K8S_VERSION/$b" "$BIN/current/$b"
done
for b in containerd containerd-shim-runc-v2 ctr; do
  ln -sf "../containerd-$CONTAINERD_VERSION/$b" "$BIN/current/$b"
done
log "ready in $BIN/current"
echo "$BIN/current"
