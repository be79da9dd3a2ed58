package ovs

import (
	"context"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"github.com/vxflow/vxflow/internal/testutil/ovsnode"
)

// Benchmarks of flow Sync against a real ovs-vswitchd (userspace datapath), at the scale of the issue:
// 1,000 remote nodes (3 flows each) and 250 local pods (5 flows each) plus the node-level flows, 4,273 flows.
// Run as root: go test ./internal/apply/ovs -run '^$' -bench . -benchtime 10x

const (
	benchRemotes = 1000
	benchPods    = 250
)

// benchContext discards logs, so that the Reset message of every from-empty Sync does not garble the
// benchmark output.
func benchContext() context.Context { return klog.NewContext(context.Background(), logr.Discard()) }

// benchApplier starts a node with br0 and returns its flow applier.
func benchApplier(b *testing.B) (*Switch, *ovsnode.Node) {
	b.Helper()
	s, n := newTestSwitch(b, "bench")
	ensureTestBridge(b, s, n)
	return s, n
}

// BenchmarkSyncFromEmpty programs the whole set on an empty bridge (first start, or after an ovs-vswitchd
// restart).
func BenchmarkSyncFromEmpty(b *testing.B) {
	s, n := benchApplier(b)
	desired := scaleFixture(benchRemotes, benchPods).flows()
	ctx := benchContext()
	var mods int
	for b.Loop() {
		b.StopTimer()
		n.Ofctl("del-flows", "br0")
		b.StartTimer()
		res, err := s.Sync(ctx, desired)
		if err != nil {
			b.Fatal(err)
		}
		mods = res.FlowMods()
	}
	b.ReportMetric(float64(len(desired)), "flows")
	b.ReportMetric(float64(mods), "flowmods/op")
}

// BenchmarkSyncNoChange is the periodic resync of an unchanged set: one dump and a diff, nothing sent.
func BenchmarkSyncNoChange(b *testing.B) {
	s, _ := benchApplier(b)
	desired := scaleFixture(benchRemotes, benchPods).flows()
	ctx := benchContext()
	if _, err := s.Sync(ctx, desired); err != nil {
		b.Fatal(err)
	}
	var mods int
	for b.Loop() {
		res, err := s.Sync(ctx, desired)
		if err != nil {
			b.Fatal(err)
		}
		mods = res.FlowMods()
	}
	b.ReportMetric(float64(mods), "flowmods/op")
}

// BenchmarkSyncOneNodeAdded adds a 1,001st remote node to the programmed set: only its 3 flows are sent.
func BenchmarkSyncOneNodeAdded(b *testing.B) {
	s, _ := benchApplier(b)
	before := scaleFixture(benchRemotes, benchPods)
	after := before
	after.remotes = append(after.remotes[:len(after.remotes):len(after.remotes)], remoteNode(benchRemotes))
	desiredBefore, desiredAfter := before.flows(), after.flows()
	ctx := benchContext()
	if _, err := s.Sync(ctx, desiredBefore); err != nil {
		b.Fatal(err)
	}
	var mods int
	for b.Loop() {
		res, err := s.Sync(ctx, desiredAfter)
		if err != nil {
			b.Fatal(err)
		}
		mods = res.FlowMods()
		b.StopTimer()
		if _, err := s.Sync(ctx, desiredBefore); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(mods), "flowmods/op")
}

// BenchmarkParseAndDiff is the applier's own CPU share of a Sync at that scale (parsing the dump and
// diffing), without OVS.
func BenchmarkParseAndDiff(b *testing.B) {
	desired := scaleFixture(benchRemotes, benchPods).flows()
	var dump strings.Builder
	for _, f := range desired {
		dump.WriteString(" " + f.String() + "\n")
	}
	out := []byte(dump.String())
	for b.Loop() {
		actual, err := parseDump(out)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := diffFlows(desired, actual); err != nil {
			b.Fatal(err)
		}
	}
}
