package cni

import (
	"context"
	"crypto/sha512"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/vxflow/vxflow/internal/cni/wire"
	"github.com/vxflow/vxflow/internal/render/openflow"
)

// TestCheckReportsBrokenPod is an integration test: CHECK (cnitool) passes on a healthy pod and fails with
// the reason after the pod's flows, its address or its OVS port are removed by hand; ADD repairs each.
func TestCheckReportsBrokenPod(t *testing.T) {
	n := newTestNode(t, "10.128.0.0/23", 23)
	pod := n.newPod()
	res := parsePodResult(t, n.cnitoolAdd(pod, "ns1", "a"))
	if _, err := n.cnitool("check", pod, "ns1", "a"); err != nil {
		t.Fatalf("CHECK of a healthy pod failed: %v", err)
	}
	cookie := fmt.Sprintf("cookie=%#x/-1", openflow.PodCookie(res.ip))
	hostVeth := HostVethName(cnitoolContainerID(pod), "eth0")
	for _, tc := range []struct {
		name     string
		breakPod func()
		want     []string
	}{{
		name:     "flows deleted",
		breakPod: func() { n.ovs.Ofctl("del-flows", "br0", cookie) },
		want:     []string{"the network of pod ns1/a", "the flows of " + res.ip.String(), "are missing from br0"},
	}, {
		name:     "address deleted",
		breakPod: func() { n.ovs.MustRun("ip", "-n", netnsName(pod), "addr", "del", res.ip.String()+"/23", "dev", "eth0") },
		want:     []string{"eth0 lacks address " + res.ip.String() + "/23", "route default via 10.128.0.1 dev eth0 is missing"},
	}, {
		name:     "port deleted",
		breakPod: func() { n.ovs.Vsctl("del-port", "br0", hostVeth) },
		want:     []string{"OVS port " + hostVeth + " is missing from br0"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			tc.breakPod()
			_, err := n.cnitool("check", pod, "ns1", "a")
			if err == nil {
				t.Fatal("CHECK passed on a broken pod")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("CHECK's error lacks %q: %v", w, err)
				}
			}
			// A repeated ADD repairs the pod (same address), and CHECK passes again.
			again := parsePodResult(t, n.cnitoolAdd(pod, "ns1", "a"))
			if again.ip != res.ip {
				t.Errorf("repeated ADD gave %s, want %s", again.ip, res.ip)
			}
			if _, err := n.cnitool("check", pod, "ns1", "a"); err != nil {
				t.Errorf("CHECK after the repairing ADD failed: %v", err)
			}
		})
	}
	if _, err := n.cnitool("del", pod, "ns1", "a"); err != nil {
		t.Fatal(err)
	}
	n.assertClean()
}

// cnitoolContainerID is the container ID cnitool derives from the netns path.
func cnitoolContainerID(netnsPath string) string {
	s := sha512.Sum512([]byte(netnsPath))
	return fmt.Sprintf("cnitool-%x", s[:10])
}

// TestAddTwiceAndUnknownDel is an integration test through libcni: a second ADD of the same attachment
// returns the same address and keeps the same port; DEL of an attachment nobody added succeeds; DEL twice
// succeeds.
func TestAddTwiceAndUnknownDel(t *testing.T) {
	n := newTestNode(t, "10.128.0.0/23", 23)
	c, list := n.libcni()
	ctx := context.Background()
	pod := n.newPod()
	rt := runtimeConf("add-twice", pod, "ns1", "twice")
	r1, err := c.AddNetworkList(ctx, list, rt)
	if err != nil {
		t.Fatal(err)
	}
	ports1, err := n.sw.ListPodPorts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := c.AddNetworkList(ctx, list, rt)
	if err != nil {
		t.Fatalf("second ADD failed: %v", err)
	}
	ports2, err := n.sw.ListPodPorts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res1, _ := types100.GetResult(r1)
	res2, _ := types100.GetResult(r2)
	if mustJSON(res1) != mustJSON(res2) {
		t.Errorf("second ADD returned another result:\n%s\n%s", mustJSON(res1), mustJSON(res2))
	}
	if len(ports1) != 1 || mustJSON(ports1) != mustJSON(ports2) {
		t.Errorf("ports changed across the second ADD: %v → %v", ports1, ports2)
	}
	if got := ports1[0].ExternalIDs; got[ExternalIDSandbox] != "add-twice" || got[ExternalIDPodNamespace] != "ns1" ||
		got[ExternalIDPodName] != "twice" || got[ExternalIDIP] != parsePodResult(t, res1).ip.String() || got[ExternalIDIfName] != "eth0" {
		t.Errorf("port external_ids = %v", got)
	}
	if recs := n.records(); len(recs) != 1 {
		t.Errorf("records after two ADDs: %v", recs)
	}
	if err := c.CheckNetworkList(ctx, list, rt); err != nil {
		t.Errorf("CHECK failed: %v", err)
	}
	n.ovs.Ofctl("del-flows", "br0", fmt.Sprintf("cookie=%#x/-1", openflow.PodCookie(parsePodResult(t, res1).ip)))
	if err := c.CheckNetworkList(ctx, list, rt); cniCode(err) != wire.CodeCheckFailed || !strings.Contains(err.Error(), "are missing from br0") {
		t.Errorf("CHECK without flows: code %d, %v", cniCode(err), err)
	}

	if err := c.DelNetworkList(ctx, list, runtimeConf("never-added", "", "ns1", "ghost")); err != nil {
		t.Errorf("DEL of an unknown attachment failed: %v", err)
	}
	if err := c.DelNetworkList(ctx, list, rt); err != nil {
		t.Fatal(err)
	}
	if err := c.DelNetworkList(ctx, list, rt); err != nil {
		t.Errorf("second DEL failed: %v", err)
	}
	n.assertClean()
}

// TestConcurrentAddDel50 is an integration test: 50 pods are added at once through libcni (50 plugin
// processes), each gets a distinct address, port and flows; then all are deleted at once and no address,
// port, flow or veth is left.
func TestConcurrentAddDel50(t *testing.T) {
	const pods = 50
	n := newTestNode(t, "10.128.0.0/23", 23)
	c, list := n.libcni()
	ctx := context.Background()
	rts := make([]*libcni.RuntimeConf, pods)
	for i := range rts {
		rts[i] = runtimeConf(fmt.Sprintf("conc-%02d", i), n.newPod(), "ns", fmt.Sprintf("p%02d", i))
	}
	ips := make([]netip.Addr, pods)
	errs := make([]error, pods)
	var wg sync.WaitGroup
	for i, rt := range rts {
		wg.Go(func() {
			r, err := c.AddNetworkList(ctx, list, rt)
			if err != nil {
				errs[i] = err
				return
			}
			res, err := types100.GetResult(r)
			if err != nil {
				errs[i] = err
				return
			}
			ips[i] = parsePodResult(t, res).ip
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent ADDs failed: %v", err)
	}
	seen := map[netip.Addr]bool{}
	for _, ip := range ips {
		if seen[ip] {
			t.Errorf("address %s given twice", ip)
		}
		seen[ip] = true
	}
	ports, err := n.sw.ListPodPorts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ofports := map[int]bool{}
	for _, p := range ports {
		ofports[p.Ofport] = true
	}
	if len(ports) != pods || len(ofports) != pods {
		t.Errorf("%d ports with %d distinct ofports, want %d", len(ports), len(ofports), pods)
	}
	if got := len(n.podFlows()); got != pods*4 {
		t.Errorf("%d pod flows on br0, want %d", got, pods*4)
	}
	if got := len(n.srv.Pods()); got != pods {
		t.Errorf("server lists %d pods, want %d", got, pods)
	}
	// Spot-check the data path between the first and the last pod.
	if err := tcpRoundTrip(rts[pods-1].NetNS, ips[pods-1].AsSlice(), rts[0].NetNS, 32<<10); err != nil {
		t.Errorf("TCP between pods 0 and %d: %v", pods-1, err)
	}

	for i, rt := range rts {
		wg.Go(func() { errs[i] = c.DelNetworkList(ctx, list, rt) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent DELs failed: %v", err)
	}
	n.assertClean()
	t.Logf("the test agent ran %d flow syncs for %d ADDs and %d DELs", n.agent.syncCount, pods, pods)
}

// TestServerRestart is an integration test: pods added before a server restart are found again (same
// ofports, flows restored) and deleted cleanly afterwards; a pod whose sandbox vanished while the server
// was down is collected at start (address, port and veth), and so is a port without an attachment.
func TestServerRestart(t *testing.T) {
	n := newTestNode(t, "10.128.0.0/23", 23)
	c, list := n.libcni()
	ctx := context.Background()
	keep := runtimeConf("restart-keep", n.newPod(), "ns", "keep")
	gonePath := n.newPod()
	gone := runtimeConf("restart-gone", gonePath, "ns", "gone")
	for _, rt := range []*libcni.RuntimeConf{keep, gone} {
		if _, err := c.AddNetworkList(ctx, list, rt); err != nil {
			t.Fatal(err)
		}
	}
	before := n.srv.Pods()

	n.stopServer()
	// While the agent is down: the "gone" sandbox disappears, and someone leaves a port with our sandbox key.
	n.ovs.MustRun("ip", "netns", "del", netnsName(gonePath))
	n.ovs.MustRun("ip", "link", "add", "vethstale0", "type", "veth", "peer", "name", "vethstale1")
	n.ovs.Vsctl("add-port", "br0", "vethstale0", "--", "set", "interface", "vethstale0", "external_ids:sandbox=lost")

	rep := n.startServer()
	n.ovs.MustRun("ip", "netns", "add", netnsName(gonePath)) // for the netns Cleanup, which deletes it
	if rep.Kept != 1 || len(rep.Collected) != 1 || rep.Collected[0].ContainerID != "restart-gone" ||
		len(rep.PortsDeleted) != 1 || rep.PortsDeleted[0] != "vethstale0" {
		t.Errorf("reconcile report = %+v", rep)
	}
	after := n.srv.Pods()
	if len(after) != 1 || after[0].SandboxID != "restart-keep" {
		t.Fatalf("pods after restart = %v", after)
	}
	for _, p := range before {
		if p.SandboxID == "restart-keep" && (p.OFPort != after[0].OFPort || p.IP != after[0].IP) {
			t.Errorf("pod changed across the restart: %v → %v", p, after[0])
		}
	}
	if v := n.hostVeths(); len(v) != 1 || v[0] != HostVethName("restart-keep", "eth0") {
		t.Errorf("veths after reconcile = %v", v)
	}
	if err := c.CheckNetworkList(ctx, list, keep); err != nil {
		t.Errorf("CHECK after restart failed: %v", err)
	}
	if err := c.DelNetworkList(ctx, list, keep); err != nil {
		t.Fatal(err)
	}
	// The runtime's DEL of the vanished sandbox finds nothing and succeeds.
	if err := c.DelNetworkList(ctx, list, gone); err != nil {
		t.Errorf("DEL of the collected sandbox failed: %v", err)
	}
	n.assertClean()
}

// TestGC is an integration test: GC with a list of valid attachments (libcni) removes every other
// attachment; GC without a list (what cnitool sends) removes nothing.
func TestGC(t *testing.T) {
	n := newTestNode(t, "10.128.0.0/23", 23)
	c, list := n.libcni()
	ctx := context.Background()
	var rts []*libcni.RuntimeConf
	for i := range 3 {
		rt := runtimeConf(fmt.Sprintf("gc-%d", i), n.newPod(), "ns", fmt.Sprintf("gc%d", i))
		if _, err := c.AddNetworkList(ctx, list, rt); err != nil {
			t.Fatal(err)
		}
		rts = append(rts, rt)
	}
	// cnitool's GC sends no list: it DELs what its own cache knows (nothing, for these libcni pods).
	if _, err := n.cnitool("gc", rts[0].NetNS, "", ""); err != nil {
		t.Fatalf("GC without a list failed: %v", err)
	}
	if got := len(n.records()); got != 3 {
		t.Fatalf("GC without a list left %d of 3 attachments", got)
	}
	// libcni DELs its stale cached attachments itself; empty its cache so only the plugin's GC can act.
	if err := os.RemoveAll(n.dir + "/cache"); err != nil {
		t.Fatal(err)
	}
	valid := []types.GCAttachment{{ContainerID: "gc-1", IfName: "eth0"}}
	if err := c.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		t.Fatalf("GC failed: %v", err)
	}
	recs := n.records()
	sort.Strings(recs)
	if len(recs) != 1 {
		t.Fatalf("records after GC = %v", recs)
	}
	pods := n.srv.Pods()
	if len(pods) != 1 || pods[0].SandboxID != "gc-1" {
		t.Errorf("pods after GC = %v", pods)
	}
	if got := len(n.podFlows()); got != 4 {
		t.Errorf("%d pod flows after GC, want 4", got)
	}
	if err := c.DelNetworkList(ctx, list, rts[1]); err != nil {
		t.Fatal(err)
	}
	n.assertClean()
}

// TestErrorsAPersonUnderstands is an integration test of the plugin's errors: agent not running, node
// network not ready (ADD and STATUS), pool exhausted.
func TestErrorsAPersonUnderstands(t *testing.T) {
	// A /29 node subnet: 8 addresses minus network, gateway and broadcast leave 5 for pods.
	n := newTestNode(t, "10.128.0.8/29", 29)
	c, list := n.libcni()
	ctx := context.Background()

	// Root only: the socket is 0600 in a 0700 directory, and a second server does not steal it.
	for path, want := range map[string]os.FileMode{n.sockPath: 0o600, filepath.Dir(n.sockPath): 0o700} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", path, fi.Mode().Perm(), err, want)
		}
	}
	second, err := NewServer(ServerConfig{SocketPath: n.sockPath, StateDir: t.TempDir()}, n.agent, n.sw)
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Listen(); err == nil || !strings.Contains(err.Error(), "another CNI server answers there") {
		t.Errorf("a second server's Listen = %v", err)
	}

	n.agent.setNotReady(errors.New("HostSubnet node1 has no hostIP yet"))
	_, err = c.AddNetworkList(ctx, list, runtimeConf("err-notready", n.newPod(), "ns", "x"))
	if cniCode(err) != wire.CodeTryAgainLater || !strings.Contains(err.Error(), "the node network is not ready yet: HostSubnet node1 has no hostIP yet") {
		t.Errorf("ADD while not ready: code %d, %v", cniCode(err), err)
	}
	if err := c.GetStatusNetworkList(ctx, list); cniCode(err) != wire.CodePluginNotAvailable {
		t.Errorf("STATUS while not ready: code %d, %v", cniCode(err), err)
	}
	n.agent.setNotReady(nil)
	if err := c.GetStatusNetworkList(ctx, list); err != nil {
		t.Errorf("STATUS when ready: %v", err)
	}

	var rts []*libcni.RuntimeConf
	for i := range 5 {
		rt := runtimeConf(fmt.Sprintf("err-pool-%d", i), n.newPod(), "ns", fmt.Sprintf("p%d", i))
		r, err := c.AddNetworkList(ctx, list, rt)
		if err != nil {
			t.Fatalf("ADD %d of 5 failed: %v", i, err)
		}
		res, _ := types100.GetResult(r)
		ip := parsePodResult(t, res).ip
		if ip == netip.MustParseAddr("10.128.0.8") || ip == netip.MustParseAddr("10.128.0.9") || ip == netip.MustParseAddr("10.128.0.15") {
			t.Errorf("pod %d got the reserved address %s", i, ip)
		}
		rts = append(rts, rt)
	}
	_, err = c.AddNetworkList(ctx, list, runtimeConf("err-pool-6", n.newPod(), "ns", "sixth"))
	if cniCode(err) != wire.CodePoolExhausted || !strings.Contains(err.Error(), "the node's pod subnet 10.128.0.8/29 has no free address") {
		t.Errorf("sixth ADD: code %d, %v", cniCode(err), err)
	}
	for _, rt := range rts {
		if err := c.DelNetworkList(ctx, list, rt); err != nil {
			t.Fatal(err)
		}
	}
	n.assertClean()

	n.stopServer()
	_, err = c.AddNetworkList(ctx, list, runtimeConf("err-noagent", n.newPod(), "ns", "late"))
	if cniCode(err) != wire.CodeTryAgainLater {
		t.Errorf("ADD without an agent: code %d, %v", cniCode(err), err)
	}
	out, err := n.cnitool("add", n.newPod(), "ns", "late")
	if err == nil || !strings.Contains(err.Error(), "the vxflow agent is not running on this node: nothing listens on "+n.sockPath) {
		t.Errorf("ADD without an agent: %v (stdout %q)", err, out)
	}
}
