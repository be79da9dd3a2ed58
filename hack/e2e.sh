#!/usr/bin/env bash
# e2e.sh runs vxflow's end-to-end suite (test/e2e, build tag e2e) on the network-namespace lab: it builds
# vxflow-lab and the suite, brings up a lab named $LAB (default e2e: namespaces e2e-*, state in .lab/e2e),
# runs every check, prints `N passed, N failed` and removes the lab (E2E_KEEP=1 leaves it running).
# Needs root; `make e2e` builds the control plane and vxflow's binaries first.
#
# Usage: hack/e2e.sh [extra test binary flags, e.g. -test.run 'TestE2E/pod_to_pod']
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export GOTOOLCHAIN=local
export KUBEBUILDER_ASSETS="${KUBEBUILDER_ASSETS:-$root/bin/k8s}"
if [[ "$(id -u)" != 0 ]]; then
  echo "e2e: needs root (network namespaces, Open vSwitch, nf_tables)" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
hack/install-deps.sh
for b in kube-apiserver etcd; do
  [[ -x "$KUBEBUILDER_ASSETS/$b" ]] || { echo "e2e: no $b in $KUBEBUILDER_ASSETS: run 'make control-plane'" >&2; exit 1; }
done
go build -o bin/vxflow-lab ./test/lab/cmd/vxflow-lab
go test -c -tags e2e -o bin/e2e.test ./test/e2e
# The test binary runs directly (not through go test), so its check lines stream as they happen.
start=$SECONDS
rc=0
bin/e2e.test -test.timeout 30m "$@" || rc=$?
echo "e2e: finished in $((SECONDS - start))s (rc $rc)"
exit "$rc"
