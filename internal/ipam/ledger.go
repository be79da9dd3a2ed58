package ipam

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Claim is one HostSubnet's hold on a subnet, with what decides who wins a conflict: the older claim, then the
// smaller name.
type Claim struct {
	// Name is the HostSubnet's name.
	Name string
	// Subnet is spec.subnet; the zero Prefix stands for one that does not parse.
	Subnet netip.Prefix
	// Created is the HostSubnet's creationTimestamp.
	Created time.Time
}

// compareClaims orders claims by age, then name, so every controller picks the same winner of a conflict.
func compareClaims(a, b Claim) int {
	if c := a.Created.Compare(b.Created); c != 0 {
		return c
	}
	return cmp.Compare(a.Name, b.Name)
}

// Ledger is the allocator plus every claim, including refused ones. Its state depends only on the ranges
// and the set of claims, never on the order they were added in: Upsert and Remove keep it equal to what
// NewLedger builds from the same claims.
type Ledger struct {
	alloc  *Allocator
	claims map[string]Claim
	// losers are the names of claims the allocator refused.
	losers map[string]struct{}
	// rebuilds counts full rebuilds, for tests and metrics.
	rebuilds int
}

// NewLedger builds a ledger over ranges from claims, oldest first, so a restarted controller reaches the
// verdicts the running one had.
func NewLedger(ranges []Range, claims []Claim) (*Ledger, error) {
	alloc, err := New(ranges)
	if err != nil {
		return nil, fmt.Errorf("failed to build ledger: %w", err)
	}
	l := &Ledger{alloc: alloc, claims: make(map[string]Claim, len(claims)), losers: map[string]struct{}{}}
	for _, c := range claims {
		l.claims[c.Name] = c
	}
	l.replay()
	return l, nil
}

// replay re-marks every claim on an empty allocator, oldest first.
func (l *Ledger) replay() {
	alloc, _ := New(l.alloc.Ranges()) // The ranges were validated when the allocator was made.
	l.alloc = alloc
	l.losers = map[string]struct{}{}
	l.rebuilds++
	for _, c := range l.Claims() {
		if err := l.alloc.Mark(c.Name, c.Subnet); err != nil {
			l.losers[c.Name] = struct{}{}
		}
	}
}

// SetRanges replaces the ranges and re-decides every claim against them.
func (l *Ledger) SetRanges(ranges []Range) error {
	if slices.Equal(ranges, l.alloc.Ranges()) {
		return nil
	}
	alloc, err := New(ranges)
	if err != nil {
		return fmt.Errorf("failed to set ranges: %w", err)
	}
	l.alloc = alloc
	l.replay()
	return nil
}

// Ranges returns the ranges in allocation order.
func (l *Ledger) Ranges() []Range { return l.alloc.Ranges() }

// Claims returns every claim, oldest first.
func (l *Ledger) Claims() []Claim {
	out := make([]Claim, 0, len(l.claims))
	for _, c := range l.claims {
		out = append(out, c)
	}
	slices.SortFunc(out, compareClaims)
	return out
}

// Claim returns the claim called name.
func (l *Ledger) Claim(name string) (Claim, bool) {
	c, ok := l.claims[name]
	return c, ok
}

// Upsert adds or replaces a claim and re-decides what it touches.
func (l *Ledger) Upsert(c Claim) {
	if old, ok := l.claims[c.Name]; ok {
		if old == c {
			return
		}
		l.Remove(c.Name)
	}
	l.claims[c.Name] = c
	err := l.alloc.Mark(c.Name, c.Subnet)
	if err == nil {
		return
	}
	// A newer claim simply loses; an older one must win, which may turn winners into losers: replay.
	if ce, ok := err.(*ConflictError); ok {
		for _, w := range ce.With {
			if compareClaims(c, l.claims[w]) < 0 {
				l.replay()
				return
			}
		}
	}
	l.losers[c.Name] = struct{}{}
}

// Remove drops the claim called name; losers that collided with it may now win.
func (l *Ledger) Remove(name string) {
	if _, ok := l.claims[name]; !ok {
		return
	}
	delete(l.claims, name)
	if _, lost := l.losers[name]; lost {
		delete(l.losers, name)
		return
	}
	p, _ := l.alloc.Release(name)
	for n := range l.losers {
		if q := l.claims[n].Subnet; q.IsValid() && q.Overlaps(p) {
			l.replay()
			return
		}
	}
}

// Allocate gives name the lowest free subnet that overlaps no claim at all, refused ones included, and
// records the claim as created at created; a name that already holds a subnet gets it back. Avoiding refused
// claims matters because the oldest claim wins: were a new subnet to overlap an older refused one, removing
// that claim's rival would later make it displace the new, live subnet.
func (l *Ledger) Allocate(name string, created time.Time) (netip.Prefix, error) {
	if _, lost := l.losers[name]; lost {
		return netip.Prefix{}, fmt.Errorf("failed to allocate a subnet for %s: it already has a refused claim", name)
	}
	if p, ok := l.alloc.Lookup(name); ok {
		return p, nil
	}
	var skipped []string
	defer func() {
		for _, s := range skipped {
			l.alloc.Release(s)
		}
	}()
	for {
		p, err := l.alloc.Allocate(name)
		if err != nil {
			return netip.Prefix{}, err
		}
		if !l.overlapsLoser(p) {
			l.claims[name] = Claim{Name: name, Subnet: p, Created: created}
			return p, nil
		}
		// Keep p taken under a placeholder while searching on; the deferred release frees it.
		l.alloc.Release(name)
		skip := fmt.Sprintf("\x00skip-%d", len(skipped))
		if err := l.alloc.Mark(skip, p); err != nil {
			return netip.Prefix{}, fmt.Errorf("failed to skip subnet %s: %w", p, err)
		}
		skipped = append(skipped, skip)
	}
}

// overlapsLoser reports whether p shares an address with any refused claim.
func (l *Ledger) overlapsLoser(p netip.Prefix) bool {
	for n := range l.losers {
		if q := l.claims[n].Subnet; q.IsValid() && q.Overlaps(p) {
			return true
		}
	}
	return false
}

// Verdict returns nil when the claim called name holds its subnet, and the conflict that stops it otherwise;
// ok is false when there is no such claim.
func (l *Ledger) Verdict(name string) (conflict *ConflictError, ok bool) {
	c, ok := l.claims[name]
	if !ok {
		return nil, false
	}
	if _, lost := l.losers[name]; !lost {
		return nil, true
	}
	if ce := l.alloc.Check(c.Subnet); ce != nil {
		return ce, true
	}
	// Unreachable while the invariants hold; say so rather than call a loser a winner.
	return &ConflictError{Subnet: c.Subnet, Reason: ReasonOverlap}, true
}

// Losers returns the names of refused claims, sorted.
func (l *Ledger) Losers() []string {
	out := make([]string, 0, len(l.losers))
	for n := range l.losers {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Holdings returns the subnet of every claim that holds one.
func (l *Ledger) Holdings() map[string]netip.Prefix { return l.alloc.Holdings() }

// Capacity returns how many node-sized subnets the ranges hold and how many are in use.
func (l *Ledger) Capacity() (total, allocated uint64) { return l.alloc.Capacity() }

// Rebuilds is how many times the ledger replayed every claim.
func (l *Ledger) Rebuilds() int { return l.rebuilds }
