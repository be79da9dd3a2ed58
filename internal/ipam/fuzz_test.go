package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// fuzzRanges are small so that random prefixes often hit, straddle and fill them.
var fuzzRanges = [][]Range{
	{{CIDR: netip.MustParsePrefix("10.0.0.0/26"), HostPrefix: 29}, {CIDR: netip.MustParsePrefix("10.0.1.0/28"), HostPrefix: 30}},
	{{CIDR: netip.MustParsePrefix("10.0.0.0/24"), HostPrefix: 27}},
	{{CIDR: netip.MustParsePrefix("10.0.1.0/28"), HostPrefix: 30}, {CIDR: netip.MustParsePrefix("10.0.2.0/23"), HostPrefix: 26}},
}

// fuzzPrefix turns two bytes into a prefix around the fuzz ranges: sometimes inside, sometimes across,
// sometimes outside, sometimes malformed.
func fuzzPrefix(a, b byte) netip.Prefix {
	addr := netip.AddrFrom4([4]byte{10, 0, a % 4, b})
	bits := 21 + int(a/4)%11 // 21..31
	p := netip.PrefixFrom(addr, bits)
	if a&0x80 == 0 {
		p = p.Masked()
	}
	return p
}

// checkInvariants verifies the allocator against a brute-force model.
func checkInvariants(t *testing.T, a *Allocator) {
	t.Helper()
	holdings := a.Holdings()
	ranges := a.Ranges()
	names := make([]string, 0, len(holdings))
	for n := range holdings {
		names = append(names, n)
	}
	slices.Sort(names)
	for i, n := range names {
		p := holdings[n]
		inside := false
		for _, r := range ranges {
			inside = inside || (r.CIDR.Bits() <= p.Bits() && r.CIDR.Contains(p.Addr()))
		}
		if !inside {
			t.Fatalf("%s holds %s, outside every range %v", n, p, ranges)
		}
		for _, m := range names[i+1:] {
			if p.Overlaps(holdings[m]) {
				t.Fatalf("%s holds %s and %s holds %s: overlap", n, p, m, holdings[m])
			}
		}
	}
	// Count used slots the slow way.
	var total, used uint64
	for _, r := range ranges {
		size := uint64(1) << (32 - r.HostPrefix)
		for s := uint64(0); s < r.Size(); s++ {
			slot := netip.PrefixFrom(uintToAddr(addrToUint(r.CIDR.Addr())+uint32(s*size)), r.HostPrefix)
			total++
			for _, p := range holdings {
				if p.Overlaps(slot) {
					used++
					break
				}
			}
		}
	}
	if gt, gu := a.Capacity(); gt != total || gu != used {
		t.Fatalf("Capacity() = %d, %d, brute force says %d, %d", gt, gu, total, used)
	}
}

// FuzzAllocator drives an Allocator with random allocate, mark and release calls and checks after each that
// no two subnets overlap, none lies outside the ranges, the counts are right, allocate and release round-trip,
// and marking the holdings on a fresh allocator gives the same state.
func FuzzAllocator(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 1, 1, 0, 2, 2, 3, 4, 5})
	f.Add([]byte{1, 1, 20, 1, 1, 2, 4, 64, 2, 2, 3, 0, 0, 1, 9, 9})
	f.Add([]byte{2, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8, 0, 9, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		ranges := fuzzRanges[int(data[0])%len(fuzzRanges)]
		a, err := New(ranges)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i+2 < len(data); i += 3 {
			op, owner := data[i]%4, fmt.Sprintf("n%d", data[i]/4%24)
			switch op {
			case 0, 1: // allocate, then check the round trip
				_, before := a.Capacity()
				_, had := a.Lookup(owner)
				p, err := a.Allocate(owner)
				if errors.Is(err, ErrExhausted) {
					if total, used := a.Capacity(); used != total || had {
						t.Fatalf("ErrExhausted with %d of %d used", used, total)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if op == 1 && !had {
					if q, ok := a.Release(owner); !ok || q != p {
						t.Fatalf("Release(%s) = %s, %v, want %s", owner, q, ok, p)
					}
					if _, after := a.Capacity(); after != before {
						t.Fatalf("allocate+release changed the count: %d -> %d", before, after)
					}
					if q, _ := a.Allocate(owner); q != p {
						t.Fatalf("Allocate after Release = %s, want %s again", q, p)
					}
				}
			case 2: // mark a random prefix
				p := fuzzPrefix(data[i+1], data[i+2])
				err := a.Mark(owner, p)
				var ce *ConflictError
				if err != nil && errors.As(err, &ce) {
					if ce.Reason == ReasonOverlap && len(ce.With) == 0 {
						t.Fatalf("Overlap of %s names no holder", p)
					}
				}
			case 3:
				a.Release(owner)
			}
			checkInvariants(t, a)
		}
		fresh, _ := New(ranges)
		for n, p := range a.Holdings() {
			if err := fresh.Mark(n, p); err != nil {
				t.Fatalf("rebuild: Mark(%s, %s): %v", n, p, err)
			}
		}
		gt, gu := a.Capacity()
		ft, fu := fresh.Capacity()
		if gt != ft || gu != fu {
			t.Fatalf("rebuilt capacity %d/%d, live %d/%d", fu, ft, gu, gt)
		}
	})
}

// FuzzLedger drives a Ledger with random upserts, removals, allocations and range changes, and checks that it
// always equals a ledger rebuilt from its claims, and that the allocator invariants hold.
func FuzzLedger(f *testing.F) {
	f.Add([]byte{0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Add([]byte{1, 4, 0, 64, 1, 8, 0, 0, 2, 9, 3, 3, 3, 2, 1, 0, 5})
	f.Add([]byte{2, 2, 0, 0, 6, 2, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		l, err := NewLedger(fuzzRanges[int(data[0])%len(fuzzRanges)], nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i+3 < len(data); i += 4 {
			op, name := data[i]%8, fmt.Sprintf("h%d", data[i]/8%20)
			created := t0.Add(time.Duration(data[i+3]%8) * time.Second)
			switch op {
			case 0, 1, 2:
				l.Upsert(Claim{Name: name, Subnet: fuzzPrefix(data[i+1], data[i+2]), Created: created})
			case 3, 4:
				l.Remove(name)
			case 5:
				_, had := l.Claim(name)
				p, err := l.Allocate(name, created)
				if err == nil && !had {
					for _, c := range l.Claims() {
						if c.Name != name && c.Subnet.IsValid() && c.Subnet.Overlaps(p) {
							t.Fatalf("Allocate(%s) = %s, which overlaps the claim of %s (%s)", name, p, c.Name, c.Subnet)
						}
					}
				}
			case 6:
				if err := l.SetRanges(fuzzRanges[int(data[i+1])%len(fuzzRanges)]); err != nil {
					t.Fatal(err)
				}
			case 7:
				if c, ok := l.Claim(name); ok {
					c.Created = created
					l.Upsert(c)
				}
			}
			checkInvariants(t, l.alloc)
			rebuilt, err := NewLedger(l.Ranges(), l.Claims())
			if err != nil {
				t.Fatal(err)
			}
			if !mapsEqual(l.Holdings(), rebuilt.Holdings()) || !slices.Equal(l.Losers(), rebuilt.Losers()) {
				t.Fatalf("live ledger holds %v, losers %v; rebuilt holds %v, losers %v",
					l.Holdings(), l.Losers(), rebuilt.Holdings(), rebuilt.Losers())
			}
			for _, n := range l.Losers() {
				live, _ := l.Verdict(n)
				want, _ := rebuilt.Verdict(n)
				if live == nil || want == nil || live.Reason != want.Reason || !slices.Equal(live.With, want.With) {
					t.Fatalf("Verdict(%s) = %+v, rebuilt says %+v", n, live, want)
				}
			}
			if len(l.Holdings())+len(l.Losers()) != len(l.Claims()) {
				t.Fatalf("%d holdings + %d losers != %d claims", len(l.Holdings()), len(l.Losers()), len(l.Claims()))
			}
		}
	})
}

func mapsEqual(a, b map[string]netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
