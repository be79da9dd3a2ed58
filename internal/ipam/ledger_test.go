package ipam

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func claim(name, subnet string, age int) Claim {
	c := Claim{Name: name, Created: t0.Add(time.Duration(age) * time.Second)}
	if subnet != "" {
		c.Subnet = netip.MustParsePrefix(subnet)
	}
	return c
}

func TestLedgerVerdicts(t *testing.T) {
	ranges := mustRanges(t, "10.128.0.0/16", 24)
	type verdict struct {
		reason Reason // empty: holds its subnet
		with   []string
	}
	tests := []struct {
		name   string
		claims []Claim
		want   map[string]verdict
	}{
		{
			name:   "older claim wins whatever the insertion order",
			claims: []Claim{claim("young", "10.128.0.0/24", 5), claim("old", "10.128.0.0/24", 1)},
			want:   map[string]verdict{"old": {}, "young": {reason: ReasonDuplicate, with: []string{"old"}}},
		},
		{
			name:   "same second: the smaller name wins",
			claims: []Claim{claim("b", "10.128.0.0/23", 1), claim("a", "10.128.1.0/24", 1)},
			want:   map[string]verdict{"a": {}, "b": {reason: ReasonOverlap, with: []string{"a"}}},
		},
		{
			name:   "an older big claim displaces two newer ones",
			claims: []Claim{claim("x", "10.128.0.0/24", 2), claim("y", "10.128.1.0/24", 3), claim("big", "10.128.0.0/23", 1)},
			want: map[string]verdict{
				"big": {},
				"x":   {reason: ReasonOverlap, with: []string{"big"}},
				"y":   {reason: ReasonOverlap, with: []string{"big"}},
			},
		},
		{
			name:   "outside and malformed",
			claims: []Claim{claim("out", "192.168.0.0/24", 1), claim("bad", "", 1)},
			want: map[string]verdict{
				"out": {reason: ReasonOutsideClusterNetwork},
				"bad": {reason: ReasonInvalidSubnet},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rebuilt, err := NewLedger(ranges, tt.claims)
			if err != nil {
				t.Fatal(err)
			}
			live, _ := NewLedger(ranges, nil)
			for _, c := range tt.claims {
				live.Upsert(c)
			}
			for _, l := range []*Ledger{rebuilt, live} {
				for name, w := range tt.want {
					ce, ok := l.Verdict(name)
					if !ok {
						t.Fatalf("Verdict(%s): no such claim", name)
					}
					switch {
					case w.reason == "" && ce != nil:
						t.Errorf("Verdict(%s) = %v, want it to hold its subnet", name, ce)
					case w.reason != "" && (ce == nil || ce.Reason != w.reason || !slices.Equal(ce.With, w.with)):
						t.Errorf("Verdict(%s) = %+v, want %s with %v", name, ce, w.reason, w.with)
					}
				}
			}
		})
	}
}

func TestLedgerRemoveLetsLoserWin(t *testing.T) {
	l, _ := NewLedger(mustRanges(t, "10.128.0.0/16", 24), []Claim{
		claim("old", "10.128.0.0/24", 1), claim("young", "10.128.0.0/24", 2),
	})
	l.Remove("old")
	if ce, _ := l.Verdict("young"); ce != nil {
		t.Fatalf("Verdict(young) = %v after its rival was removed, want it to hold", ce)
	}
	if p, _ := l.Allocate("n", t0); p.String() != "10.128.1.0/24" {
		t.Fatalf("Allocate() = %s, want 10.128.1.0/24", p)
	}
	if _, ok := l.Verdict("gone"); ok {
		t.Fatal("Verdict of an unknown claim reported ok")
	}
}

func TestLedgerSetRanges(t *testing.T) {
	l, _ := NewLedger(mustRanges(t, "10.128.0.0/23", 24), nil)
	a, _ := l.Allocate("a", t0)
	b, _ := l.Allocate("b", t0)
	if _, err := l.Allocate("c", t0); err != ErrExhausted {
		t.Fatalf("Allocate on a full pool: error = %v, want ErrExhausted", err)
	}
	// Adding a range adds capacity and keeps what was held.
	if err := l.SetRanges(mustRanges(t, "10.128.0.0/23", 24, "10.130.0.0/24", 25)); err != nil {
		t.Fatal(err)
	}
	if p, err := l.Allocate("c", t0); err != nil || p.String() != "10.130.0.0/25" {
		t.Fatalf("Allocate() after adding a range = %s, %v", p, err)
	}
	if total, used := l.Capacity(); total != 4 || used != 3 {
		t.Fatalf("Capacity() = %d, %d, want 4, 3", total, used)
	}
	// Removing the first range leaves a and b outside.
	if err := l.SetRanges(mustRanges(t, "10.130.0.0/24", 25)); err != nil {
		t.Fatal(err)
	}
	if got := l.Losers(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("Losers() = %v, want [a b]", got)
	}
	if ce, _ := l.Verdict("a"); ce == nil || ce.Reason != ReasonOutsideClusterNetwork || ce.Subnet != a {
		t.Fatalf("Verdict(a) = %v, want OutsideClusterNetwork for %s", ce, a)
	}
	// Putting it back restores them, subnets unchanged.
	if err := l.SetRanges(mustRanges(t, "10.128.0.0/23", 24, "10.130.0.0/24", 25)); err != nil {
		t.Fatal(err)
	}
	if h := l.Holdings(); h["a"] != a || h["b"] != b || len(l.Losers()) != 0 {
		t.Fatalf("Holdings() = %v losers %v, want a and b back", h, l.Losers())
	}
	if err := l.SetRanges(mustRanges(t, "10.0.0.0/8", 24, "10.1.0.0/16", 24)); err == nil {
		t.Fatal("SetRanges with overlapping ranges succeeded")
	}
	if _, err := l.Allocate("a", t0); err != nil {
		t.Fatalf("ledger unusable after a refused SetRanges: %v", err)
	}
}

func TestLedgerUpsertChangedSubnet(t *testing.T) {
	l, _ := NewLedger(mustRanges(t, "10.128.0.0/16", 24), []Claim{claim("a", "10.128.0.0/24", 1)})
	l.Upsert(claim("a", "10.128.5.0/24", 1))
	if h := l.Holdings(); h["a"].String() != "10.128.5.0/24" || len(h) != 1 {
		t.Fatalf("Holdings() = %v", h)
	}
	if p, _ := l.Allocate("b", t0); p.String() != "10.128.0.0/24" {
		t.Fatalf("Allocate() = %s, want the subnet a gave up", p)
	}
	if len(l.Claims()) != 2 {
		t.Fatalf("Claims() = %v", l.Claims())
	}
}

func TestLedgerAllocateAvoidsRefusedClaims(t *testing.T) {
	// "big" is refused because "a" is older; were a new node to get 10.128.1.0/24, removing "a" would let the
	// older "big" win and take the node's subnet away.
	l, _ := NewLedger(mustRanges(t, "10.128.0.0/16", 24), []Claim{
		claim("a", "10.128.0.0/24", 1), claim("big", "10.128.0.0/22", 2), claim("out", "10.128.4.0/31", 3),
	})
	p, err := l.Allocate("node", t0.Add(time.Hour))
	if err != nil || p.String() != "10.128.5.0/24" {
		t.Fatalf("Allocate() = %s, %v, want 10.128.5.0/24, past the refused 10.128.0.0/22 and 10.128.4.0/31", p, err)
	}
	if _, used := l.Capacity(); used != 2 {
		t.Fatalf("allocated = %d, want 2: the skipped subnets must be free again", used)
	}
	l.Remove("a")
	if ce, _ := l.Verdict("node"); ce != nil {
		t.Fatalf("Verdict(node) = %v after the refused claim won, want node to keep its subnet", ce)
	}
	if ce, _ := l.Verdict("big"); ce != nil {
		t.Fatalf("Verdict(big) = %v, want it to win once a is gone", ce)
	}
}
