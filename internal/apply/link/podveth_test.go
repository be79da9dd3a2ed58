package link

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/vxflow/vxflow/internal/testutil/ovsnode"
)

// Integration tests of the pod veth functions: a "node" and a "pod" network namespace each; they need root.

// podIPCmd runs `ip -n ns args...` and returns its output.
func podIPCmd(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s %s: %v: %s", ns, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func testPodSpec(node, pod string) PodVethSpec {
	return PodVethSpec{
		HostNetNS:  ovsnode.NetNSPath(node),
		PodNetNS:   ovsnode.NetNSPath(pod),
		IfName:     "eth0",
		HostIfName: "vethtest0001",
		MTU:        1450,
		MAC:        []byte{0x0a, 0x58, 10, 128, 0, 5},
		Address:    netip.MustParsePrefix("10.128.0.5/23"),
		Routes: []PodRoute{
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.128.0.1")},
			{Dst: netip.MustParsePrefix("10.128.0.0/14")},
			{Dst: netip.MustParsePrefix("172.30.0.0/16"), Gateway: netip.MustParseAddr("10.128.0.1")},
		},
		DisableTxChecksum: true,
	}
}

// TestSetupPodVeth checks creation, idempotence, CHECK's findings after hand edits, repair and deletion.
func TestSetupPodVeth(t *testing.T) {
	node, pod := ovsnode.NewNetNS(t, "lnode"), ovsnode.NewNetNS(t, "lpod")
	spec := testPodSpec(node, pod)
	v1, err := SetupPodVeth(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckPodInterface(spec); err != nil {
		t.Fatalf("CHECK after setup: %v", err)
	}
	out := podIPCmd(t, pod, "-d", "link", "show", "eth0")
	for _, want := range []string{"mtu 1450", "0a:58:0a:80:00:05", "state UP", "veth"} {
		if !strings.Contains(out, want) {
			t.Errorf("eth0 lacks %q: %s", want, out)
		}
	}
	if out := podIPCmd(t, node, "link", "show", "vethtest0001"); !strings.Contains(out, "mtu 1450") || !strings.Contains(out, "UP") {
		t.Errorf("host end: %s", out)
	}
	if out := podIPCmd(t, pod, "route"); !strings.Contains(out, "10.128.0.0/14 dev eth0 scope link") ||
		!strings.Contains(out, "default via 10.128.0.1 dev eth0") || !strings.Contains(out, "172.30.0.0/16 via 10.128.0.1") {
		t.Errorf("routes: %s", out)
	}
	v2, err := SetupPodVeth(spec)
	if err != nil || v2.HostMAC.String() != v1.HostMAC.String() {
		t.Fatalf("second setup: %v, host MAC %s → %s", err, v1.HostMAC, v2.HostMAC)
	}

	for _, tc := range []struct {
		name  string
		edit  []string // ip -n pod ...
		wants string
	}{
		{"address", []string{"addr", "flush", "dev", "eth0"}, "eth0 lacks address 10.128.0.5/23"},
		{"route", []string{"route", "del", "172.30.0.0/16"}, "route 172.30.0.0/16 via 10.128.0.1 dev eth0 is missing"},
		{"mtu", []string{"link", "set", "eth0", "mtu", "1500"}, "eth0 has MTU 1500, want 1450"},
		{"down", []string{"link", "set", "eth0", "down"}, "eth0 is down"},
		{"mac", []string{"link", "set", "eth0", "address", "02:00:00:00:00:01"}, "eth0 has MAC 02:00:00:00:00:01, want 0a:58:0a:80:00:05"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			podIPCmd(t, pod, tc.edit...)
			err := CheckPodInterface(spec)
			if err == nil || !strings.Contains(err.Error(), tc.wants) {
				t.Fatalf("CHECK = %v, want %q", err, tc.wants)
			}
			if _, err := SetupPodVeth(spec); err != nil {
				t.Fatalf("repair: %v", err)
			}
			if err := CheckPodInterface(spec); err != nil {
				t.Fatalf("CHECK after repair: %v", err)
			}
		})
	}
	if out, err := exec.Command("ip", "netns", "exec", pod, "ethtool", "-K", "eth0", "tx", "on").CombinedOutput(); err != nil {
		t.Fatalf("ethtool: %v: %s", err, out)
	}
	if err := CheckPodInterface(spec); err == nil || !strings.Contains(err.Error(), "transmit checksum offload on") {
		t.Errorf("CHECK with tx on = %v", err)
	}

	if err := DeletePodVeth(spec.HostNetNS, spec.HostIfName); err != nil {
		t.Fatal(err)
	}
	if err := DeletePodVeth(spec.HostNetNS, spec.HostIfName); err != nil {
		t.Errorf("second delete: %v", err)
	}
	if ok, err := PodVethExists(spec.HostNetNS, spec.HostIfName); err != nil || ok {
		t.Errorf("veth exists after delete: %v %v", ok, err)
	}
	if out := podIPCmd(t, pod, "link", "show"); strings.Contains(out, "eth0") {
		t.Errorf("pod end survived: %s", out)
	}
	if err := CheckPodInterface(spec); err == nil || !strings.Contains(err.Error(), "host veth vethtest0001 is missing") {
		t.Errorf("CHECK after delete = %v", err)
	}
}

// TestSetupPodVethConflicts checks the refusals: IfName taken in the pod by something else, a host name
// that is not a veth; and that a stale host end (pod end gone) is replaced.
func TestSetupPodVethConflicts(t *testing.T) {
	node, pod := ovsnode.NewNetNS(t, "lnode"), ovsnode.NewNetNS(t, "lpod")
	spec := testPodSpec(node, pod)

	podIPCmd(t, pod, "link", "add", "eth0", "type", "bridge")
	if _, err := SetupPodVeth(spec); err == nil || !strings.Contains(err.Error(), "already exists and is not the peer of vethtest0001") {
		t.Errorf("setup over a bridge eth0 = %v", err)
	}
	podIPCmd(t, pod, "link", "del", "eth0")

	podIPCmd(t, node, "link", "add", "vethtest0001", "type", "bridge")
	if _, err := SetupPodVeth(spec); err == nil || !strings.Contains(err.Error(), "is a bridge, not a veth") {
		t.Errorf("setup over a bridge host end = %v", err)
	}
	if err := DeletePodVeth(spec.HostNetNS, spec.HostIfName); err == nil {
		t.Error("DeletePodVeth deleted a bridge")
	}
	podIPCmd(t, node, "link", "del", "vethtest0001")

	// A stale pair: the host end's peer is in the node namespace, not in the pod.
	podIPCmd(t, node, "link", "add", "vethtest0001", "type", "veth", "peer", "name", "leftover")
	if _, err := SetupPodVeth(spec); err != nil {
		t.Fatalf("setup over a stale host end: %v", err)
	}
	if err := CheckPodInterface(spec); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if out := podIPCmd(t, node, "link", "show"); strings.Contains(out, "leftover") {
		t.Errorf("the stale pair survived: %s", out)
	}
	if ok, err := PodNetNSExists(spec.PodNetNS); !ok || err != nil {
		t.Errorf("PodNetNSExists(pod) = %v, %v", ok, err)
	}
	if ok, err := PodNetNSExists("/run/netns/does-not-exist"); ok || err != nil {
		t.Errorf("PodNetNSExists(missing) = %v, %v", ok, err)
	}
	if ok, _ := PodNetNSExists("/tmp"); ok {
		t.Error("PodNetNSExists(/tmp) = true")
	}
}
