package ipam

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// MaxHostPrefix is the longest node subnet: a /30 still holds a gateway and one pod.
const MaxHostPrefix = 30

// Range is one cluster network: CIDR cut into node subnets of length HostPrefix.
type Range struct {
	CIDR       netip.Prefix
	HostPrefix int
}

// String prints the range as the API writes it, for messages.
func (r Range) String() string {
	return fmt.Sprintf("%s (hostPrefix %d)", r.CIDR, r.HostPrefix)
}

// Size is how many node subnets the range holds.
func (r Range) Size() uint64 {
	return uint64(1) << (r.HostPrefix - r.CIDR.Bits())
}

// Reason names why a subnet cannot be held; the controller copies it into the Allocated condition.
type Reason string

const (
	// ReasonOverlap means the subnet shares addresses with a subnet another holder already has.
	ReasonOverlap Reason = "Overlap"
	// ReasonDuplicate means another holder already has exactly this subnet.
	ReasonDuplicate Reason = "Duplicate"
	// ReasonOutsideClusterNetwork means the subnet lies in no single cluster network.
	ReasonOutsideClusterNetwork Reason = "OutsideClusterNetwork"
	// ReasonInvalidSubnet means the subnet is not a canonical IPv4 prefix of length at most MaxHostPrefix.
	ReasonInvalidSubnet Reason = "InvalidSubnet"
)

// ConflictError says why a subnet cannot be held and which holders stand in its way.
type ConflictError struct {
	// Subnet is the refused subnet.
	Subnet netip.Prefix
	// Reason is the kind of conflict.
	Reason Reason
	// With names the holders it collides with, sorted (empty for OutsideClusterNetwork and InvalidSubnet).
	With []string
}

// Error explains the conflict in one sentence.
func (e *ConflictError) Error() string {
	switch e.Reason {
	case ReasonDuplicate:
		return fmt.Sprintf("subnet %s is already held by %s", e.Subnet, strings.Join(e.With, ", "))
	case ReasonOverlap:
		return fmt.Sprintf("subnet %s overlaps the subnet of %s", e.Subnet, strings.Join(e.With, ", "))
	case ReasonOutsideClusterNetwork:
		return fmt.Sprintf("subnet %s is not inside any cluster network", e.Subnet)
	default:
		return fmt.Sprintf("subnet %s is not a canonical IPv4 prefix of length at most /%d", e.Subnet, MaxHostPrefix)
	}
}

// ErrExhausted is returned by Allocate when every cluster network is full.
var ErrExhausted = errors.New("every cluster network is full")

// Allocator hands out node subnets from ranges in order, lowest free first, and records subnets held by name.
// It is not safe for concurrent use; the controller serializes access.
type Allocator struct {
	ranges  []*rangePool
	owners  map[string]netip.Prefix
	holders map[netip.Prefix]string
}

// rangePool is one range's state: a bit per node-sized slot, set when anything uses part of the slot.
type rangePool struct {
	Range
	base  uint32
	shift uint
	used  *bitmap
	// hint is a lower bound of the lowest clear slot.
	hint uint64
	// partial lists, per slot, the subnets smaller than a slot that use it; a set slot not listed here is
	// used whole.
	partial map[uint64][]netip.Prefix
}

// ValidateRanges checks what New needs: canonical IPv4 CIDRs, host prefixes longer than the CIDR and at most
// MaxHostPrefix, and no two ranges sharing an address.
func ValidateRanges(ranges []Range) error {
	for i, r := range ranges {
		if !r.CIDR.IsValid() || !r.CIDR.Addr().Is4() || r.CIDR != r.CIDR.Masked() {
			return fmt.Errorf("cluster network %q is not a canonical IPv4 CIDR", r.CIDR)
		}
		if r.HostPrefix <= r.CIDR.Bits() || r.HostPrefix > MaxHostPrefix {
			return fmt.Errorf("hostPrefix %d of cluster network %s must be longer than /%d and at most /%d",
				r.HostPrefix, r.CIDR, r.CIDR.Bits(), MaxHostPrefix)
		}
		for _, o := range ranges[:i] {
			if o.CIDR.Overlaps(r.CIDR) {
				return fmt.Errorf("cluster networks %s and %s overlap", o.CIDR, r.CIDR)
			}
		}
	}
	return nil
}

// New returns an empty allocator over ranges, tried in the order given.
func New(ranges []Range) (*Allocator, error) {
	if err := ValidateRanges(ranges); err != nil {
		return nil, fmt.Errorf("failed to create allocator: %w", err)
	}
	a := &Allocator{owners: map[string]netip.Prefix{}, holders: map[netip.Prefix]string{}}
	for _, r := range ranges {
		a.ranges = append(a.ranges, &rangePool{
			Range:   r,
			base:    addrToUint(r.CIDR.Addr()),
			shift:   uint(32 - r.HostPrefix),
			used:    newBitmap(r.Size()),
			partial: map[uint64][]netip.Prefix{},
		})
	}
	return a, nil
}

// Ranges returns the ranges in allocation order.
func (a *Allocator) Ranges() []Range {
	out := make([]Range, len(a.ranges))
	for i, rp := range a.ranges {
		out[i] = rp.Range
	}
	return out
}

// Capacity returns how many node-sized subnets the ranges hold and how many of them are in use, whole or in
// part.
func (a *Allocator) Capacity() (total, allocated uint64) {
	for _, rp := range a.ranges {
		total += rp.used.size
		allocated += rp.used.set
	}
	return total, allocated
}

// Len is the number of holders.
func (a *Allocator) Len() int { return len(a.owners) }

// Lookup returns the subnet owner holds.
func (a *Allocator) Lookup(owner string) (netip.Prefix, bool) {
	p, ok := a.owners[owner]
	return p, ok
}

// Holdings returns a copy of every holder's subnet.
func (a *Allocator) Holdings() map[string]netip.Prefix {
	out := make(map[string]netip.Prefix, len(a.owners))
	for k, v := range a.owners {
		out[k] = v
	}
	return out
}

// Allocate gives owner the lowest free node subnet of the first range that has one; an owner that already
// holds a subnet gets it back, so a retried call never allocates twice.
func (a *Allocator) Allocate(owner string) (netip.Prefix, error) {
	if p, ok := a.owners[owner]; ok {
		return p, nil
	}
	for _, rp := range a.ranges {
		if rp.used.set == rp.used.size {
			continue
		}
		slot, ok := rp.used.firstClear(rp.hint)
		if !ok {
			continue
		}
		rp.used.setRange(slot, 1)
		rp.hint = slot + 1
		p := rp.slotPrefix(slot)
		a.owners[owner] = p
		a.holders[p] = owner
		return p, nil
	}
	return netip.Prefix{}, ErrExhausted
}

// Mark records that owner holds p, as found in an existing HostSubnet. Marking what owner already holds is a
// no-op; a subnet that collides with another holder's, lies outside every range or is malformed is refused
// with a *ConflictError and nothing changes.
func (a *Allocator) Mark(owner string, p netip.Prefix) error {
	if q, ok := a.owners[owner]; ok {
		if q == p {
			return nil
		}
		return fmt.Errorf("failed to mark %s for %s: it already holds %s", p, owner, q)
	}
	if err := a.Check(p); err != nil {
		return err
	}
	rp, lo, n := a.locate(p)
	if p.Bits() > rp.HostPrefix {
		if !rp.used.get(lo) {
			rp.used.setRange(lo, 1)
		}
		rp.partial[lo] = append(rp.partial[lo], p)
	} else {
		rp.used.setRange(lo, n)
	}
	a.owners[owner] = p
	a.holders[p] = owner
	return nil
}

// Check returns the *ConflictError Mark would return for p, or nil when p is free.
func (a *Allocator) Check(p netip.Prefix) *ConflictError {
	if !ValidSubnet(p) {
		return &ConflictError{Subnet: p, Reason: ReasonInvalidSubnet}
	}
	if h, ok := a.holders[p]; ok {
		return &ConflictError{Subnet: p, Reason: ReasonDuplicate, With: []string{h}}
	}
	rp, lo, n := a.locate(p)
	if rp == nil {
		return &ConflictError{Subnet: p, Reason: ReasonOutsideClusterNetwork}
	}
	overlap := false
	if p.Bits() > rp.HostPrefix {
		if rp.used.get(lo) {
			parts, isPartial := rp.partial[lo]
			overlap = !isPartial || slices.ContainsFunc(parts, p.Overlaps)
		}
	} else {
		overlap = rp.used.anySet(lo, n)
	}
	if !overlap {
		return nil
	}
	return &ConflictError{Subnet: p, Reason: ReasonOverlap, With: a.holdersOverlapping(p)}
}

// Release frees owner's subnet and returns it.
func (a *Allocator) Release(owner string) (netip.Prefix, bool) {
	p, ok := a.owners[owner]
	if !ok {
		return netip.Prefix{}, false
	}
	delete(a.owners, owner)
	delete(a.holders, p)
	rp, lo, n := a.locate(p)
	if p.Bits() > rp.HostPrefix {
		parts := slices.DeleteFunc(rp.partial[lo], func(q netip.Prefix) bool { return q == p })
		if len(parts) > 0 {
			rp.partial[lo] = parts
			return p, true
		}
		delete(rp.partial, lo)
		n = 1
	}
	rp.used.clearRange(lo, n)
	rp.hint = min(rp.hint, lo)
	return p, true
}

// locate finds the range holding p and the slots [lo, lo+n) it uses; rp is nil when no range contains p.
func (a *Allocator) locate(p netip.Prefix) (rp *rangePool, lo, n uint64) {
	for _, r := range a.ranges {
		if r.CIDR.Bits() <= p.Bits() && r.CIDR.Contains(p.Addr()) {
			lo = uint64(addrToUint(p.Addr())-r.base) >> r.shift
			n = 1
			if p.Bits() < r.HostPrefix {
				n = uint64(1) << (r.HostPrefix - p.Bits())
			}
			return r, lo, n
		}
	}
	return nil, 0, 0
}

// holdersOverlapping lists, sorted, the holders whose subnet shares an address with p. It scans every holder,
// which is fine because it runs only when a conflict was found.
func (a *Allocator) holdersOverlapping(p netip.Prefix) []string {
	var out []string
	for q, h := range a.holders {
		if q.Overlaps(p) {
			out = append(out, h)
		}
	}
	slices.Sort(out)
	return out
}

// slotPrefix is the node subnet at slot.
func (rp *rangePool) slotPrefix(slot uint64) netip.Prefix {
	return netip.PrefixFrom(uintToAddr(rp.base+uint32(slot<<rp.shift)), rp.HostPrefix)
}

// ValidSubnet reports whether p can be a node subnet: canonical IPv4 with a prefix of at most MaxHostPrefix.
func ValidSubnet(p netip.Prefix) bool {
	return p.IsValid() && p.Addr().Is4() && p == p.Masked() && p.Bits() <= MaxHostPrefix
}

// Gateway is the node's gateway address in p: the first address after the network address.
func Gateway(p netip.Prefix) netip.Addr {
	return p.Masked().Addr().Next()
}

func addrToUint(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func uintToAddr(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}
