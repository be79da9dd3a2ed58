package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

func mustRanges(t testing.TB, specs ...any) []Range {
	t.Helper()
	var out []Range
	for i := 0; i < len(specs); i += 2 {
		out = append(out, Range{CIDR: netip.MustParsePrefix(specs[i].(string)), HostPrefix: specs[i+1].(int)})
	}
	return out
}

func TestValidateRanges(t *testing.T) {
	tests := []struct {
		name    string
		ranges  []Range
		wantErr bool
	}{
		{name: "openshift default", ranges: mustRanges(t, "10.128.0.0/14", 23)},
		{name: "two ranges", ranges: mustRanges(t, "10.128.0.0/14", 23, "10.132.0.0/14", 24)},
		{name: "whole IPv4 space", ranges: mustRanges(t, "0.0.0.0/0", 30)},
		{name: "no ranges"},
		{name: "hostPrefix equal to cidr", ranges: mustRanges(t, "10.0.0.0/24", 24), wantErr: true},
		{name: "hostPrefix too long", ranges: mustRanges(t, "10.0.0.0/24", 31), wantErr: true},
		{name: "not canonical", ranges: []Range{{CIDR: netip.PrefixFrom(netip.MustParseAddr("10.0.0.1"), 24), HostPrefix: 26}}, wantErr: true},
		{name: "IPv6", ranges: mustRanges(t, "fd00::/48", 64), wantErr: true},
		{name: "zero prefix", ranges: []Range{{HostPrefix: 24}}, wantErr: true},
		{name: "overlapping", ranges: mustRanges(t, "10.0.0.0/16", 24, "10.0.128.0/17", 24), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateRanges(tt.ranges)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ValidateRanges() error = %v, wantErr %v", err, tt.wantErr)
			}
			if _, err := New(tt.ranges); (err != nil) != tt.wantErr {
				t.Fatalf("New() error = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}

func TestAllocateInOrder(t *testing.T) {
	a, err := New(mustRanges(t, "10.128.0.0/22", 24, "10.200.0.0/23", 24))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.128.0.0/24", "10.128.1.0/24", "10.128.2.0/24", "10.128.3.0/24", "10.200.0.0/24", "10.200.1.0/24"}
	for i, w := range want {
		owner := string(rune('a' + i))
		p, err := a.Allocate(owner)
		if err != nil {
			t.Fatalf("Allocate(%s) error: %v", owner, err)
		}
		if p.String() != w {
			t.Fatalf("Allocate(%s) = %s, want %s", owner, p, w)
		}
	}
	if _, err := a.Allocate("z"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Allocate on a full pool: error = %v, want ErrExhausted", err)
	}
	if total, used := a.Capacity(); total != 6 || used != 6 {
		t.Fatalf("Capacity() = %d, %d, want 6, 6", total, used)
	}
	// Allocate is idempotent per owner.
	if p, err := a.Allocate("b"); err != nil || p.String() != "10.128.1.0/24" {
		t.Fatalf("Allocate(b) again = %s, %v, want 10.128.1.0/24", p, err)
	}
	// The lowest freed subnet is reused first.
	for _, o := range []string{"e", "b"} {
		if _, ok := a.Release(o); !ok {
			t.Fatalf("Release(%s) found nothing", o)
		}
	}
	if _, ok := a.Release("b"); ok {
		t.Fatal("Release(b) twice succeeded")
	}
	for _, w := range []string{"10.128.1.0/24", "10.200.0.0/24"} {
		p, err := a.Allocate("new-" + w)
		if err != nil || p.String() != w {
			t.Fatalf("Allocate after release = %s, %v, want %s", p, err, w)
		}
	}
}

func TestMark(t *testing.T) {
	ranges := mustRanges(t, "10.128.0.0/16", 24, "10.200.0.0/24", 26)
	type mark struct {
		owner, subnet string
		reason        Reason // empty: accepted
		with          []string
	}
	tests := []struct {
		name      string
		marks     []mark
		wantUsed  uint64
		wantNext  string // what Allocate returns afterwards
		wantTotal uint64
	}{
		{
			name:     "node-sized",
			marks:    []mark{{owner: "a", subnet: "10.128.0.0/24"}, {owner: "b", subnet: "10.128.2.0/24"}},
			wantUsed: 2, wantNext: "10.128.1.0/24",
		},
		{
			name: "duplicate",
			marks: []mark{
				{owner: "a", subnet: "10.128.0.0/24"},
				{owner: "b", subnet: "10.128.0.0/24", reason: ReasonDuplicate, with: []string{"a"}},
			},
			wantUsed: 1, wantNext: "10.128.1.0/24",
		},
		{
			name: "same owner twice is a no-op",
			marks: []mark{
				{owner: "a", subnet: "10.128.0.0/24"},
				{owner: "a", subnet: "10.128.0.0/24"},
			},
			wantUsed: 1, wantNext: "10.128.1.0/24",
		},
		{
			name: "larger than a node subnet covers several slots",
			marks: []mark{
				{owner: "big", subnet: "10.128.0.0/22"},
				{owner: "inside", subnet: "10.128.3.0/24", reason: ReasonOverlap, with: []string{"big"}},
			},
			wantUsed: 4, wantNext: "10.128.4.0/24",
		},
		{
			name: "smaller subnets share a slot",
			marks: []mark{
				{owner: "x", subnet: "10.128.0.0/25"},
				{owner: "y", subnet: "10.128.0.128/26"},
				{owner: "z", subnet: "10.128.0.128/27", reason: ReasonOverlap, with: []string{"y"}},
				{owner: "whole", subnet: "10.128.0.0/24", reason: ReasonOverlap, with: []string{"x", "y"}},
			},
			wantUsed: 1, wantNext: "10.128.1.0/24",
		},
		{
			name: "containing two holders",
			marks: []mark{
				{owner: "a", subnet: "10.128.0.0/24"},
				{owner: "b", subnet: "10.128.1.128/25"},
				{owner: "c", subnet: "10.128.0.0/23", reason: ReasonOverlap, with: []string{"a", "b"}},
			},
			wantUsed: 2, wantNext: "10.128.2.0/24",
		},
		{
			name: "outside every range",
			marks: []mark{
				{owner: "a", subnet: "10.129.0.0/24", reason: ReasonOutsideClusterNetwork},
				{owner: "b", subnet: "10.0.0.0/8", reason: ReasonOutsideClusterNetwork},
				{owner: "c", subnet: "10.128.0.0/15", reason: ReasonOutsideClusterNetwork},
			},
			wantUsed: 0, wantNext: "10.128.0.0/24",
		},
		{
			name: "malformed",
			marks: []mark{
				{owner: "a", subnet: "10.128.0.1/24", reason: ReasonInvalidSubnet},
				{owner: "b", subnet: "10.128.0.0/31", reason: ReasonInvalidSubnet},
				{owner: "c", subnet: "fd00::/64", reason: ReasonInvalidSubnet},
				{owner: "d", subnet: "", reason: ReasonInvalidSubnet},
			},
			wantUsed: 0, wantNext: "10.128.0.0/24",
		},
		{
			name:     "second range with its own host prefix",
			marks:    []mark{{owner: "a", subnet: "10.200.0.64/26"}},
			wantUsed: 1, wantNext: "10.128.0.0/24",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(ranges)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tt.marks {
				var p netip.Prefix
				if m.subnet != "" {
					p = netip.MustParsePrefix(m.subnet)
				}
				err := a.Mark(m.owner, p)
				if m.reason == "" {
					if err != nil {
						t.Fatalf("Mark(%s, %s) error: %v", m.owner, m.subnet, err)
					}
					continue
				}
				var ce *ConflictError
				if !errors.As(err, &ce) {
					t.Fatalf("Mark(%s, %s) error = %v, want a %s conflict", m.owner, m.subnet, err, m.reason)
				}
				if ce.Reason != m.reason || !slices.Equal(ce.With, m.with) {
					t.Fatalf("Mark(%s, %s) = %s with %v, want %s with %v", m.owner, m.subnet, ce.Reason, ce.With, m.reason, m.with)
				}
				if ce.Error() == "" {
					t.Fatal("empty error message")
				}
			}
			if total, used := a.Capacity(); used != tt.wantUsed || total != 256+4 {
				t.Fatalf("Capacity() = %d, %d, want %d, %d", total, used, 260, tt.wantUsed)
			}
			if p, err := a.Allocate("next"); err != nil || p.String() != tt.wantNext {
				t.Fatalf("Allocate() = %s, %v, want %s", p, err, tt.wantNext)
			}
		})
	}
}

func TestMarkOwnerHoldsAnother(t *testing.T) {
	a, _ := New(mustRanges(t, "10.0.0.0/16", 24))
	if err := a.Mark("a", netip.MustParsePrefix("10.0.0.0/24")); err != nil {
		t.Fatal(err)
	}
	err := a.Mark("a", netip.MustParsePrefix("10.0.1.0/24"))
	var ce *ConflictError
	if err == nil || errors.As(err, &ce) {
		t.Fatalf("Mark of a second subnet for one owner: error = %v, want a plain error", err)
	}
}

func TestReleasePartialSlot(t *testing.T) {
	a, _ := New(mustRanges(t, "10.0.0.0/23", 24))
	for o, s := range map[string]string{"x": "10.0.0.0/25", "y": "10.0.0.128/25"} {
		if err := a.Mark(o, netip.MustParsePrefix(s)); err != nil {
			t.Fatal(err)
		}
	}
	if p, _ := a.Allocate("n"); p.String() != "10.0.1.0/24" {
		t.Fatalf("Allocate() = %s, want the slot no small subnet uses", p)
	}
	a.Release("n")
	a.Release("x")
	if p, _ := a.Allocate("n"); p.String() != "10.0.1.0/24" {
		t.Fatalf("Allocate() = %s, want 10.0.1.0/24 while y still uses part of 10.0.0.0/24", p)
	}
	a.Release("n")
	a.Release("y")
	if p, _ := a.Allocate("n"); p.String() != "10.0.0.0/24" {
		t.Fatalf("Allocate() = %s, want 10.0.0.0/24 once both small subnets are gone", p)
	}
	if _, used := a.Capacity(); used != 1 {
		t.Fatalf("allocated = %d, want 1", used)
	}
}

func TestLargeRangeIsLazy(t *testing.T) {
	// 2^30 slots: the bitmap must not allocate them up front.
	a, err := New(mustRanges(t, "0.0.0.0/0", 30))
	if err != nil {
		t.Fatal(err)
	}
	if total, _ := a.Capacity(); total != 1<<30 {
		t.Fatalf("total = %d, want 2^30", total)
	}
	// A hand-made /8 covers 2^22 slots, a page at a time.
	if err := a.Mark("ten", netip.MustParsePrefix("0.0.0.0/8")); err != nil {
		t.Fatal(err)
	}
	if p, _ := a.Allocate("n"); p.String() != "1.0.0.0/30" {
		t.Fatalf("Allocate() = %s, want 1.0.0.0/30", p)
	}
	if _, used := a.Capacity(); used != 1<<22+1 {
		t.Fatalf("allocated = %d, want 2^22+1", used)
	}
	a.Release("ten")
	if p, _ := a.Allocate("m"); p.String() != "0.0.0.0/30" {
		t.Fatalf("Allocate() = %s, want 0.0.0.0/30", p)
	}
}

func TestGateway(t *testing.T) {
	for in, want := range map[string]string{"10.128.2.0/23": "10.128.2.1", "10.0.0.4/30": "10.0.0.5"} {
		if got := Gateway(netip.MustParsePrefix(in)).String(); got != want {
			t.Errorf("Gateway(%s) = %s, want %s", in, got, want)
		}
	}
}
