package link

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vxflow/vxflow/internal/testutil/ovsnode"
)

// Integration tests: each runs in a network namespace of its own (veth devices stand in for the OVS
// ports, which this package treats like any device); they need root.

// testNS creates a namespace and a Manager for it.
func testNS(t *testing.T, label string) (string, *Manager) {
	t.Helper()
	ns := ovsnode.NewNetNS(t, label)
	m, err := NewInNetNS(ovsnode.NetNSPath(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return ns, m
}

// ipn runs `ip -n ns args...` and returns its output.
func ipn(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s %s: %v: %s", ns, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// routes returns `ip route show dev` as trimmed lines.
func routes(t *testing.T, ns, dev string) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(ipn(t, ns, "-4", "route", "show", "dev", dev)), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

// addDev creates a device called name (a veth with its peer up, since this kernel may lack dummy devices),
// left down like a fresh OVS internal port.
func addDev(t *testing.T, ns, name string, mtu int) {
	t.Helper()
	m := strconv.Itoa(mtu)
	ipn(t, ns, "link", "add", name, "mtu", m, "type", "veth", "peer", "name", name+"-p", "mtu", m)
	ipn(t, ns, "link", "set", name+"-p", "up")
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func requireChanges(t *testing.T, what string, changes []string, err error, want ...string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if strings.Join(changes, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s changes =\n%s\nwant\n%s", what, strings.Join(changes, "\n"), strings.Join(want, "\n"))
	}
}

func TestEnsureTun(t *testing.T) {
	ovsnode.RequireRoot(t)
	ns, m := testNS(t, "tun")
	ctx := context.Background()
	addDev(t, ns, "tun0", 1500)

	cfg := TunConfig{
		Name: "tun0", Gateway: mustPrefix("10.128.2.1/23"), ClusterCIDRs: []netip.Prefix{mustPrefix("10.128.0.0/14")},
		ServiceCIDR: mustPrefix("172.30.0.0/16"), MTU: 1450,
	}
	changes, err := m.EnsureTun(ctx, cfg)
	requireChanges(t, "first EnsureTun", changes, err,
		"set tun0 mtu 1450 (was 1500)",
		"set tun0 up",
		"added address 10.128.2.1/23 to tun0",
		"added route 10.128.0.0/14 dev tun0",
		"added route 172.30.0.0/16 dev tun0",
	)
	if out := ipn(t, ns, "-o", "link", "show", "tun0"); !strings.Contains(out, "mtu 1450") || !strings.Contains(out, ",UP") {
		t.Errorf("tun0 = %s", out)
	}
	if out := ipn(t, ns, "-o", "-4", "addr", "show", "dev", "tun0"); !strings.Contains(out, "inet 10.128.2.1/23") {
		t.Errorf("tun0 addresses = %s", out)
	}
	wantRoutes := "10.128.0.0/14 proto 118 scope link\n172.30.0.0/16 proto 118 scope link"
	if got := strings.Join(routes(t, ns, "tun0"), "\n"); got != wantRoutes {
		t.Errorf("routes on tun0 =\n%s\nwant (no local-subnet route)\n%s", got, wantRoutes)
	}

	changes, err = m.EnsureTun(ctx, cfg)
	requireChanges(t, "second EnsureTun", changes, err)

	// The address put back without noprefixroute, as a script would. Deleting a device's last address makes
	// the kernel drop every route through it, so ours come back too.
	ipn(t, ns, "addr", "del", "10.128.2.1/23", "dev", "tun0")
	ipn(t, ns, "addr", "add", "10.128.2.1/23", "dev", "tun0")
	ipn(t, ns, "route", "add", "192.0.2.0/24", "dev", "tun0", "proto", "static") // someone else's
	changes, err = m.EnsureTun(ctx, cfg)
	requireChanges(t, "EnsureTun after a hand edit", changes, err,
		"deleted kernel route 10.128.2.0/23 dev tun0",
		"added route 10.128.0.0/14 dev tun0",
		"added route 172.30.0.0/16 dev tun0",
	)

	// A second cluster CIDR, then the first removed: only our stale route goes, someone else's stays.
	cfg.ClusterCIDRs = append(cfg.ClusterCIDRs, mustPrefix("10.132.0.0/14"))
	changes, err = m.EnsureTun(ctx, cfg)
	requireChanges(t, "EnsureTun with a new cluster CIDR", changes, err, "added route 10.132.0.0/14 dev tun0")
	cfg.ClusterCIDRs = cfg.ClusterCIDRs[1:]
	// The node's subnet moves into the remaining CIDR: the old gateway address is replaced.
	cfg.Gateway = mustPrefix("10.132.4.1/23")
	changes, err = m.EnsureTun(ctx, cfg)
	requireChanges(t, "EnsureTun with a CIDR removed", changes, err,
		"added address 10.132.4.1/23 to tun0",
		"deleted address 10.128.2.1/23 from tun0",
		"deleted stale route 10.128.0.0/14 dev tun0",
	)
	wantRoutes = "10.132.0.0/14 proto 118 scope link\n172.30.0.0/16 proto 118 scope link\n192.0.2.0/24 proto static scope link"
	if got := strings.Join(routes(t, ns, "tun0"), "\n"); got != wantRoutes {
		t.Errorf("routes on tun0 =\n%s\nwant\n%s", got, wantRoutes)
	}

	// A route to a cluster CIDR made by hand with another protocol is taken over.
	ipn(t, ns, "route", "del", "10.132.0.0/14", "dev", "tun0")
	ipn(t, ns, "route", "add", "10.132.0.0/14", "dev", "tun0", "proto", "static")
	changes, err = m.EnsureTun(ctx, cfg)
	requireChanges(t, "EnsureTun over a hand-made route", changes, err, "added route 10.132.0.0/14 dev tun0")
	if got := routes(t, ns, "tun0")[0]; got != "10.132.0.0/14 proto 118 scope link" {
		t.Errorf("cluster route = %q", got)
	}

	for _, bad := range []TunConfig{
		{Name: "tun0", Gateway: mustPrefix("10.132.4.1/23"), ClusterCIDRs: []netip.Prefix{mustPrefix("10.132.0.1/14")}, ServiceCIDR: mustPrefix("172.30.0.0/16")},
		{Name: "tun0", ClusterCIDRs: []netip.Prefix{mustPrefix("10.132.0.0/14")}, ServiceCIDR: mustPrefix("172.30.0.0/16")},
		{Name: "", Gateway: mustPrefix("10.132.4.1/23"), ServiceCIDR: mustPrefix("172.30.0.0/16")},
	} {
		if _, err := m.EnsureTun(ctx, bad); err == nil {
			t.Errorf("EnsureTun(%+v) succeeded, want an error", bad)
		}
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := m.EnsureTun(short, TunConfig{Name: "tun9", Gateway: cfg.Gateway, ServiceCIDR: cfg.ServiceCIDR}); err == nil ||
		!strings.Contains(err.Error(), "did not appear") {
		t.Errorf("EnsureTun of a missing device = %v", err)
	}
}

func TestGateway(t *testing.T) {
	for _, tc := range []struct{ subnet, want string }{
		{"10.128.2.0/23", "10.128.2.1/23"},
		{"10.128.2.7/23", "10.128.2.1/23"},
		{"10.0.0.0/30", "10.0.0.1/30"},
		{"10.0.0.0/31", ""},
		{"fd00::/64", ""},
	} {
		got, err := Gateway(mustPrefix(tc.subnet))
		if tc.want == "" {
			if err == nil {
				t.Errorf("Gateway(%s) = %s, want an error", tc.subnet, got)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("Gateway(%s) = %s, %v; want %s", tc.subnet, got, err, tc.want)
		}
	}
}

func TestEnsureSysctls(t *testing.T) {
	ovsnode.RequireRoot(t)
	ns, m := testNS(t, "sysctl")
	ctx := context.Background()
	addDev(t, ns, "tun0", 1500)
	hostBefore, _ := os.ReadFile("/proc/sys/net/ipv4/conf/all/arp_ignore")

	get := func(name string) string {
		t.Helper()
		v, err := m.Sysctl(name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// A fresh namespace starts with the kernel defaults.
	if get("net.ipv4.ip_forward") != "0" || get("net.ipv4.conf.all.arp_ignore") != "0" {
		t.Fatalf("unexpected starting values in a new namespace")
	}
	changes, err := m.EnsureSysctls(ctx, SysctlOptions{Tun: "tun0", UserspaceDatapath: true})
	if err != nil {
		t.Fatal(err)
	}
	// Five or six: writing default.send_redirects also resets tun0's, unless tun0's was set explicitly.
	if len(changes) < 5 {
		t.Errorf("EnsureSysctls changes = %q, want at least 5", changes)
	}
	for name, want := range map[string]string{
		"net.ipv4.ip_forward":                  "1",
		"net.ipv4.conf.all.send_redirects":     "0",
		"net.ipv4.conf.default.send_redirects": "0",
		"net.ipv4.conf.tun0.send_redirects":    "0",
		"net.ipv4.conf.all.arp_ignore":         "1",
		"net.ipv4.conf.default.arp_ignore":     "1",
	} {
		// Read back through sysctl(8) in the namespace, independently of the Manager.
		out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-n", name).Output()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("%s = %q, %v; want %s", name, out, err, want)
		}
	}
	changes, err = m.EnsureSysctls(ctx, SysctlOptions{Tun: "tun0", UserspaceDatapath: true})
	requireChanges(t, "second EnsureSysctls", changes, err)
	if hostAfter, _ := os.ReadFile("/proc/sys/net/ipv4/conf/all/arp_ignore"); string(hostAfter) != string(hostBefore) {
		t.Errorf("the test process's own namespace was changed: arp_ignore %q -> %q", hostBefore, hostAfter)
	}
}

func TestPodMTU(t *testing.T) {
	for _, tc := range []struct {
		requested, underlay, want int
		wantErr                   string
	}{
		{0, 1500, 1450, ""},
		{0, 9000, 8950, ""},
		{1400, 1500, 1400, ""},
		{1450, 1500, 1450, ""},
		{1451, 1500, 0, "requested MTU 1451 needs an underlay MTU of at least 1501"},
		{1500, 1500, 0, "needs an underlay MTU of at least 1550"},
		{0, 600, 0, "underlay MTU 600 is too small"},
		{500, 1500, 0, "below the minimum 576"},
		{-1, 1500, 0, "negative"},
	} {
		got, err := PodMTU(tc.requested, tc.underlay)
		if tc.wantErr == "" {
			if err != nil || got != tc.want {
				t.Errorf("PodMTU(%d, %d) = %d, %v; want %d", tc.requested, tc.underlay, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !IsMTUError(err) {
			t.Errorf("PodMTU(%d, %d) = %d, %v; want an MTUError with %q", tc.requested, tc.underlay, got, err, tc.wantErr)
		}
	}
}

func TestMoveAddressesAndUnderlayMTU(t *testing.T) {
	ovsnode.RequireRoot(t)
	ns, m := testNS(t, "ul")
	ctx := context.Background()
	addDev(t, ns, "ul0", 1550)
	ipn(t, ns, "link", "set", "ul0", "up")
	ipn(t, ns, "addr", "add", "192.168.100.1/24", "dev", "ul0")
	ipn(t, ns, "route", "add", "default", "via", "192.168.100.254", "dev", "ul0")
	ipn(t, ns, "route", "add", "198.51.100.0/24", "via", "192.168.100.253", "dev", "ul0", "proto", "static")
	nodeIP := netip.MustParseAddr("192.168.100.1")

	mtu, err := m.UnderlayMTU(nodeIP)
	if err != nil || mtu != 1550 {
		t.Fatalf("UnderlayMTU = %d, %v; want 1550", mtu, err)
	}
	if pod, err := PodMTU(0, mtu); err != nil || pod != 1500 {
		t.Errorf("PodMTU over a 1550 underlay = %d, %v", pod, err)
	}
	if _, err := m.UnderlayMTU(netip.MustParseAddr("192.168.100.9")); err == nil {
		t.Errorf("UnderlayMTU of an absent IP succeeded")
	}

	// The bridge appears later, as ovs-vswitchd would create it.
	go func() {
		time.Sleep(200 * time.Millisecond)
		_ = exec.Command("ip", "-n", ns, "link", "add", "br-ex", "type", "veth", "peer", "name", "br-ex-p").Run()
		_ = exec.Command("ip", "-n", ns, "link", "set", "br-ex-p", "up").Run()
	}()
	changes, err := m.MoveAddresses(ctx, "ul0", "br-ex")
	requireChanges(t, "MoveAddresses", changes, err,
		"set br-ex up",
		"moved address 192.168.100.1/24 from ul0 to br-ex",
		"moved route default from ul0 to br-ex",
		"moved route 198.51.100.0/24 from ul0 to br-ex",
	)
	if out := ipn(t, ns, "-o", "-4", "addr", "show", "dev", "ul0"); strings.TrimSpace(out) != "" {
		t.Errorf("ul0 still has addresses: %s", out)
	}
	want := "192.168.100.0/24 proto kernel scope link src 192.168.100.1\n198.51.100.0/24 via 192.168.100.253 proto static\ndefault via 192.168.100.254"
	if got := strings.Join(routes(t, ns, "br-ex"), "\n"); got != want {
		t.Errorf("routes on br-ex =\n%s\nwant\n%s", got, want)
	}
	changes, err = m.MoveAddresses(ctx, "ul0", "br-ex")
	requireChanges(t, "second MoveAddresses", changes, err)
	// The node IP now lives on the bridge: its MTU is the underlay MTU.
	if mtu, err := m.UnderlayMTU(nodeIP); err != nil || mtu != 1500 {
		t.Errorf("UnderlayMTU after the move = %d, %v; want br-ex's 1500", mtu, err)
	}
}
