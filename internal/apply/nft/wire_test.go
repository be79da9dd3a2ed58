package nft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/nftables"
	"github.com/vxflow/vxflow/internal/render/nftables/rendertest"
)

// referenceBytes encodes a statement's expressions with google/nftables, each wrapped in NFTA_LIST_ELEM as
// the library's AddRule does.
func referenceBytes(t *testing.T, s nftables.Stmt) []byte {
	t.Helper()
	exprs, err := compileStmt(s)
	if err != nil {
		t.Fatalf("compileStmt(%v): %v", s, err)
	}
	var out []byte
	for _, e := range exprs {
		data, err := expr.Marshal(unix.NFPROTO_IPV4, e)
		if err != nil {
			t.Fatalf("expr.Marshal(%T): %v", e, err)
		}
		out = binary.NativeEndian.AppendUint16(out, uint16(4+len(data)))
		out = binary.NativeEndian.AppendUint16(out, unix.NFTA_LIST_ELEM|nlaFNested)
		out = append(out, data...)
	}
	return out
}

// TestWireMatchesGoogleNftables encodes every statement of every golden ruleset, plus a few shapes the
// golden cases lack, and compares the bytes with google/nftables' encoding.
func TestWireMatchesGoogleNftables(t *testing.T) {
	stmts := map[nftables.Stmt]bool{
		nftables.MatchAddr{Field: nftables.SAddr, Prefix: netip.MustParsePrefix("0.0.0.0/0")}:                   true,
		nftables.MatchAddr{Field: nftables.SAddr, Negate: true, Prefix: netip.MustParsePrefix("10.128.0.0/14")}: true,
		nftables.MatchFibLocal{Field: nftables.DAddr}:                                                           true,
		nftables.MatchMark{Mask: 0x4000, Set: true}:                                                             true,
		nftables.MatchProto{Proto: model.L4ProtoSCTP}:                                                           true,
		nftables.Masquerade{}: true,
		nftables.DNATMap{Mod: 3, Offset: 8192, Map: "service-endpoints"}: true,
	}
	for _, c := range rendertest.Cases() {
		for _, ch := range nftables.Render(c.Build(t)).Chains {
			for _, r := range ch.Rules {
				for _, s := range r.Stmts {
					stmts[s] = true
				}
			}
		}
	}
	kinds := map[string]bool{}
	for s := range stmts {
		b := newBatch("vxflow", 0, 0)
		start := len(b.buf)
		b.stmt(s)
		got := b.buf[start:]
		if want := referenceBytes(t, s); !bytes.Equal(got, want) {
			t.Errorf("%q (%T):\n got  %x\n want %x", s.String(), s, got, want)
		}
		kinds[typeName(s)] = true
	}
	if len(kinds) != 18 {
		t.Errorf("covered %d statement types, want all 18: %v", len(kinds), kinds)
	}
}

func typeName(s nftables.Stmt) string {
	return fmt.Sprintf("%T", s)
}

// TestIntervalKeys checks nft's interval encoding: a 0.0.0.0 end element first, touching ranges merged.
func TestIntervalKeys(t *testing.T) {
	pfx := func(s ...string) []nftables.Element {
		var out []nftables.Element
		for _, p := range s {
			out = append(out, nftables.Element{Prefix: netip.MustParsePrefix(p)})
		}
		return out
	}
	tests := []struct {
		in   []nftables.Element
		keys []string
		ends []bool
	}{
		{pfx("10.128.0.0/14"), []string{"0.0.0.0", "10.128.0.0", "10.132.0.0"}, []bool{true, false, true}},
		{pfx("10.128.0.0/15", "10.130.0.0/15", "10.200.0.0/16"),
			[]string{"0.0.0.0", "10.128.0.0", "10.132.0.0", "10.200.0.0", "10.201.0.0"}, []bool{true, false, true, false, true}},
		{pfx("0.0.0.0/0"), []string{"0.0.0.0"}, []bool{false}},
	}
	for _, tc := range tests {
		keys, ends := intervalKeys(tc.in)
		var got []string
		for _, k := range keys {
			got = append(got, netip.AddrFrom4([4]byte(k)).String())
		}
		if len(got) != len(tc.keys) {
			t.Fatalf("%v: got %v %v, want %v %v", tc.in, got, ends, tc.keys, tc.ends)
		}
		for i := range got {
			if got[i] != tc.keys[i] || ends[i] != tc.ends[i] {
				t.Fatalf("%v: got %v %v, want %v %v", tc.in, got, ends, tc.keys, tc.ends)
			}
		}
	}
}
