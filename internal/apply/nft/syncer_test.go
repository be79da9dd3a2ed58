package nft

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/nftables"
	"github.com/vxflow/vxflow/internal/render/nftables/rendertest"
	"github.com/vxflow/vxflow/internal/testutil/textdiff"
)

// TestGoldenRulesetsInKernel programs every golden case into a fresh namespace and checks that the kernel
// lists back exactly the golden text (modulo element and block order), and that a second sync of the same
// state sends nothing. Integration test: needs root and nft (for listing only).
func TestGoldenRulesetsInKernel(t *testing.T) {
	for _, c := range rendertest.Cases() {
		t.Run(c.Name, func(t *testing.T) {
			s, ns := newTestSyncer(t, "nftg")
			render := func() *nftables.Ruleset {
				return nftables.NewRenderer(nftables.Options{InlineEndpoints: c.InlineEndpoints, EndpointMap: c.EndpointMap}).Render(c.Build(t))
			}
			want := render()
			golden, err := os.ReadFile(rendertest.GoldenPath(c.Name))
			if err != nil {
				t.Fatalf("failed to read golden file: %v", err)
			}
			if want.String() != string(golden) {
				t.Fatalf("rendered text differs from %s: run go test ./internal/render/nftables -update", rendertest.GoldenPath(c.Name))
			}
			res := mustSync(t, s, want)
			if !res.Full || res.Reason != "first sync" || res.Messages == 0 {
				t.Errorf("first sync: got %+v, want a full sync with messages", res)
			}
			if got, exp := normalizeListing(listTable(t, ns)), normalizeListing(string(golden)); got != exp {
				t.Fatalf("kernel listing differs from %s:\n%s", rendertest.GoldenPath(c.Name), textdiff.Lines(exp, got))
			}
			if res := mustSync(t, s, render()); res.Full || res.Messages != 0 {
				t.Errorf("second sync of the same state: got %+v, want nothing sent", res)
			}
		})
	}
}

// seedObjects returns the seed case's objects with the given endpoint IPs (all ready, on node2) and, when
// extra is set, a second Service.
func seedObjects(ips []string, extra bool) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	svc, _ := rendertest.Seed()
	var eps []rendertest.Endpoint
	for _, ip := range ips {
		eps = append(eps, rendertest.Endpoint{IP: ip, Node: "node2"})
	}
	svcs := []*corev1.Service{svc}
	slices := []*discoveryv1.EndpointSlice{rendertest.Slice("almighty", "almighty5", "web", corev1.ProtocolTCP, 8080, eps...)}
	if extra {
		svcs = append(svcs, rendertest.Service("ns1", "extra", "172.30.0.99"))
		slices = append(slices, rendertest.Slice("ns1", "extra", "http", corev1.ProtocolTCP, 8080,
			rendertest.Endpoint{IP: "10.128.0.99", Node: "node1"}))
	}
	return svcs, slices
}

// renderSeed renders seedObjects.
func renderSeed(t *testing.T, ips []string, extra bool) *nftables.Ruleset {
	t.Helper()
	svcs, slices := seedObjects(ips, extra)
	return renderObjects(t, svcs, slices)
}

// renderObjects builds and renders objects for the test node.
func renderObjects(t *testing.T, svcs []*corev1.Service, slices []*discoveryv1.EndpointSlice) *nftables.Ruleset {
	t.Helper()
	set, err := model.BuildServices(model.ServiceInput{Node: rendertest.Node(), Services: svcs, EndpointSlices: slices})
	if err != nil {
		t.Fatalf("BuildServices: %v", err)
	}
	return nftables.NewRenderer(nftables.Options{}).RenderGrouped(set)
}

// TestPartialSyncs changes endpoints and Services step by step and checks after each step that only a few
// messages were sent, that the kernel holds exactly the rendered table, and that stale chains are deleted
// once their delay has passed.
func TestPartialSyncs(t *testing.T) {
	s, ns := newTestSyncer(t, "nftp")
	s.opts.StaleChainDelay = 200 * time.Millisecond
	steps := []struct {
		name        string
		ips         []string
		extra       bool
		maxMessages int
	}{
		{"start", []string{"10.128.2.151"}, false, 0},
		{"add an endpoint", []string{"10.128.2.151", "10.128.2.152"}, false, 8},
		{"add a service", []string{"10.128.2.151", "10.128.2.152"}, true, 12},
		{"remove an endpoint", []string{"10.128.2.152"}, true, 4},
		{"remove a service", []string{"10.128.2.152"}, false, 8},
	}
	// One Renderer across the steps, as the agent keeps one: unchanged Services come back as the same
	// groups, which the syncer skips.
	rr := nftables.NewRenderer(nftables.Options{})
	for i, st := range steps {
		svcs, slices := seedObjects(st.ips, st.extra)
		set, err := model.BuildServices(model.ServiceInput{Node: rendertest.Node(), Services: svcs, EndpointSlices: slices})
		if err != nil {
			t.Fatal(err)
		}
		want := rr.RenderGrouped(set)
		res := mustSync(t, s, want)
		if i == 0 {
			if !res.Full {
				t.Fatalf("%s: first sync not full: %+v", st.name, res)
			}
		} else if res.Full || res.Messages == 0 || res.Messages > st.maxMessages {
			t.Fatalf("%s: got %+v, want a partial sync of 1..%d messages", st.name, res, st.maxMessages)
		}
		requireSameTableWithStale(t, ns, want, s)
	}
	if len(s.stale) == 0 {
		t.Fatalf("no stale chains recorded after removing an endpoint and a service")
	}
	time.Sleep(300 * time.Millisecond)
	want := renderSeed(t, []string{"10.128.2.152"}, false)
	res := mustSync(t, s, want)
	if res.ChainsDeleted == 0 || res.Full {
		t.Fatalf("sync after the stale delay: got %+v, want stale chains deleted", res)
	}
	if len(s.stale) != 0 {
		t.Fatalf("stale chains left: %v", s.stale)
	}
	requireSameTable(t, ns, want)
}

// requireSameTableWithStale is requireSameTable allowing the flushed (empty) stale chains the syncer has not
// deleted yet.
func requireSameTableWithStale(t *testing.T, ns string, want *nftables.Ruleset, s *Syncer) {
	t.Helper()
	flat := want.Flat()
	withStale := &nftables.Ruleset{Sets: flat.Sets, Chains: slices.Clone(flat.Chains)}
	for name := range s.stale {
		withStale.Chains = append(withStale.Chains, &nftables.Chain{Name: name})
	}
	requireSameTable(t, ns, withStale)
}

// TestDriftIsRepaired deletes the table, adds a rule and removes an element by hand, and checks that the
// next sync notices through the generation check and restores the rendered table.
func TestDriftIsRepaired(t *testing.T) {
	s, ns := newTestSyncer(t, "nftd")
	want := renderSeed(t, []string{"10.128.2.151", "10.128.2.152"}, true)
	mustSync(t, s, want)
	edits := []struct {
		name   string
		args   []string
		reason string
	}{
		{"table deleted", []string{"delete", "table", "ip", "vxflow"}, "table deleted"},
		{"rule added", []string{"add", "rule", "ip", "vxflow", "services", "drop"}, "ruleset changed by nft"},
		{"element deleted", []string{"delete", "element", "ip", "vxflow", "service-ips", "{ 172.30.0.99 . tcp . 80 }"}, "ruleset changed by nft"},
		{"chain flushed", []string{"flush", "chain", "ip", "vxflow", "masquerading"}, "ruleset changed by nft"},
		{"chain added", []string{"add", "chain", "ip", "vxflow", "intruder"}, "table changed"},
	}
	for _, e := range edits {
		nft(t, ns, e.args...)
		if res := mustSync(t, s, want); !res.Full || !strings.HasPrefix(res.Reason, e.reason) {
			t.Fatalf("%s: got %+v, want a full sync because %q", e.name, res, e.reason)
		}
		requireSameTableWithStale(t, ns, want, s)
		if res := mustSync(t, s, want); res.Full || res.Messages != 0 {
			t.Fatalf("%s: sync after the repair: got %+v, want nothing sent", e.name, res)
		}
	}
}

// TestFailedSyncChangesNothingAndNextIsFull sends a ruleset the kernel must refuse (a jump to a chain that
// does not exist): the table must stay as it was, and the next sync must be full.
func TestFailedSyncChangesNothingAndNextIsFull(t *testing.T) {
	s, ns := newTestSyncer(t, "nftf")
	good := renderSeed(t, []string{"10.128.2.151"}, false)
	mustSync(t, s, good)
	before := listTable(t, ns)

	bad := renderSeed(t, []string{"10.128.2.151", "10.128.2.152"}, true)
	for _, c := range bad.Chains {
		if c.Name == "services" {
			c.Rules = append(c.Rules, nftables.Rule{Stmts: []nftables.Stmt{nftables.Verdict{Kind: nftables.VerdictJump, Chain: "no-such-chain"}}})
		}
	}
	if _, err := s.Sync(context.Background(), bad); err == nil {
		t.Fatalf("Sync of a ruleset jumping to a missing chain succeeded")
	}
	if after := listTable(t, ns); after != before {
		t.Fatalf("failed transaction changed the table:\n%s", textdiff.Lines(before, after))
	}
	next := renderSeed(t, []string{"10.128.2.151", "10.128.2.152"}, true)
	res := mustSync(t, s, next)
	if !res.Full || res.Reason != "previous sync failed" {
		t.Fatalf("sync after a failure: got %+v, want full because the previous sync failed", res)
	}
	requireSameTable(t, ns, next)
}

// TestRestartAdoptsExistingTable starts a second Syncer on a namespace that already holds an older table
// (as after an agent restart): its first sync is full, removes what is no longer wanted and keeps the
// affinity set's entries.
func TestRestartAdoptsExistingTable(t *testing.T) {
	s, ns := newTestSyncer(t, "nftr")
	old := renderSeed(t, []string{"10.128.2.151", "10.128.2.152"}, true)
	mustSync(t, s, old)

	s2, err := NewSyncer(Options{NetNSPath: s.opts.NetNSPath, StaleChainDelay: time.Nanosecond})
	if err != nil {
		t.Fatalf("NewSyncer: %v", err)
	}
	defer s2.Close()
	want := renderSeed(t, []string{"10.128.2.152"}, false)
	res := mustSync(t, s2, want)
	if !res.Full {
		t.Fatalf("first sync of a new Syncer: got %+v, want full", res)
	}
	// The chains the old table had and the new one lacks are flushed, then deleted by the next sync.
	time.Sleep(time.Millisecond)
	mustSync(t, s2, want)
	requireSameTable(t, ns, want)
}

// TestRendererThenHandBuilt syncs a Renderer's ruleset, then the same content as a hand-built Ruleset (no
// Service groups), then rendered again: nothing may be lost, doubled or left stale.
func TestRendererThenHandBuilt(t *testing.T) {
	s, ns := newTestSyncer(t, "nfth")
	s.opts.StaleChainDelay = time.Nanosecond
	r := renderSeed(t, []string{"10.128.2.151", "10.128.2.152"}, true)
	mustSync(t, s, r)
	f := r.Flat()
	flat := &nftables.Ruleset{Sets: f.Sets, Chains: f.Chains} // built by hand: no groups
	for i, next := range []*nftables.Ruleset{flat, flat, renderSeed(t, []string{"10.128.2.151", "10.128.2.152"}, true)} {
		mustSync(t, s, next)
		if len(s.stale) != 0 {
			t.Fatalf("step %d: chains left stale: %v", i, s.stale)
		}
		requireSameTable(t, ns, r)
	}
}

// TestEndpointMapRepairAndRestart covers the endpoint data map outside partial syncs: an element deleted by
// hand is restored by a full sync, a new Syncer adopts the table (keeping the map), and turning the option
// off and on again over an existing table converges both ways. Integration test: needs root and nft.
func TestEndpointMapRepairAndRestart(t *testing.T) {
	var c rendertest.Case
	for _, x := range rendertest.Cases() {
		if x.Name == "endpoint-map" {
			c = x
		}
	}
	render := func(opts nftables.Options) *nftables.Ruleset { return nftables.NewRenderer(opts).Render(c.Build(t)) }
	s, ns := newTestSyncer(t, "nftm")
	want := render(nftables.Options{EndpointMap: true})
	mustSync(t, s, want)
	nft(t, ns, "delete", "element", "ip", "vxflow", "service-endpoints-4", "{ 16385 }")
	if res := mustSync(t, s, want); !res.Full || !strings.HasPrefix(res.Reason, "ruleset changed by nft") {
		t.Fatalf("element deleted by hand: got %+v, want a full sync", res)
	}
	requireSameTable(t, ns, want)

	for i, opts := range []nftables.Options{{EndpointMap: true}, {}, {EndpointMap: true}, {InlineEndpoints: true}} {
		s2, err := NewSyncer(Options{NetNSPath: s.opts.NetNSPath, StaleChainDelay: time.Nanosecond})
		if err != nil {
			t.Fatalf("NewSyncer: %v", err)
		}
		want := render(opts)
		if res := mustSync(t, s2, want); !res.Full {
			t.Fatalf("step %d: first sync of a new Syncer: got %+v, want full", i, res)
		}
		time.Sleep(time.Millisecond)
		mustSync(t, s2, want) // deletes the chains left stale
		requireSameTable(t, ns, want)
		_ = s2.Close()
	}
}

// TestEndpointMapPartialSyncs removes and re-adds Services with Options.EndpointMap: shard maps disappear
// and appear, elements follow their Service groups, and every step is a partial sync that leaves exactly
// the rendered table. Integration test: needs root and nft.
func TestEndpointMapPartialSyncs(t *testing.T) {
	s, ns := newTestSyncer(t, "nftp")
	rr := nftables.NewRenderer(nftables.Options{EndpointMap: true})
	full := rendertest.ScaleSet(4, 3)
	mustSync(t, s, rr.RenderGrouped(full))
	requireSameTable(t, ns, rr.RenderGrouped(full))
	steps := []func(set *model.ServiceSet){
		func(set *model.ServiceSet) { set.Services = set.Services[:2] },                   // two maps go
		func(set *model.ServiceSet) { set.Services[1].Ports[0].Endpoints[2].Port = 9090 }, // one element replaced
		func(set *model.ServiceSet) {
			set.Services[0].Ports[0].Endpoints = set.Services[0].Ports[0].Endpoints[:1]
		},
	}
	set := rendertest.ScaleSet(4, 3)
	for i, step := range steps {
		step(set)
		want := rr.RenderGrouped(set)
		res := mustSync(t, s, want)
		if res.Full {
			t.Fatalf("step %d: got a full sync %+v", i, res)
		}
		requireSameTableWithStale(t, ns, want, s)
	}
	// Back to four Services: the freed ids (and their maps) come back.
	want := rr.RenderGrouped(full)
	if res := mustSync(t, s, want); res.Full {
		t.Fatalf("re-adding: got a full sync %+v", res)
	}
	requireSameTableWithStale(t, ns, want, s)
}
