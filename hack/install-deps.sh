#!/usr/bin/env bash
# install-deps.sh installs the Debian packages vxflow's tests, lab and demo use, when any is missing:
# Open vSwitch (run by our own scripts with the userspace datapath), nftables, iproute2, conntrack, ethtool,
# tcpdump, iperf3, curl, ping and netcat. Needs root; does nothing when everything is there.
set -euo pipefail
need=()
check() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
check ovs-vswitchd openvswitch-switch
check ovs-ofctl openvswitch-common
check nft nftables
check ip iproute2
check conntrack conntrack
check ethtool ethtool
check tcpdump tcpdump
check iperf3 iperf3
check curl curl
check ping iputils-ping
check nc netcat-openbsd
check python3 python3
check make make
check gcc gcc
if [[ ${#need[@]} -eq 0 ]]; then
  echo "install-deps: everything is installed"
  exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
  echo "install-deps: missing ${need[*]}; run as root (or: sudo apt-get install ${need[*]})" >&2
  exit 1
fi
echo "install-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The package's init scripts cannot start daemons here (no systemd); vxflow starts OVS itself.
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
