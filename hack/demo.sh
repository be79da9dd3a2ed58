#!/usr/bin/env bash
# demo.sh brings up vxflow's lab on this machine and walks the seed's packet through it (up), or removes
# everything the lab made (down). `make demo` / `make demo-down` call it; it needs root.
#
#   up    install missing Debian packages, build vxflow-lab (make builds the rest), replace any earlier lab
#         of the same name, bring up the control plane, 3 nodes, the controller and the agents, create
#         ClusterNetwork default, pods and the seed Service almighty/almighty5 (LoadBalancer 10.10.12.208:8080,
#         backend on node2), reach it from the external client and from a pod on node1, print every hop,
#         and leave the lab running.
#   down  stop the lab's processes (by PID), delete its namespaces and its state directory.
#
# LAB names the lab (default vxl: namespaces vxl-*, state in .lab/vxl).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export GOTOOLCHAIN=local
export LAB="${LAB:-vxl}"
lab=(bin/vxflow-lab --name "$LAB")

need_root() {
  if [[ "$(id -u)" != 0 ]]; then
    echo "demo: run as root (sudo make demo): the lab creates network namespaces and runs Open vSwitch" >&2
    exit 1
  fi
}

build_lab() {
  if [[ ! -x bin/vxflow-lab ]] || [[ -n "$(find test/lab -name '*.go' -newer bin/vxflow-lab -print -quit)" ]]; then
    go build -o bin/vxflow-lab ./test/lab/cmd/vxflow-lab
  fi
}

case "${1:-up}" in
up)
  need_root
  start=$SECONDS
  hack/install-deps.sh
  [[ -x bin/k8s/kube-apiserver ]] || hack/build-control-plane.sh bin/k8s
  bindir="${VXFLOW_BIN_DIR:-bin}"   # the lab reads the same variable
  for c in vxflow-controller vxflow-agent vxflow-cni vxflowctl; do
    [[ -x $bindir/$c ]] || go build -o "$bindir/" "./cmd/$c" || echo "demo: cannot build $c yet; the lab runs without it" >&2
  done
  build_lab
  "${lab[@]}" down >/dev/null
  "${lab[@]}" up
  "${lab[@]}" demo
  echo "demo: ready in $((SECONDS - start))s"
  ;;
down)
  need_root
  build_lab
  "${lab[@]}" down
  ;;
*)
  echo "usage: hack/demo.sh up|down" >&2
  exit 2
  ;;
esac
