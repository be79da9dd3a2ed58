package ipam

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// benchAllocator returns an allocator over 10.128.0.0/14 cut into /23s (512 subnets) plus 100.64.0.0/10 cut into
// /26s (65536), with filled subnets already handed out.
func benchAllocator(b *testing.B, filled int) (*Allocator, []string) {
	b.Helper()
	a, err := New(mustRanges(b, "10.128.0.0/14", 23, "100.64.0.0/10", 26))
	if err != nil {
		b.Fatal(err)
	}
	names := make([]string, filled)
	for i := range names {
		names[i] = fmt.Sprintf("node-%d", i)
		if _, err := a.Allocate(names[i]); err != nil {
			b.Fatal(err)
		}
	}
	return a, names
}

// BenchmarkAllocateRelease frees one subnet in the middle of 5,000 and allocates it again: two allocator
// operations per iteration.
func BenchmarkAllocateRelease(b *testing.B) {
	a, names := benchAllocator(b, 5000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := names[i%len(names)]
		a.Release(n)
		if _, err := a.Allocate(n); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(2*b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkFill allocates 65,536 subnets into an empty allocator: the cost of a cold start.
func BenchmarkFill(b *testing.B) {
	names := make([]string, 65536)
	for i := range names {
		names[i] = fmt.Sprintf("node-%d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a, _ := New(mustRanges(b, "10.128.0.0/14", 23, "100.64.0.0/10", 26))
		for _, n := range names {
			if _, err := a.Allocate(n); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(len(names)*b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkMark marks 5,000 existing subnets, as a controller does on start.
func BenchmarkMark(b *testing.B) {
	src, names := benchAllocator(b, 5000)
	holdings := src.Holdings()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a, _ := New(src.Ranges())
		for _, n := range names {
			if err := a.Mark(n, holdings[n]); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(len(names)*b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkLedgerRebuild rebuilds a ledger of 5,000 claims, as every allocation round does.
func BenchmarkLedgerRebuild(b *testing.B) {
	src, names := benchAllocator(b, 5000)
	claims := make([]Claim, len(names))
	for i, n := range names {
		p, _ := src.Lookup(n)
		claims[i] = Claim{Name: n, Subnet: p, Created: time.Unix(int64(i/100), 0)}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := NewLedger(src.Ranges(), claims); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckConflict measures the slow path: a hand-made subnet that overlaps, which scans the holders to
// name them.
func BenchmarkCheckConflict(b *testing.B) {
	a, _ := benchAllocator(b, 5000)
	p := netip.MustParsePrefix("10.128.0.0/22")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if a.Check(p) == nil {
			b.Fatal("no conflict")
		}
	}
}
