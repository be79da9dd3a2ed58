package agent

import (
	"context"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/apply/link"
	"github.com/vxflow/vxflow/internal/apply/nft"
	"github.com/vxflow/vxflow/internal/apply/ovs"
	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/openflow"
	"github.com/vxflow/vxflow/internal/testutil/envtestutil"
	"github.com/vxflow/vxflow/internal/testutil/ovsnode"
)

// realNode is one node of the agent's integration test: a network namespace with its own Open vSwitch,
// an underlay interface holding the node IP, and the real appliers pointed at them.
type realNode struct {
	ovs  *ovsnode.Node
	sw   *ovs.Switch
	link *link.Manager
	nft  *nft.Syncer
}

func startRealNode(t *testing.T, nodeIP string) *realNode {
	t.Helper()
	n := ovsnode.Start(t, "agent")
	// The underlay: a veth pair kept inside the namespace (this kernel has no dummy links) with the node IP.
	ovsnode.MustIP(t, n.NetNS, "link", "add", "ul0", "mtu", "1500", "type", "veth", "peer", "name", "ul0p")
	ovsnode.MustIP(t, n.NetNS, "addr", "add", nodeIP+"/24", "dev", "ul0")
	ovsnode.MustIP(t, n.NetNS, "link", "set", "ul0", "up")
	ovsnode.MustIP(t, n.NetNS, "link", "set", "ul0p", "up")
	ctx := context.Background()
	sw, err := ovs.New(ctx, ovs.Config{DBEndpoint: n.DBEndpoint(), RunDir: n.RunDir, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("failed to connect to OVS: %v", err)
	}
	t.Cleanup(sw.Close)
	lm, err := link.NewInNetNS(ovsnode.NetNSPath(n.NetNS))
	if err != nil {
		t.Fatalf("failed to open netlink in %s: %v", n.NetNS, err)
	}
	t.Cleanup(lm.Close)
	syncer, err := nft.NewSyncer(nft.Options{NetNSPath: ovsnode.NetNSPath(n.NetNS)})
	if err != nil {
		t.Fatalf("failed to open nf_tables in %s: %v", n.NetNS, err)
	}
	t.Cleanup(func() { _ = syncer.Close() })
	return &realNode{ovs: n, sw: sw, link: lm, nft: syncer}
}

// newAgent returns a fresh agent on the node, as a restarted agent process would be.
func (n *realNode) newAgent(t *testing.T, c client.Client, reg *prometheus.Registry) (*Agent, *Metrics) {
	t.Helper()
	m := NewMetrics(reg)
	a, err := New(Config{NodeName: "node1", NodeIP: netip.MustParseAddr("192.168.100.11"), Datapath: model.DatapathNetdev},
		c, c, n.sw, Links{Manager: n.link}, &NFTables{Interface: n.nft, Log: logr.Discard(), Metrics: m}, m, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	return a, m
}

func TestAgentOnARealNode(t *testing.T) {
	ovsnode.RequireRoot(t)
	_, cfg := envtestutil.Start(t)
	scheme, err := Scheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, obj := range []client.Object{testClusterNetwork(),
		makeTestHostSubnet("node1", "192.168.100.11", "10.128.0.0/23"),
		makeTestHostSubnet("node2", "192.168.100.12", "10.128.2.0/23")} {
		obj.SetCreationTimestamp(metav1.Time{})
		if err := c.Create(ctx, obj); err != nil {
			t.Fatalf("failed to create %s: %v", obj.GetName(), err)
		}
	}
	node := startRealNode(t, "192.168.100.11")

	a, m := node.newAgent(t, c, prometheus.NewRegistry())
	if err := a.Sync(ctx); err != nil {
		t.Fatalf("the first sync failed: %v", err)
	}
	a.Services().SetSource(noServices{}, nil)
	if err := a.Services().Sync(ctx); err != nil {
		t.Fatalf("the first Service sync failed: %v", err)
	}
	want, err := openflow.Render(a.View())
	if err != nil {
		t.Fatal(err)
	}
	assertFlows(t, node, len(want))
	routes := ovsnode.MustIP(t, node.ovs.NetNS, "route", "show", "dev", "tun0")
	for _, r := range []string{"10.128.0.0/14", "172.30.0.0/16"} {
		if !strings.Contains(routes, r) {
			t.Errorf("no route for %s via tun0:\n%s", r, routes)
		}
	}
	if tun := ovsnode.MustIP(t, node.ovs.NetNS, "addr", "show", "dev", "tun0"); !strings.Contains(tun, "mtu 1450") || !strings.Contains(tun, "10.128.0.1/23") {
		t.Errorf("tun0 lacks MTU 1450 or the gateway 10.128.0.1/23:\n%s", tun)
	}
	table := nftList(t, node)
	for _, w := range []string{"table ip vxflow", "masquerade"} {
		if !strings.Contains(table, w) {
			t.Errorf("nft table ip vxflow lacks %q:\n%s", w, table)
		}
	}
	hs := &v1alpha1.HostSubnet{}
	if err := c.Get(ctx, client.ObjectKey{Name: "node1"}, hs); err != nil {
		t.Fatal(err)
	}
	if cond := findCondition(hs.Status.Conditions, v1alpha1.ConditionProgrammed); cond == nil || cond.Status != metav1.ConditionTrue {
		t.Errorf("HostSubnet node1 is not Programmed after the sync: %+v", hs.Status)
	}

	t.Run("an agent restart sends no flow-mods", func(t *testing.T) {
		restarted, rm := node.newAgent(t, c, prometheus.NewRegistry())
		if err := restarted.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if mods := flowMods(rm); mods != 0 {
			t.Errorf("a restarted agent sent %v flow-mods to an unchanged switch, want 0", mods)
		}
	})

	t.Run("a flow deleted by hand is restored", func(t *testing.T) {
		before := flowMods(m)
		node.ovs.Ofctl("--strict", "del-flows", "br0", "table=90,priority=100,ip,nw_dst=10.128.2.0/23")
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if got := flowMods(m) - before; got != 1 {
			t.Errorf("the repair sent %v flow-mods, want 1", got)
		}
		assertFlows(t, node, len(want))
	})

	t.Run("an ovs-vswitchd restart is followed by full reprogramming", func(t *testing.T) {
		node.ovs.StopVSwitchd()
		node.ovs.StartVSwitchd()
		node.ovs.WaitBridge("br0", 10*time.Second)
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		assertFlows(t, node, len(want))
		if got := testutil.ToFloat64(m.SwitchResets); got != 1 {
			t.Errorf("switch_resets_total = %v, want 1", got)
		}
	})

	t.Run("the nftables table deleted by hand is restored", func(t *testing.T) {
		if out, err := exec.Command("ip", "netns", "exec", node.ovs.NetNS, "nft", "delete", "table", "ip", "vxflow").CombinedOutput(); err != nil {
			t.Fatalf("failed to delete the table: %v: %s", err, out)
		}
		if err := a.Services().Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(nftList(t, node), "table ip vxflow") {
			t.Errorf("the table was not restored")
		}
	})

	t.Run("a new remote node is programmed through the watch", func(t *testing.T) {
		runner := NewRunner(10*time.Millisecond, time.Hour, 100*time.Millisecond, a.Sync)
		cache, err := StartWatches(ctx, cfg, scheme, runner.Trigger)
		if err != nil {
			t.Fatal(err)
		}
		a.reader = cache
		go runner.Run(ctx)
		if err := c.Create(ctx, makeTestHostSubnet("node3", "192.168.100.13", "10.128.4.0/23")); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(node.ovs.Ofctl("dump-flows", "br0", "table=10"), "tun_src=192.168.100.13") {
			if time.Now().After(deadline) {
				t.Fatalf("node3's VXLAN ingress flow never appeared:\n%s", node.ovs.Ofctl("dump-flows", "br0"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

func flowMods(m *Metrics) float64 {
	var total float64
	for _, kind := range []string{"add", "modify", "delete"} {
		total += testutil.ToFloat64(m.FlowMods.WithLabelValues(kind))
	}
	return total
}

func assertFlows(t *testing.T, n *realNode, want int) {
	t.Helper()
	out := n.ovs.Ofctl("dump-aggregate", "br0")
	if !strings.Contains(out, "flow_count="+strconv.Itoa(want)) {
		t.Errorf("br0 has %s, want flow_count=%d", strings.TrimSpace(out), want)
	}
}

func nftList(t *testing.T, n *realNode) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", n.ovs.NetNS, "nft", "list", "table", "ip", "vxflow").CombinedOutput()
	if err != nil {
		t.Fatalf("failed to list table ip vxflow: %v: %s", err, out)
	}
	return string(out)
}
