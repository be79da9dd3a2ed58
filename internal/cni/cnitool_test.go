package cni

import (
	"net/netip"
	"strings"
	"testing"

	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vxflow/vxflow/internal/model"
)

// podResult is the part of an ADD result the tests look at.
type podResult struct {
	ip, gateway  netip.Addr
	bits         int
	podMAC       string
	defaultRoute bool
}

func parsePodResult(t *testing.T, r *types100.Result) podResult {
	t.Helper()
	if len(r.IPs) != 1 || len(r.Interfaces) != 2 {
		t.Fatalf("result has %d IPs and %d interfaces, want 1 and 2: %s", len(r.IPs), len(r.Interfaces), mustJSON(r))
	}
	var pr podResult
	ip, ok := netip.AddrFromSlice(r.IPs[0].Address.IP)
	if !ok {
		t.Fatalf("bad IP in %s", mustJSON(r))
	}
	pr.ip = ip.Unmap()
	pr.bits, _ = r.IPs[0].Address.Mask.Size()
	gw, _ := netip.AddrFromSlice(r.IPs[0].Gateway)
	pr.gateway = gw.Unmap()
	pr.podMAC = r.Interfaces[1].Mac
	for _, rt := range r.Routes {
		if ones, _ := rt.Dst.Mask.Size(); ones == 0 {
			pr.defaultRoute = true
		}
	}
	return pr
}

func netnsName(path string) string { return strings.TrimPrefix(path, "/run/netns/") }

// TestCNIToolTwoPodsTCP is an integration test driven by the upstream cnitool: two pods are added, get
// addresses of the node subnet with the OpenShift MAC, pass TCP to each other through br0, pass CHECK and
// STATUS, and leave nothing behind after DEL.
func TestCNIToolTwoPodsTCP(t *testing.T) {
	n := newTestNode(t, "10.128.0.0/23", 23)
	podA, podB := n.newPod(), n.newPod()
	resA := parsePodResult(t, n.cnitoolAdd(podA, "ns1", "a"))
	resB := parsePodResult(t, n.cnitoolAdd(podB, "ns2", "b"))

	subnet := netip.MustParsePrefix("10.128.0.0/23")
	gateway := netip.MustParseAddr("10.128.0.1")
	for name, res := range map[string]podResult{"a": resA, "b": resB} {
		switch {
		case !subnet.Contains(res.ip):
			t.Errorf("pod %s got %s outside %s", name, res.ip, subnet)
		case res.ip == subnet.Addr() || res.ip == gateway || res.ip == netip.MustParseAddr("10.128.1.255"):
			t.Errorf("pod %s got the reserved address %s", name, res.ip)
		}
		if res.bits != 23 || res.gateway != gateway {
			t.Errorf("pod %s: prefix /%d gateway %s, want /23 via %s", name, res.bits, res.gateway, gateway)
		}
		if want := model.PodMAC(res.ip).String(); res.podMAC != want {
			t.Errorf("pod %s: MAC %s, want %s", name, res.podMAC, want)
		}
		if !res.defaultRoute {
			t.Errorf("pod %s: no default route in the result", name)
		}
	}
	if resA.ip == resB.ip {
		t.Fatalf("both pods got %s", resA.ip)
	}

	// The pod's interface as the kernel and ethtool see it.
	out := n.ovs.MustRun("ip", "-n", netnsName(podA), "-o", "addr", "show", "dev", "eth0")
	if !strings.Contains(out, resA.ip.String()+"/23") {
		t.Errorf("eth0 of pod a lacks its address: %s", out)
	}
	out = n.ovs.MustRun("ip", "-n", netnsName(podA), "route", "show")
	for _, want := range []string{"default via 10.128.0.1 dev eth0", "10.128.0.0/14 dev eth0 scope link", "172.30.0.0/16 via 10.128.0.1 dev eth0"} {
		if !strings.Contains(out, want) {
			t.Errorf("pod a lacks the route %q:\n%s", want, out)
		}
	}
	out = n.ovs.MustRun("ip", "netns", "exec", netnsName(podA), "ethtool", "-k", "eth0")
	if !strings.Contains(out, "tx-checksumming: off") {
		t.Errorf("transmit checksum offload of pod a is not off:\n%s", out)
	}

	if err := tcpRoundTrip(podB, resB.ip.AsSlice(), podA, 1<<20); err != nil {
		t.Fatalf("TCP a→b: %v", err)
	}
	if err := tcpRoundTrip(podA, resA.ip.AsSlice(), podB, 64<<10); err != nil {
		t.Fatalf("TCP b→a: %v", err)
	}
	for _, pod := range []string{podA, podB} {
		if _, err := n.cnitool("check", pod, "", ""); err != nil {
			t.Errorf("CHECK of a healthy pod failed: %v", err)
		}
	}
	if _, err := n.cnitool("status", podA, "", ""); err != nil {
		t.Errorf("STATUS failed: %v", err)
	}
	for _, pod := range []string{podA, podB} {
		if _, err := n.cnitool("del", pod, "", ""); err != nil {
			t.Fatalf("DEL failed: %v", err)
		}
	}
	n.assertClean()
}

// TestChecksumOffloadWorkaround is an integration test of why the setting exists: with transmit checksum
// offload left on in the pods (PodTxChecksum "on"), TCP between two pods on the userspace datapath fails
// (the SYN leaves with a partial checksum and the receiver drops it, lab.md part A §2), while with "auto" (TestCNIToolTwoPodsTCP) the same exchange passes.
func TestChecksumOffloadWorkaround(t *testing.T) {
	n := newTestNode(t, "10.128.0.0/23", 23)
	n.stopServer()
	n.txChecksum = ChecksumOffloadOn
	n.startServer()
	podA, podB := n.newPod(), n.newPod()
	n.cnitoolAdd(podA, "ns1", "a")
	resB := parsePodResult(t, n.cnitoolAdd(podB, "ns2", "b"))
	out := n.ovs.MustRun("ip", "netns", "exec", netnsName(podA), "ethtool", "-k", "eth0")
	if !strings.Contains(out, "tx-checksumming: on") {
		t.Fatalf("offload is not on with PodTxChecksum=on:\n%s", out)
	}
	if err := tcpRoundTrip(podB, resB.ip.AsSlice(), podA, 1024); err == nil {
		t.Fatal("TCP passed with checksum offload on; the workaround would not be needed")
	} else {
		t.Logf("as expected, TCP failed with offload on: %v", err)
	}
}
