package nftables

import (
	"net/netip"
	"testing"
	"time"

	"github.com/vxflow/vxflow/internal/model"
)

func TestPriorityString(t *testing.T) {
	tests := []struct {
		hook Hook
		prio int
		want string
	}{
		{HookPrerouting, -300, "raw"},
		{HookOutput, -300, "raw"},
		{HookPrerouting, -100, "dstnat"},
		{HookPrerouting, -110, "dstnat - 10"},
		{HookOutput, -100, "-100"},
		{HookInput, -110, "-110"},
		{HookOutput, -90, "-90"},
		{HookPostrouting, 100, "srcnat"},
		{HookInput, 0, "filter"},
		{HookForward, 5, "filter + 5"},
		{HookForward, 20, "20"},
	}
	for _, tc := range tests {
		if got := priorityString(tc.hook, tc.prio); got != tc.want {
			t.Errorf("priorityString(%s, %d) = %q, want %q", tc.hook, tc.prio, got, tc.want)
		}
	}
}

func TestNftDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		3 * time.Hour: "3h", 100 * time.Second: "1m40s", 90061 * time.Second: "1d1h1m1s", 0: "0s",
	} {
		if got := nftDuration(d); got != want {
			t.Errorf("nftDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestStatementText(t *testing.T) {
	tests := []struct {
		stmt Stmt
		want string
	}{
		{MatchAddr{Field: SAddr, Prefix: netip.MustParsePrefix("10.0.0.0/8")}, "ip saddr 10.0.0.0/8"},
		{MatchAddr{Field: DAddr, Negate: true, Prefix: netip.MustParsePrefix("1.2.3.4/32")}, "ip daddr != 1.2.3.4"},
		{MatchAddrSet{Field: SAddr, Negate: true, Set: "cluster-cidrs"}, "ip saddr != @cluster-cidrs"},
		{MatchDPort{Proto: model.L4ProtoSCTP, Port: 9}, "sctp dport 9"},
		{MatchMark{Mask: 0x4000}, "meta mark & 0x00004000 == 0x00000000"},
		{MatchNumgen{Mod: 3}, "numgen random mod 3 0"},
		{Vmap{Key: VmapKeyProtoPort, Map: "m"}, "meta l4proto . th dport vmap @m"},
		{MarkSet{Bits: 1, Xor: true}, "meta mark set meta mark ^ 0x00000001"},
		{DNAT{Addr: netip.MustParseAddr("10.1.2.3"), Port: 80}, "dnat to 10.1.2.3:80"},
		{Reject{TCPReset: true}, "reject with tcp reset"},
		{AffinityUpdate{Set: "a"}, "update @a { ip saddr }"},
	}
	for _, tc := range tests {
		if got := tc.stmt.String(); got != tc.want {
			t.Errorf("%#v prints %q, want %q", tc.stmt, got, tc.want)
		}
	}
}
