#!/usr/bin/env bash
# test.sh runs every Go test of the repository against the real components: envtest on the control plane in
# bin/k8s, and, as root, Open vSwitch (userspace datapath) and nf_tables inside network namespaces the tests
# create. Tests that need root skip themselves otherwise, saying so.
#
# Usage: hack/test.sh [extra go test flags]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export KUBEBUILDER_ASSETS="${KUBEBUILDER_ASSETS:-$root/bin/k8s}"
export GOTOOLCHAIN=local
[[ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]] || { echo "no control plane in $KUBEBUILDER_ASSETS: run 'make control-plane'" >&2; exit 1; }
if [[ "$(id -u)" != 0 ]]; then
  echo "note: not root: the OVS, nftables and netns tests will skip; run as root to prove the data plane" >&2
fi
start=$SECONDS
# -p 2: the machine has two cores; each test package cleans up what it creates, so packages may overlap.
go test -race -count=1 -p 2 -timeout 40m "$@" ./...
echo "all tests passed in $((SECONDS - start))s"
