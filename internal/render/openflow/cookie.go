package openflow

import (
	"fmt"
	"net/netip"

	"github.com/vxflow/vxflow/internal/model"
)

// Cookie layout, after Antrea's (round | category | object), so that every flow on br0 names its owner:
//
//	bits 63..48  round: the pipeline round (PipelineRound) that rendered the flow
//	bits 47..40  category: node, remote node or pod (CookieCategory)
//	bits 39..32  reserved, zero
//	bits 31..0   object: 0 for node flows, the remote HostSubnet's subnet address, or the pod's IPv4 address
//
// The applier removes every flow that is not in the desired set, whatever its cookie, so flows of objects
// deleted while the agent was down disappear at the first sync. The cookie only tells logs, metrics and the
// CLI's trace who owned a flow and which pipeline round wrote it. The round is the pipeline's version, not a
// count of agent restarts: a per-restart round would rewrite every flow's cookie on each restart, and an
// agent restart must send no flow-mods when nothing changed.
const (
	cookieRoundShift    = 48
	cookieCategoryShift = 40
	cookieObjectMask    = 0xffffffff
	// CookieRoundMask selects the round bits, for example to count flows of an older round.
	CookieRoundMask uint64 = 0xffff << cookieRoundShift
)

// PipelineRound is the version of the pipeline's shape. Bump it whenever the renderer's output changes for
// the same input (a new table, a changed match or action), so that flows written by an older agent are
// recognisable in dumps while the first sync replaces them.
const PipelineRound = 1

// CookieCategory is the kind of object that owns a flow.
type CookieCategory uint8

const (
	// CategoryNode owns flows that depend only on the ClusterNetwork and this node.
	CategoryNode CookieCategory = 1
	// CategoryRemoteNode owns the flows of one remote HostSubnet (tables 10, 50, 90).
	CategoryRemoteNode CookieCategory = 2
	// CategoryPod owns the flows of one local pod (tables 20, 25, 40, 70).
	CategoryPod CookieCategory = 3
)

// String names the category in DescribeCookie's output.
func (c CookieCategory) String() string {
	switch c {
	case CategoryNode:
		return "node"
	case CategoryRemoteNode:
		return "remote-node"
	case CategoryPod:
		return "pod"
	default:
		return fmt.Sprintf("category%d", uint8(c))
	}
}

// makeCookie packs a round, category and object into a cookie.
func makeCookie(cat CookieCategory, object uint32) uint64 {
	return uint64(PipelineRound)<<cookieRoundShift | uint64(cat)<<cookieCategoryShift | uint64(object)
}

// NodeCookie is the cookie of node-level flows.
func NodeCookie() uint64 {
	return makeCookie(CategoryNode, 0)
}

// RemoteNodeCookie is the cookie of the flows that tunnel to, and accept from, the node owning subnet.
func RemoteNodeCookie(subnet netip.Prefix) uint64 {
	return makeCookie(CategoryRemoteNode, ipv4Uint32(subnet.Addr()))
}

// PodCookie is the cookie of the flows of the local pod with address ip.
func PodCookie(ip netip.Addr) uint64 {
	return makeCookie(CategoryPod, ipv4Uint32(ip))
}

// CookieRound returns the pipeline round that wrote a flow.
func CookieRound(c uint64) uint16 {
	return uint16(c >> cookieRoundShift)
}

// CookieCategoryOf returns the kind of object that owns a flow.
func CookieCategoryOf(c uint64) CookieCategory {
	return CookieCategory(c >> cookieCategoryShift)
}

// DescribeCookie decodes a cookie for logs and the CLI, for example "round 1, pod 10.128.2.5" or
// "round 1, remote node of subnet 10.128.4.0".
func DescribeCookie(c uint64) string {
	round, cat, obj := CookieRound(c), CookieCategoryOf(c), uint32(c&cookieObjectMask)
	reserved := c >> 32 & 0xff
	switch {
	case c == 0:
		return "no cookie (not written by vxflow)"
	case reserved != 0:
		return fmt.Sprintf("foreign cookie %#x", c)
	case cat == CategoryNode && obj == 0:
		return fmt.Sprintf("round %d, node", round)
	case cat == CategoryRemoteNode:
		return fmt.Sprintf("round %d, remote node of subnet %s", round, uint32IPv4(obj))
	case cat == CategoryPod:
		return fmt.Sprintf("round %d, pod %s", round, uint32IPv4(obj))
	default:
		return fmt.Sprintf("round %d, %s object %#x", round, cat, obj)
	}
}

// CookieOwner names the object in view that owns a flow with cookie c, for example "HostSubnet node2" or
// "Pod ns1/web-0", or falls back to DescribeCookie when the view has no such object (a stale flow).
func CookieOwner(view *model.NodeView, c uint64) string {
	if view != nil && CookieRound(c) == PipelineRound {
		switch CookieCategoryOf(c) {
		case CategoryNode:
			if c == NodeCookie() {
				return "Node " + view.NodeName
			}
		case CategoryRemoteNode:
			for _, n := range view.RemoteNodes {
				if RemoteNodeCookie(n.Subnet) == c {
					return "HostSubnet " + n.Name
				}
			}
		case CategoryPod:
			for _, p := range view.LocalPods {
				if PodCookie(p.IP) == c {
					return "Pod " + p.Key()
				}
			}
		}
	}
	return "stale: " + DescribeCookie(c)
}

// ipv4Uint32 returns an IPv4 address as a number (0 for anything else).
func ipv4Uint32(ip netip.Addr) uint32 {
	if !ip.Is4() {
		return 0
	}
	b := ip.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// uint32IPv4 is the inverse of ipv4Uint32.
func uint32IPv4(n uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}
