package ovs

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vxflow/vxflow/internal/testutil/ovsnode"
)

// concurrentPortsHooks are what runConcurrentPorts needs from a switch beyond Interface.
type concurrentPortsHooks struct {
	addPortDevice func(name string)
	// written returns a counter that moves whenever the switch's database is written; nil when the switch
	// has none (the Fake).
	written func() string
}

// runConcurrentPorts adds 20 pod ports at once, as 20 simultaneous CNI ADDs do, then again (which must
// change nothing), then deletes them at once.
func runConcurrentPorts(t *testing.T, s Interface, h concurrentPortsHooks) {
	ctx := context.Background()
	if _, err := s.EnsureBridge(ctx, BridgeSpec{DatapathType: DatapathNetdev, VXLANDstPort: 4789, TunMTU: 1450}); err != nil {
		t.Fatalf("EnsureBridge: %v", err)
	}
	const n = 20
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("vc%02d", i)
		h.addPortDevice(names[i])
	}
	ids := func(i int) map[string]string { return map[string]string{"ip": fmt.Sprintf("10.0.0.%d", i+2)} }
	ensureAll := func() []int {
		t.Helper()
		ofports, errs := make([]int, n), make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				ofports[i], errs[i] = s.EnsurePodPort(ctx, names[i], ids(i))
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("EnsurePodPort(%s): %v", names[i], err)
			}
		}
		return ofports
	}

	first := ensureAll()
	if d := slices.Compact(slices.Sorted(slices.Values(first))); len(d) != n || d[0] < 3 {
		t.Fatalf("20 concurrent EnsurePodPort gave ofports %v, want 20 distinct ones >= 3", first)
	}
	var before string
	if h.written != nil {
		before = h.written()
	}
	if again := ensureAll(); !slices.Equal(again, first) {
		t.Errorf("a second round of EnsurePodPort gave ofports %v, want %v", again, first)
	}
	if h.written != nil {
		if after := h.written(); after != before {
			t.Errorf("a second round of EnsurePodPort wrote the database: %s -> %s", before, after)
		}
	}
	ports, err := s.ListPodPorts(ctx)
	if err != nil || len(ports) != n {
		t.Fatalf("ListPodPorts = %d ports, %v; want %d", len(ports), err, n)
	}
	for i, p := range ports {
		if p.Name != names[i] || p.Ofport != first[i] || p.ExternalIDs["ip"] != ids(i)["ip"] {
			t.Errorf("port %d = %+v, want %s with ofport %d and %v", i, p, names[i], first[i], ids(i))
		}
	}

	for round := range 2 { // the second round deletes missing ports, which is not an error
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() { errs[i] = s.DeletePort(ctx, names[i]) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("round %d: DeletePort(%s): %v", round, names[i], err)
			}
		}
	}
	if ports, err := s.ListPodPorts(ctx); err != nil || len(ports) != 0 {
		t.Errorf("ListPodPorts after deleting all = %+v, %v", ports, err)
	}
}

func TestFakeConcurrentPorts(t *testing.T) {
	runConcurrentPorts(t, NewFake(), concurrentPortsHooks{addPortDevice: func(string) {}})
}

func TestSwitchConcurrentPorts(t *testing.T) {
	ovsnode.RequireRoot(t)
	s, n := newTestSwitch(t, "conc")
	runConcurrentPorts(t, s, concurrentPortsHooks{
		addPortDevice: func(name string) { addVeth(n, name) },
		written: func() string {
			return fmt.Sprintf("transactions=%d br0=%s vc00=%s", s.transactions.Load(),
				rowVersion(t, n, "Bridge", "br0"), rowVersion(t, n, "Interface", "vc00"))
		},
	})
}

// addVeth creates a veth in the node's netns whose first end can become a pod port.
func addVeth(n *ovsnode.Node, name string) {
	n.MustRun("ip", "link", "add", name, "type", "veth", "peer", "name", name+"-p")
	n.MustRun("ip", "link", "set", name, "up")
}

// queued starts one goroutine per call while the test holds the Switch's mutex, waits until all of them
// have queued their change, and releases the mutex: their changes then form exactly one batch.
func queued(t *testing.T, s *Switch, calls []func()) {
	t.Helper()
	s.mu.Lock()
	var wg sync.WaitGroup
	for _, c := range calls {
		wg.Go(c)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.queueMu.Lock()
		l := len(s.queue)
		s.queueMu.Unlock()
		if l == len(calls) {
			break
		}
		if time.Now().After(deadline) {
			s.mu.Unlock()
			t.Fatalf("%d of %d changes queued", l, len(calls))
		}
		time.Sleep(time.Millisecond)
	}
	s.mu.Unlock()
	wg.Wait()
}

func TestSwitchPortsShareOneTransaction(t *testing.T) {
	ovsnode.RequireRoot(t)
	s, n := newTestSwitch(t, "grp")
	ensureTestBridge(t, s, n)
	ctx := context.Background()
	const count = 20
	names := make([]string, count)
	for i := range names {
		names[i] = fmt.Sprintf("vg%02d", i)
		addVeth(n, names[i])
	}
	ofports, errs := make([]int, count), make([]error, count)
	var calls []func()
	for i := range count {
		calls = append(calls, func() { ofports[i], errs[i] = s.EnsurePodPort(ctx, names[i], map[string]string{"i": fmt.Sprint(i)}) })
	}
	before := s.transactions.Load()
	queued(t, s, calls)
	if got := s.transactions.Load() - before; got != 1 {
		t.Errorf("20 queued EnsurePodPort sent %d transactions, want 1", got)
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("EnsurePodPort(%s): %v", names[i], err)
		}
	}
	if d := slices.Compact(slices.Sorted(slices.Values(ofports))); len(d) != count || d[0] < 3 {
		t.Fatalf("ofports %v, want %d distinct ones >= 3", ofports, count)
	}
	for i, name := range names {
		if got := strings.TrimSpace(n.Vsctl("get", "interface", name, "ofport")); got != fmt.Sprint(ofports[i]) {
			t.Errorf("ovs-vsctl ofport of %s = %s, EnsurePodPort said %d", name, got, ofports[i])
		}
	}

	// Deletes and adds queued together share a transaction too.
	calls = nil
	for i := range count / 2 {
		calls = append(calls, func() { errs[i] = s.DeletePort(ctx, names[i]) })
	}
	extra := "vg-new"
	addVeth(n, extra)
	var extraOfport int
	var extraErr error
	calls = append(calls, func() { extraOfport, extraErr = s.EnsurePodPort(ctx, extra, nil) })
	before = s.transactions.Load()
	queued(t, s, calls)
	if got := s.transactions.Load() - before; got != 1 {
		t.Errorf("10 queued DeletePort and one EnsurePodPort sent %d transactions, want 1", got)
	}
	if extraErr != nil || extraOfport < 3 {
		t.Errorf("EnsurePodPort(%s) = %d, %v", extra, extraOfport, extraErr)
	}
	for i := range count / 2 {
		if errs[i] != nil {
			t.Errorf("DeletePort(%s): %v", names[i], errs[i])
		}
	}
	ports, err := s.ListPodPorts(ctx)
	if err != nil || len(ports) != count/2+1 {
		t.Fatalf("ListPodPorts = %+v, %v; want %d ports", ports, err, count/2+1)
	}
	for _, p := range ports {
		if p.Name < names[count/2] && p.Name != extra {
			t.Errorf("deleted port %s is still on br0", p.Name)
		}
	}

	// The same port twice in a queue: the second change comes after the first, as if in sequence.
	calls = nil
	for _, ip := range []string{"10.0.0.8", "10.0.0.9"} {
		calls = append(calls, func() {
			if _, err := s.EnsurePodPort(ctx, extra, map[string]string{"ip": ip}); err != nil {
				t.Errorf("EnsurePodPort(%s, %s): %v", extra, ip, err)
			}
		})
	}
	before = s.transactions.Load()
	queued(t, s, calls)
	if got := s.transactions.Load() - before; got != 2 {
		t.Errorf("two changes of one port sent %d transactions, want 2", got)
	}
}

func TestSwitchPortBatchIsolatesErrors(t *testing.T) {
	ovsnode.RequireRoot(t)
	s, n := newTestSwitch(t, "iso")
	ensureTestBridge(t, s, n)
	ctx := context.Background()
	// Two ways one port of a batch can fail while the others must not:
	//   - planning: other0 is a port of another bridge (found in the cache before any transaction);
	//   - committing: bond0 is a port of br0 whose interfaces are ifa and ifb, so a new port ifa passes the
	//     checks of the plan but ovsdb-server refuses its Interface row (the name index), failing the whole
	//     shared transaction.
	n.Vsctl("add-br", "brx", "--", "set", "bridge", "brx", "datapath_type=netdev", "--", "add-port", "brx", "other0")
	n.Vsctl("add-bond", "br0", "bond0", "ifa", "ifb")
	waitFor := func(cond func(*snapshot) bool) {
		t.Helper()
		if err := s.waitCache(ctx, func(snap *snapshot) (bool, error) { return cond(snap), nil }); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(func(snap *snapshot) bool {
		return snap.bridgeOfPort("other0") == "brx" && snap.bridgeOfPort("bond0") == "br0"
	})

	good := []string{"vi0", "vi1", "vi2", "vi3", "vi4"}
	all := append(slices.Clone(good), "other0", "ifa")
	ofports, errs := make([]int, len(all)), make([]error, len(all))
	var calls []func()
	for i, name := range all {
		if i < len(good) {
			addVeth(n, name)
		}
		calls = append(calls, func() { ofports[i], errs[i] = s.EnsurePodPort(ctx, name, nil) })
	}
	queued(t, s, calls)
	for i, name := range good {
		if errs[i] != nil || ofports[i] < 3 {
			t.Errorf("EnsurePodPort(%s) = %d, %v; want an ofport", name, ofports[i], errs[i])
		}
	}
	if err := errs[len(good)]; err == nil || !strings.Contains(err.Error(), "belongs to bridge brx") {
		t.Errorf("EnsurePodPort(other0) = %v, want a refusal (port of brx)", err)
	}
	if err := errs[len(good)+1]; err == nil || !strings.Contains(err.Error(), "failed to commit the OVSDB transaction") {
		t.Errorf("EnsurePodPort(ifa) = %v, want a failed transaction", err)
	}
	out := n.Vsctl("list-ports", "br0")
	for _, name := range good {
		if !strings.Contains(out, name) {
			t.Errorf("port %s missing from br0: %q", name, out)
		}
	}
	// A queue whose shared transaction fails still deletes what it should.
	calls = nil
	for i, name := range []string{"vi0", "ifa"} {
		calls = append(calls, func() {
			if i == 0 {
				errs[i] = s.DeletePort(ctx, name)
			} else {
				_, errs[i] = s.EnsurePodPort(ctx, name, nil)
			}
		})
	}
	queued(t, s, calls)
	if errs[0] != nil || errs[1] == nil {
		t.Errorf("DeletePort(vi0) = %v, EnsurePodPort(ifa) = %v; want success and a failure", errs[0], errs[1])
	}
	if strings.Contains(n.Vsctl("list-ports", "br0"), "vi0") {
		t.Errorf("vi0 is still on br0")
	}
}

func TestSwitchDeletePortWaitsForVSwitchd(t *testing.T) {
	ovsnode.RequireRoot(t)
	s, n := newTestSwitch(t, "delw")
	ensureTestBridge(t, s, n)
	ctx := context.Background()
	names := []string{"vd0", "vd1", "vd2"}
	for _, name := range names {
		addVeth(n, name)
		if _, err := s.EnsurePodPort(ctx, name, nil); err != nil {
			t.Fatal(err)
		}
	}
	var calls []func()
	errs := make([]error, len(names))
	for i, name := range names[:2] {
		calls = append(calls, func() { errs[i] = s.DeletePort(ctx, name) })
	}
	queued(t, s, calls)
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("DeletePort: %v, %v", errs[0], errs[1])
	}
	// When DeletePort returns, ovs-vswitchd has applied the removal: it has reached the configuration the
	// transaction asked for (read from the cache at once: ovs-appctl and ovs-vsctl would themselves wait
	// for ovs-vswitchd's main loop) and its datapath no longer has the ports.
	snap, err := s.snapshot(ctx)
	if err != nil || snap.root == nil || snap.root.CurCfg < snap.root.NextCfg {
		t.Errorf("right after DeletePort: root %+v, %v; want cur_cfg >= next_cfg", snap.root, err)
	}
	if dp := n.Appctl("dpif/show"); strings.Contains(dp, "vd0") || strings.Contains(dp, "vd1") || !strings.Contains(dp, "vd2") {
		t.Errorf("the datapath after DeletePort(vd0, vd1):\n%s", dp)
	}

	// Without ovs-vswitchd, DeletePort still removes the port from OVSDB and returns after the bound.
	s.deleteWait = 300 * time.Millisecond
	n.StopVSwitchd()
	start := time.Now()
	if err := s.DeletePort(ctx, "vd2"); err != nil {
		t.Errorf("DeletePort without ovs-vswitchd = %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("DeletePort without ovs-vswitchd took %v", d)
	}
	if out := n.Vsctl("list-ports", "br0"); strings.Contains(out, "vd2") {
		t.Errorf("vd2 is still in OVSDB: %q", out)
	}
	n.StartVSwitchd()
}
