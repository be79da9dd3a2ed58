package openflow

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vxflow/vxflow/internal/model"
)

// This file checks the renderer against a real Open vSwitch (the integration layer of this package): the
// rendered text must be exactly what the switch prints back, or the applier's diff would rewrite flows
// forever, and the flows must forward as the pipeline says. It needs root and the openvswitch-switch
// binaries; it starts its own ovsdb-server and ovs-vswitchd (userspace datapath) in a network namespace it
// creates and removes.

// testOVS is a private Open vSwitch: its own database, daemons, run directory and network namespace.
type testOVS struct {
	dir   string // OVS_RUNDIR, OVS_LOGDIR and OVS_DBDIR
	netns string
}

var testOVSCount atomic.Int32

// startTestOVS starts ovsdb-server and ovs-vswitchd in a new network namespace with bridge br0 (netdev,
// secure, OpenFlow 1.3), vxlan0 as ofport 1, tun0 as ofport 2 and internal ports as pods on ofports 3 and
// 4; everything is removed when the test ends, also on failure.
func startTestOVS(t *testing.T) *testOVS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to start Open vSwitch in a network namespace")
	}
	for _, bin := range []string{"ip", "ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s (Debian package openvswitch-switch / iproute2): %v", bin, err)
		}
	}
	// A short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "vxof-")
	if err != nil {
		t.Fatalf("failed to create the OVS directory: %v", err)
	}
	o := &testOVS{dir: dir, netns: fmt.Sprintf("vxof-%d-%d", os.Getpid(), testOVSCount.Add(1))}
	t.Cleanup(o.stop)

	o.mustRun(t, "ip", "netns", "add", o.netns)
	o.mustRun(t, "ovsdb-tool", "create", filepath.Join(dir, "conf.db"), "/usr/share/openvswitch/vswitch.ovsschema")
	o.mustRun(t, "ip", "netns", "exec", o.netns, "ovsdb-server", filepath.Join(dir, "conf.db"),
		"--remote=punix:"+o.dbSock(), "--pidfile="+o.pidfile("ovsdb-server"), "--log-file="+filepath.Join(dir, "ovsdb-server.log"),
		"-vconsole:off", "--no-chdir", "--detach")
	o.mustRun(t, "ovs-vsctl", "--db=unix:"+o.dbSock(), "--no-wait", "init")
	o.mustRun(t, "ip", "netns", "exec", o.netns, "ovs-vswitchd", "unix:"+o.dbSock(),
		"--pidfile="+o.pidfile("ovs-vswitchd"), "--log-file="+filepath.Join(dir, "ovs-vswitchd.log"),
		"-vconsole:off", "--no-chdir", "--detach")
	o.mustRun(t, "ovs-vsctl", "--db=unix:"+o.dbSock(), "--timeout=10",
		"add-br", BridgeName, "--", "set", "bridge", BridgeName, "datapath_type=netdev", "fail-mode=secure", "protocols=OpenFlow13",
		"--", "add-port", BridgeName, VXLANPortName, "--", "set", "interface", VXLANPortName, "type=vxlan",
		"options:remote_ip=flow", "options:key=flow", "options:dst_port=4789", fmt.Sprintf("ofport_request=%d", VXLANOFPort),
		"--", "add-port", BridgeName, TunPortName, "--", "set", "interface", TunPortName, "type=internal", fmt.Sprintf("ofport_request=%d", TunOFPort),
		"--", "add-port", BridgeName, "pod3", "--", "set", "interface", "pod3", "type=internal", "ofport_request=3",
		"--", "add-port", BridgeName, "pod4", "--", "set", "interface", "pod4", "type=internal", "ofport_request=4",
		// The underlay: native tunnelling needs the node IP on an OVS bridge (lab.md part A §3), and a port
		// on that bridge to send the encapsulated packet out of.
		"--", "add-br", "br-ex", "--", "set", "bridge", "br-ex", "datapath_type=netdev",
		"--", "add-port", "br-ex", "ul0", "--", "set", "interface", "ul0", "type=internal")
	o.mustRun(t, "ip", "-n", o.netns, "addr", "add", "192.168.100.1/24", "dev", "br-ex")
	o.mustRun(t, "ip", "-n", o.netns, "link", "set", "br-ex", "up")
	for _, vtep := range []string{"192.168.100.2", "192.168.100.3"} {
		o.mustRun(t, "ovs-appctl", "tnl/neigh/set", "br-ex", vtep, "02:00:00:00:00:0"+vtep[len(vtep)-1:])
	}
	return o
}

func (o *testOVS) dbSock() string             { return filepath.Join(o.dir, "db.sock") }
func (o *testOVS) pidfile(name string) string { return filepath.Join(o.dir, name+".pid") }

// run runs an OVS or ip command with this instance's directories in the environment.
func (o *testOVS) run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "OVS_RUNDIR="+o.dir, "OVS_LOGDIR="+o.dir, "OVS_DBDIR="+o.dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("failed to run %s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (o *testOVS) mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := o.run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// stop ends the daemons this instance started (by the PIDs in its own pidfiles, only if they still run
// from its directory), then removes the namespace and the directory.
func (o *testOVS) stop() {
	_, _ = o.run("ovs-appctl", "-t", "ovs-vswitchd", "exit")
	for _, name := range []string{"ovs-vswitchd", "ovsdb-server"} {
		b, err := os.ReadFile(o.pidfile(name))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || !o.owns(pid) {
			continue
		}
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Signal(os.Interrupt)
			for i := 0; i < 50 && o.owns(pid); i++ {
				time.Sleep(100 * time.Millisecond)
			}
			if o.owns(pid) {
				_ = p.Kill()
			}
		}
	}
	_, _ = o.run("ip", "netns", "del", o.netns)
	_ = os.RemoveAll(o.dir)
}

// owns reports whether pid is a live (not zombie) process started with this instance's directory.
func (o *testOVS) owns(pid int) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), o.dir) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, after, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(after, "Z")
}

// load replaces every flow of br0 with fs in one bundle, as the applier's first sync would.
func (o *testOVS) load(t *testing.T, fs FlowSet) {
	t.Helper()
	path := filepath.Join(o.dir, "flows.txt")
	if err := os.WriteFile(path, []byte(fs.String()), 0o600); err != nil {
		t.Fatalf("failed to write the flow file: %v", err)
	}
	o.mustRun(t, "ovs-ofctl", "-O", "OpenFlow13", "del-flows", BridgeName)
	o.mustRun(t, "ovs-ofctl", "-O", "OpenFlow13", "--bundle", "add-flows", BridgeName, path)
}

// dump reads br0's flows back as Flows.
func (o *testOVS) dump(t *testing.T) FlowSet {
	t.Helper()
	out := o.mustRun(t, "ovs-ofctl", "-O", "OpenFlow13", "--no-stats", "--no-names", "dump-flows", BridgeName)
	var fs FlowSet
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, " actions=") {
			continue // blank lines and reply headers
		}
		f, err := parseDumpedFlow(line)
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	fs.Sort()
	return fs
}

// parseDumpedFlow parses one line of `ovs-ofctl --no-stats dump-flows`, for example
// " cookie=0x1010000000000, table=30, priority=200,ip,nw_dst=10.128.0.0/23 actions=goto_table:70";
// OVS leaves out a zero cookie, table 0 and the default priority 32768.
func parseDumpedFlow(line string) (Flow, error) {
	head, acts, _ := strings.Cut(strings.TrimSpace(line), " actions=")
	f := Flow{Actions: acts, Priority: 32768}
	for {
		field, rest, _ := strings.Cut(head, ", ")
		name, value, _ := strings.Cut(field, "=")
		switch name {
		case "cookie":
			c, err := strconv.ParseUint(value, 0, 64)
			if err != nil {
				return Flow{}, fmt.Errorf("failed to parse the cookie of %q: %w", line, err)
			}
			f.Cookie = c
			head = rest
			continue
		case "table":
			n, err := strconv.ParseUint(value, 10, 8)
			if err != nil {
				return Flow{}, fmt.Errorf("failed to parse the table of %q: %w", line, err)
			}
			f.Table = uint8(n)
			head = rest
			continue
		}
		break
	}
	if rest, ok := strings.CutPrefix(head, "priority="); ok {
		prio, match, _ := strings.Cut(rest, ",")
		n, err := strconv.ParseUint(prio, 10, 16)
		if err != nil {
			return Flow{}, fmt.Errorf("failed to parse the priority of %q: %w", line, err)
		}
		f.Priority, head = uint16(n), match
	}
	f.Match = head
	return f, nil
}

// traceHop is one table a traced packet went through.
type traceHop struct {
	table  uint8
	cookie uint64
}

var traceHopRE = regexp.MustCompile(`(?m)^\s*(\d+)\. .*priority \d+, cookie (0x[0-9a-f]+)$`)

// trace runs ofproto/trace and returns the tables the packet visited (across recirculations), the final
// datapath actions and the whole output.
func (o *testOVS) trace(t *testing.T, args []string, packet string) ([]traceHop, string, string) {
	t.Helper()
	out := o.mustRun(t, "ovs-appctl", slices.Concat([]string{"ofproto/trace", BridgeName}, args, []string{packet})...)
	var hops []traceHop
	for _, m := range traceHopRE.FindAllStringSubmatch(out, -1) {
		table, _ := strconv.ParseUint(m[1], 10, 8)
		cookie, _ := strconv.ParseUint(m[2], 0, 64)
		hops = append(hops, traceHop{uint8(table), cookie})
	}
	actions := ""
	if i := strings.LastIndex(out, "Datapath actions: "); i >= 0 {
		actions, _, _ = strings.Cut(out[i+len("Datapath actions: "):], "\n")
	}
	return hops, actions, out
}

func TestOVS(t *testing.T) {
	o := startTestOVS(t)

	t.Run("round-trip", func(t *testing.T) {
		for _, tc := range goldenCases {
			t.Run(tc.name, func(t *testing.T) {
				want := mustRender(t, makeTestInput(tc.mutate...))
				o.load(t, want)
				got := o.dump(t)
				if !slices.Equal(got, want) {
					only, extra := flowDiff(want, got)
					t.Errorf("the switch prints %d flows back differently:\nrendered: %v\ndumped:   %v", len(only), only, extra)
				}
			})
		}
	})

	const (
		macA = "0a:58:0a:80:00:02" // pod-a, 10.128.0.2, ofport 3
		macC = "0a:58:0a:80:00:03" // pod-c, 10.128.0.3, ofport 4
	)
	fromA := "in_port=3,dl_src=" + macA
	vxlanFrom := func(vtep string) string {
		return "tun_src=" + vtep + ",tun_dst=192.168.100.1,tun_id=0x0,in_port=1,"
	}
	node2 := RemoteNodeCookie(netip.MustParsePrefix("10.128.2.0/23"))
	node3 := RemoteNodeCookie(netip.MustParsePrefix("10.128.4.0/23"))
	podA, podC := PodCookie(netip.MustParseAddr("10.128.0.2")), PodCookie(netip.MustParseAddr("10.128.0.3"))
	// What the switch pushes in front of a packet tunnelled to node2 or node3: outer IP, UDP port, VNI 0.
	toVTEP := func(n int) string {
		return fmt.Sprintf("ipv4(src=192.168.100.1,dst=192.168.100.%d,proto=17,", n)
	}
	const vxlanHeader = "udp(src=0,dst=4789,csum=0x0),vxlan(flags=0x8000000,vni=0x0)"
	node := NodeCookie()
	tests := []struct {
		name       string
		system     bool     // three-nodes-system instead of three-nodes
		args       []string // ofproto/trace options
		packet     string
		wantHops   []traceHop
		wantOutput []string // lines the trace must contain
		wantDrop   bool
	}{
		{
			name:       "pod to a remote pod leaves vxlan0 for that node with the VNID",
			packet:     fromA + ",ip,nw_src=10.128.0.2,nw_dst=10.128.2.5",
			wantHops:   []traceHop{{0, node}, {20, podA}, {30, node}, {90, node2}},
			wantOutput: []string{"NXM_NX_TUN_ID[0..31] is now 0", "set_field:192.168.100.2->tun_dst", "output:1", toVTEP(2), vxlanHeader},
		},
		{
			name:       "pod ARP for a remote pod is tunnelled too",
			packet:     fromA + ",arp,arp_op=1,arp_spa=10.128.0.2,arp_sha=" + macA + ",arp_tpa=10.128.4.9",
			wantHops:   []traceHop{{0, node}, {20, podA}, {30, node}, {50, node3}},
			wantOutput: []string{"set_field:192.168.100.3->tun_dst", toVTEP(3), vxlanHeader},
		},
		{
			name:       "pod to a local pod",
			packet:     fromA + ",ip,nw_src=10.128.0.2,nw_dst=10.128.0.3",
			wantHops:   []traceHop{{0, node}, {20, podA}, {30, node}, {70, podC}, {80, node}},
			wantOutput: []string{"-> output port is 4"},
		},
		{
			name:       "pod ARP for the gateway goes to tun0",
			packet:     fromA + ",arp,arp_op=1,arp_spa=10.128.0.2,arp_sha=" + macA + ",arp_tpa=10.128.0.1",
			wantHops:   []traceHop{{0, node}, {20, podA}, {30, node}},
			wantOutput: []string{"output:2"},
		},
		{
			name:     "spoofed source IP is dropped",
			packet:   fromA + ",ip,nw_src=10.128.0.3,nw_dst=10.128.2.5",
			wantHops: []traceHop{{0, node}, {20, node}},
			wantDrop: true,
		},
		{
			name:     "spoofed source MAC is dropped",
			packet:   "in_port=3,dl_src=" + macC + ",ip,nw_src=10.128.0.2,nw_dst=10.128.2.5",
			wantHops: []traceHop{{0, node}, {20, node}},
			wantDrop: true,
		},
		{
			name:     "spoofed ARP is dropped",
			packet:   fromA + ",arp,arp_op=2,arp_spa=10.128.0.3,arp_sha=" + macA + ",arp_tpa=10.128.0.1",
			wantHops: []traceHop{{0, node}, {20, node}},
			wantDrop: true,
		},
		{
			name:     "VXLAN sent by a pod is dropped",
			packet:   "udp," + fromA + ",nw_src=10.128.0.2,nw_dst=192.168.100.2,udp_dst=4789", // ofproto/trace takes udp_dst, not tp_dst
			wantHops: []traceHop{{0, node}, {20, node}},
			wantDrop: true,
		},
		{
			name:     "VXLAN from an unknown VTEP is dropped",
			packet:   vxlanFrom("192.168.100.9") + "ip,nw_src=10.128.2.5,nw_dst=10.128.0.2",
			wantHops: []traceHop{{0, node}, {10, node}},
			wantDrop: true,
		},
		{
			name:       "VXLAN from a known node reaches the pod",
			packet:     vxlanFrom("192.168.100.2") + "ip,nw_src=10.128.2.5,nw_dst=10.128.0.2",
			wantHops:   []traceHop{{0, node}, {10, node2}, {30, node}, {70, podA}, {80, node}},
			wantOutput: []string{"-> output port is 3"},
		},
		{
			name:     "VXLAN for a non-cluster destination is dropped",
			packet:   vxlanFrom("192.168.100.2") + "ip,nw_src=192.168.100.50,nw_dst=203.0.113.10",
			wantHops: []traceHop{{0, node}},
			wantDrop: true,
		},
		{
			name:       "pod to a service goes to tun0",
			packet:     fromA + ",tcp,nw_src=10.128.0.2,nw_dst=172.30.0.10,tp_dst=80",
			wantHops:   []traceHop{{0, node}, {20, podA}, {30, node}, {60, node}},
			wantOutput: []string{"output:2"},
		},
		{
			name:       "pod to outside the cluster leaves through egress to tun0",
			packet:     fromA + ",tcp,nw_src=10.128.0.2,nw_dst=203.0.113.10,tp_dst=443",
			wantHops:   []traceHop{{0, node}, {20, podA}, {30, node}, {100, node}},
			wantOutput: []string{"output:2"},
		},
		{
			name:       "masqueraded service traffic from the host reaches a remote endpoint",
			packet:     "in_port=2,tcp,nw_src=10.128.0.1,nw_dst=10.128.4.7,tp_dst=8080",
			wantHops:   []traceHop{{0, node}, {30, node}, {90, node3}},
			wantOutput: []string{"set_field:192.168.100.3->tun_dst", toVTEP(3), vxlanHeader},
		},
		{
			name:     "multicast forwarded by the host is dropped",
			packet:   "udp,in_port=2,nw_src=192.168.100.50,nw_dst=224.0.0.251,udp_dst=5353",
			wantHops: []traceHop{{0, node}},
			wantDrop: true,
		},
		{
			name:     "multicast from the gateway is dropped by routing",
			packet:   "udp,in_port=2,nw_src=10.128.0.1,nw_dst=224.0.0.251,udp_dst=5353",
			wantHops: []traceHop{{0, node}, {30, node}},
			wantDrop: true,
		},
		{
			name:       "the host reaches a local pod",
			packet:     "tcp,in_port=2,nw_src=10.128.0.1,nw_dst=10.128.0.3,tcp_dst=8080",
			wantHops:   []traceHop{{0, node}, {30, node}, {70, podC}, {80, node}},
			wantOutput: []string{"-> output port is 4"},
		},
		{
			name:       "system datapath: a pod's service traffic back from the host after DNAT is re-tagged",
			system:     true,
			args:       []string{"--ct-next", "trk,new"},
			packet:     "in_port=2,tcp,nw_src=10.128.0.2,nw_dst=10.128.2.5,tp_dst=8080",
			wantHops:   []traceHop{{0, node}, {0, node}, {25, podA}, {30, node}, {90, node2}},
			wantOutput: []string{"set_field:192.168.100.2->tun_dst", toVTEP(2), vxlanHeader},
		},
		{
			name:       "system datapath: the reply to DNATed service traffic is un-NATed inside OVS",
			system:     true,
			args:       []string{"--ct-next", "trk,est,rpl", "--ct-next", "trk,est,rpl"},
			packet:     vxlanFrom("192.168.100.2") + "tcp,nw_src=10.128.2.5,nw_dst=10.128.0.2,tp_src=8080,tp_dst=40000",
			wantHops:   []traceHop{{0, node}, {0, node}, {10, node2}, {30, node}, {70, podA}, {80, node}},
			wantOutput: []string{"ct(table=70,nat)", "-> output port is 3"},
		},
	}
	loaded := ""
	for _, tt := range tests {
		t.Run("trace/"+tt.name, func(t *testing.T) {
			golden := "three-nodes"
			var mutate []func(*model.NodeInput)
			if tt.system {
				golden, mutate = "three-nodes-system", append(mutate, systemDatapath)
			}
			if loaded != golden {
				o.load(t, mustRender(t, makeTestInput(mutate...)))
				loaded = golden
			}
			hops, actions, out := o.trace(t, tt.args, tt.packet)
			if !slices.Equal(hops, tt.wantHops) {
				t.Errorf("packet went through %v, want %v\n%s", hops, tt.wantHops, out)
			}
			for _, s := range tt.wantOutput {
				if !strings.Contains(out, s) {
					t.Errorf("trace lacks %q:\n%s", s, out)
				}
			}
			if tt.wantDrop != (actions == "drop") {
				t.Errorf("datapath actions %q, want drop=%v\n%s", actions, tt.wantDrop, out)
			}
		})
	}
}
