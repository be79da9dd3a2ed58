package nft

import (
	gnft "github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/vxflow/vxflow/internal/render/nftables"
)

// Registers as nft 1.0.6 allocates them, so that the kernel lists our rules exactly as it lists nft's own:
// the 128-bit register 1 for single values and the start of concatenations, the 32-bit registers 9 and 10
// (inside register 1's neighbour) for the following parts, register 2 for the DNAT port.
const (
	reg1   = unix.NFT_REG_1
	reg2   = unix.NFT_REG_2
	reg32A = 9
	reg32B = 10
)

// Byte offsets in the IPv4 header and the transport header.
const (
	offSAddr = 12
	offDAddr = 16
	offDPort = 2
)

// ctStatusDNAT is IPS_DST_NAT, ctStateNew is NF_CT_STATE_BIT(IP_CT_NEW), rtnLocal is RTN_LOCAL.
const (
	ctStatusDNAT = 1 << 5
	ctStateNew   = 1 << 3
	rtnLocal     = 2
	// icmpPortUnreachable is ICMP_PORT_UNREACH, the code `reject` uses in the ip family.
	icmpPortUnreachable = 3
)

// sameSetSpec reports whether two sets can share one kernel set: same name, type, flags and timeout.
func sameSetSpec(a, b *nftables.Set) bool {
	return a.Name == b.Name && a.Type == b.Type && a.Interval == b.Interval && a.Timeout == b.Timeout
}

// matchesKernelSet reports whether an existing kernel set has the desired definition, so that a full sync
// can keep it (and the entries the packet path put in an affinity set).
func matchesKernelSet(have *gnft.Set, want *nftables.Set) bool {
	_, length, _ := setKey(want.Type)
	return have.KeyType.Bytes == length && have.IsMap == want.Type.IsMap() &&
		have.Interval == (want.Interval && !want.Dynamic()) && have.HasTimeout == want.Dynamic() &&
		(!want.Dynamic() || have.Timeout == want.Timeout)
}
