#!/usr/bin/env bash
# run.sh compares vxflow's Service NAT syncer with kube-proxy (nftables mode) on the same envtest API
# server and prints the figures and their ratios (docs/performance.md, "Service NAT (nftables)").
#
# Usage (as root): test/bench/kubeproxy/run.sh [-services N] [-endpoints M] [-changes K] [-nft-endpoints map|inline|chains] ...
# It builds the control plane first if needed (hack/build-control-plane.sh) and removes every namespace and
# process it starts, also when interrupted.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$root"
[[ "$(id -u)" == 0 ]] || { echo "needs root (network namespaces, nftables)" >&2; exit 1; }
hack/build-control-plane.sh bin/k8s >/dev/null
bin="$(mktemp -d)/kpbench"
trap 'rm -rf "$(dirname "$bin")"' EXIT
GOTOOLCHAIN=local go build -o "$bin" ./test/bench/kubeproxy
"$bin" -assets bin/k8s "$@"
