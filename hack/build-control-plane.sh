#!/usr/bin/env bash
# build-control-plane.sh builds the real Kubernetes control plane that vxflow's
# tests and lab run against: kube-apiserver, kubectl and kube-proxy from
# k8s.io/kubernetes (staging modules pinned to the matching v0.N.M) and etcd from
# go.etcd.io/etcd/server/v3, all through the Go module proxy.
#
# Usage: hack/build-control-plane.sh [--force] [OUTDIR]      (OUTDIR defaults to bin/k8s)
# Then:  export KUBEBUILDER_ASSETS=OUTDIR
#
# A stamp file records the versions and the Go toolchain; when it matches and
# every binary exists the script returns at once (under a second).
set -euo pipefail

force=0
outdir=""
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option: $arg" >&2; exit 2 ;;
    *) outdir="$arg" ;;
  esac
done
root="$(cd "$(dirname "$0")/.." && pwd)"
outdir="${outdir:-$root/bin/k8s}"
mkdir -p "$outdir"
outdir="$(cd "$outdir" && pwd)"
work="$outdir/.work"
mkdir -p "$work"

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.7.3}"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
# No toolchain downloads, static binaries, and no VCS stamping (work/ sits in our checkout).
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOWORK=off GO111MODULE=on

[[ "$K8S_VERSION" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || { echo "K8S_VERSION must look like v1.N.M, got $K8S_VERSION" >&2; exit 2; }
minor="${BASH_REMATCH[1]}"
staging="v0.${minor}.${BASH_REMATCH[2]}"
bins=(kube-apiserver kubectl kube-proxy etcd)
stamp="k8s=$K8S_VERSION staging=$staging etcd=$ETCD_VERSION go=$("$GO" env GOVERSION) static stamped v1"

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

fresh() {
  [[ "$force" == 0 && -f "$outdir/.stamp" && "$(cat "$outdir/.stamp")" == "$stamp" ]] || return 1
  local b
  for b in "${bins[@]}"; do [[ -x "$outdir/$b" ]] || return 1; done
}

# write_module DIR GOMOD_CONTENT IMPORTS... creates a scratch module whose only job
# is to pin the dependency graph of the commands we build.
write_module() {
  local dir="$1" gomod="$2"; shift 2
  mkdir -p "$dir"
  if ! cmp -s <(printf '%s\n' "$gomod") "$dir/go.mod.src" 2>/dev/null; then
    printf '%s\n' "$gomod" > "$dir/go.mod"
    printf '%s\n' "$gomod" > "$dir/go.mod.src"
    rm -f "$dir/go.sum"
  fi
  { echo '//go:build tools'; echo; echo 'package tools'; echo; echo 'import ('
    local i; for i in "$@"; do echo "	_ \"$i\""; done; echo ')'; } > "$dir/tools.go"
  (cd "$dir" && "$GO" mod tidy) > "$dir/tidy.log" 2>&1 || { tail -30 "$dir/tidy.log" >&2; exit 1; }
}

build() {
  local t0=$SECONDS
  log "downloading k8s.io/kubernetes@$K8S_VERSION"
  local info gomod date
  info="$(cd / && "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION")"
  gomod="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")"
  date="$(sed -n 's/^[[:space:]]*"Time": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")"
  [[ -f "$gomod" ]] || { echo "failed to download k8s.io/kubernetes@$K8S_VERSION: $info" >&2; exit 1; }
  # k8s.io/kubernetes replaces each staging module with ./staging/src/...; as a
  # dependency those paths do not exist, so point each one at its published version.
  local replaces
  replaces="$(awk -v v="$staging" '/=>[[:space:]]*\.\/staging\/src\//{for(i=1;i<=NF;i++) if($i=="=>"){print "\t" $(i-1) " => " $(i-1) " " v; break}}' "$gomod")"
  [[ -n "$replaces" ]] || { echo "failed to find staging replaces in $gomod" >&2; exit 1; }
  write_module "$work/k8s" "module vxflow.local/k8sbins

go 1.26.0

require k8s.io/kubernetes $K8S_VERSION

replace (
$replaces
)" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kube-proxy

  # The same version stamps as Kubernetes' own hack/lib/version.sh: kubectl
  # refuses to parse an unstamped version.
  local ld="-s -w" p c
  for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=${date:-1970-01-01T00:00:00Z}"
  done
  for c in kube-apiserver kubectl kube-proxy; do
    log "building $c"
    (cd "$work/k8s" && "$GO" build -trimpath -ldflags="$ld" -o "$outdir/$c.tmp" "k8s.io/kubernetes/cmd/$c") \
      > "$work/build-$c.log" 2>&1 || { tail -30 "$work/build-$c.log" >&2; exit 1; }
    mv -f "$outdir/$c.tmp" "$outdir/$c"
  done

  # etcd's server module replaces its siblings with ../ paths; as a dependency
  # those replaces are ignored and the siblings come at the same version.
  write_module "$work/etcd" "module vxflow.local/etcdbin

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION" go.etcd.io/etcd/server/v3
  log "building etcd"
  (cd "$work/etcd" && "$GO" build -trimpath -ldflags="-s -w" -o "$outdir/etcd.tmp" go.etcd.io/etcd/server/v3) \
    > "$work/build-etcd.log" 2>&1 || { tail -30 "$work/build-etcd.log" >&2; exit 1; }
  mv -f "$outdir/etcd.tmp" "$outdir/etcd"
  echo "$stamp" > "$outdir/.stamp"
  log "built the control plane in $((SECONDS - t0))s into $outdir"
}

if fresh; then
  log "control plane in $outdir is up to date ($K8S_VERSION, etcd $ETCD_VERSION)"
else
  build
fi
