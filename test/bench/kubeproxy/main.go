package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vxflow/vxflow/internal/agent"
)

// Addresses of the benchmark's namespaces. The API server listens on 10.240.0.1, an address on the control
// plane namespace's loopback that both nodes route to through their own veth, so that neither is closer.
const (
	apiAddr     = "10.240.0.1"
	kpAddr      = "10.240.1.2"
	kpGateway   = "10.240.1.1"
	vxAddr      = "10.240.2.2"
	vxGateway   = "10.240.2.1"
	clusterCIDR = "10.128.0.0/14"
	serviceCIDR = "172.30.0.0/16"
	// probeA and probeB are the probe Service's endpoint addresses, held by both nodes' loopback, where a
	// listener answers with the address it was reached on: the DNAT target.
	probeA = "10.199.0.1"
	probeB = "10.199.0.2"
)

type options struct {
	phase        string
	services     int
	endpoints    int
	changes      int
	workers      int
	assets       string
	kubeProxy    string
	kubeconfig   string
	node         string
	nodeIP       string
	nsCP         string
	nsKP         string
	nsVX         string
	out          string
	nftEndpoints string // --nft-endpoints: map, inline or chains
	gogc         string
	gomemlimit   string
	godebug      string
	dump         string
	heap         string
}

func main() {
	var o options
	flag.StringVar(&o.phase, "phase", "", "internal: run (inside the control plane namespace) or driver (vxflow, inside its node namespace)")
	flag.IntVar(&o.services, "services", 10000, "Services to create")
	flag.IntVar(&o.endpoints, "endpoints", 10, "endpoints per Service")
	flag.IntVar(&o.changes, "changes", 20, "single-endpoint changes to time")
	flag.IntVar(&o.workers, "workers", 32, "concurrent API writers while creating objects")
	flag.StringVar(&o.assets, "assets", "bin/k8s", "directory with kube-apiserver, etcd and kube-proxy (hack/build-control-plane.sh)")
	flag.StringVar(&o.kubeProxy, "kube-proxy", "", "kube-proxy binary (default: <assets>/kube-proxy)")
	flag.StringVar(&o.kubeconfig, "driver-kubeconfig", "", "internal: kubeconfig for the driver")
	flag.StringVar(&o.node, "node", "", "internal: the driver's node name")
	flag.StringVar(&o.nodeIP, "node-ip", "", "internal: the driver's node IP")
	flag.StringVar(&o.nsCP, "ns-cp", "", "internal: control plane namespace")
	flag.StringVar(&o.nsKP, "ns-kp", "", "internal: kube-proxy namespace")
	flag.StringVar(&o.nsVX, "ns-vx", "", "internal: vxflow namespace")
	flag.StringVar(&o.out, "out", "", "also write the results as JSON to this file")
	flag.StringVar(&o.nftEndpoints, "nft-endpoints", "map", "vxflow's endpoint layout, as the agent's --nft-endpoints: map (its default), inline or chains")
	flag.StringVar(&o.gogc, "vxflow-gogc", "", "GOGC for the vxflow driver (default: Go's)")
	flag.StringVar(&o.gomemlimit, "vxflow-gomemlimit", "", "GOMEMLIMIT for the vxflow driver (default: none)")
	flag.StringVar(&o.heap, "vxflow-heap-profile", "", "write the vxflow driver's heap profile (live objects after its first sync) to this file, and its log to this file.log")
	flag.StringVar(&o.godebug, "vxflow-godebug", "", "GODEBUG for the vxflow driver, e.g. gctrace=1 (written to its log)")
	flag.StringVar(&o.dump, "dump", "", "write both rulesets, once programmed, to <dump>.kube-proxy.nft and <dump>.vxflow.nft")
	flag.Parse()

	layout, err := agent.NFTEndpointsOptions(o.nftEndpoints)
	switch {
	case err != nil:
	case o.phase == "driver":
		err = runDriver(o.kubeconfig, o.node, netip.MustParseAddr(o.nodeIP), layout, o.heap)
	case o.phase == "run":
		err = run(o)
	case o.phase == "":
		err = setup(o)
	default:
		err = fmt.Errorf("unknown phase %q", o.phase)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// setup creates the three namespaces and their links, runs the benchmark inside the control plane
// namespace and removes everything afterwards, also on failure or interrupt.
func setup(o options) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces, nftables)")
	}
	var err error
	if o.assets, err = filepath.Abs(o.assets); err != nil {
		return err
	}
	if o.heap != "" {
		if o.heap, err = filepath.Abs(o.heap); err != nil {
			return err
		}
	}
	if o.kubeProxy == "" {
		o.kubeProxy = filepath.Join(o.assets, "kube-proxy")
	}
	for _, b := range []string{filepath.Join(o.assets, "kube-apiserver"), filepath.Join(o.assets, "etcd"), o.kubeProxy} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("failed to find %s (run hack/build-control-plane.sh): %w", b, err)
		}
	}
	for _, b := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("failed to find %s: %w", b, err)
		}
	}
	pid := os.Getpid()
	o.nsCP, o.nsKP, o.nsVX = fmt.Sprintf("vxkp-%d-cp", pid), fmt.Sprintf("vxkp-%d-kp", pid), fmt.Sprintf("vxkp-%d-vx", pid)
	var created []string
	defer func() {
		for _, ns := range created {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "failed to delete netns %s: %v: %s\n", ns, err, out)
			}
		}
	}()
	// An interrupt must still run the deferred cleanup: the child gets it too and exits.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM)
	for _, ns := range []string{o.nsCP, o.nsKP, o.nsVX} {
		if err := sh("ip", "netns", "add", ns); err != nil {
			return err
		}
		created = append(created, ns)
	}
	steps := [][]string{
		{"ip", "-n", o.nsCP, "link", "set", "lo", "up"},
		{"ip", "-n", o.nsCP, "addr", "add", apiAddr + "/32", "dev", "lo"},
	}
	for _, n := range []struct{ ns, addr, gw, link string }{{o.nsKP, kpAddr, kpGateway, "to-kp"}, {o.nsVX, vxAddr, vxGateway, "to-vx"}} {
		steps = append(steps,
			[]string{"ip", "-n", n.ns, "link", "set", "lo", "up"},
			[]string{"ip", "-n", o.nsCP, "link", "add", n.link, "type", "veth", "peer", "name", "eth0", "netns", n.ns},
			[]string{"ip", "-n", o.nsCP, "addr", "add", n.gw + "/24", "dev", n.link},
			[]string{"ip", "-n", o.nsCP, "link", "set", n.link, "up"},
			[]string{"ip", "-n", n.ns, "addr", "add", n.addr + "/24", "dev", "eth0"},
			[]string{"ip", "-n", n.ns, "link", "set", "eth0", "up"},
			[]string{"ip", "-n", n.ns, "route", "add", apiAddr + "/32", "via", n.gw},
			// Local connections to ClusterIPs need a route before the output hook DNATs them.
			[]string{"ip", "-n", n.ns, "route", "add", serviceCIDR, "dev", "eth0"},
			[]string{"ip", "-n", n.ns, "route", "add", "default", "via", n.gw},
			[]string{"ip", "-n", n.ns, "addr", "add", probeA + "/32", "dev", "lo"},
			[]string{"ip", "-n", n.ns, "addr", "add", probeB + "/32", "dev", "lo"},
		)
	}
	for _, s := range steps {
		if err := sh(s...); err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"netns", "exec", o.nsCP, self, "-phase=run",
		fmt.Sprintf("-services=%d", o.services), fmt.Sprintf("-endpoints=%d", o.endpoints),
		fmt.Sprintf("-changes=%d", o.changes), fmt.Sprintf("-workers=%d", o.workers),
		"-assets=" + o.assets, "-kube-proxy=" + o.kubeProxy, "-out=" + o.out,
		"-nft-endpoints=" + o.nftEndpoints, "-vxflow-gogc=" + o.gogc, "-vxflow-gomemlimit=" + o.gomemlimit, "-vxflow-godebug=" + o.godebug, "-vxflow-heap-profile=" + o.heap, "-dump=" + o.dump,
		"-ns-cp=" + o.nsCP, "-ns-kp=" + o.nsKP, "-ns-vx=" + o.nsVX}
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}

// sh runs a command and returns its output in the error.
func sh(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}
