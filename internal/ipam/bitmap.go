package ipam

import "math/bits"

// Pages of the bitmap are allocated on first use, so a /1 cut into /30s (2^29 slots) costs memory only for
// the parts that are in use; a full page is skipped in one step when searching for a free slot.
const (
	pageShift = 16
	pageSlots = 1 << pageShift
	pageWords = pageSlots / 64
)

// bitmap is a set of slot indexes in [0, size) with a fast lowest-clear-bit search.
type bitmap struct {
	size   uint64
	pages  [][]uint64
	counts []uint32
	set    uint64
}

// newBitmap returns an empty bitmap of size slots.
func newBitmap(size uint64) *bitmap {
	n := (size + pageSlots - 1) / pageSlots
	return &bitmap{size: size, pages: make([][]uint64, n), counts: make([]uint32, n)}
}

// pageLen is the number of slots page p holds (the last page may be short).
func (b *bitmap) pageLen(p uint64) uint64 {
	if rest := b.size - p*pageSlots; rest < pageSlots {
		return rest
	}
	return pageSlots
}

// page returns page p, allocating it when alloc is true.
func (b *bitmap) page(p uint64, alloc bool) []uint64 {
	if b.pages[p] == nil && alloc {
		b.pages[p] = make([]uint64, (b.pageLen(p)+63)/64)
	}
	return b.pages[p]
}

// get reports whether slot i is set.
func (b *bitmap) get(i uint64) bool {
	pg := b.pages[i>>pageShift]
	if pg == nil {
		return false
	}
	off := i & (pageSlots - 1)
	return pg[off/64]&(1<<(off%64)) != 0
}

// chunk calls fn for every (page, word, mask) covering [lo, lo+n); fn returns false to stop.
func (b *bitmap) chunk(lo, n uint64, fn func(p uint64, w uint64, mask uint64) bool) {
	for i, end := lo, lo+n; i < end; {
		off := i % 64
		width := uint64(64) - off
		if end-i < width {
			width = end - i
		}
		mask := ^uint64(0)
		if width < 64 {
			mask = (uint64(1)<<width - 1) << off
		}
		if !fn(i>>pageShift, (i&(pageSlots-1))/64, mask) {
			return
		}
		i += width
	}
}

// anySet reports whether any slot in [lo, lo+n) is set.
func (b *bitmap) anySet(lo, n uint64) bool {
	found := false
	for i, end := lo, lo+n; i < end && !found; {
		p := i >> pageShift
		pageEnd := (p + 1) * pageSlots
		if pageEnd > end {
			pageEnd = end
		}
		switch {
		case b.counts[p] == 0:
			// Nothing set in this page.
		case uint64(b.counts[p]) == b.pageLen(p):
			found = true
		default:
			b.chunk(i, pageEnd-i, func(p, w, mask uint64) bool {
				if b.pages[p][w]&mask != 0 {
					found = true
				}
				return !found
			})
		}
		i = pageEnd
	}
	return found
}

// setRange sets every slot in [lo, lo+n); callers check first that none is set.
func (b *bitmap) setRange(lo, n uint64) {
	b.chunk(lo, n, func(p, w, mask uint64) bool {
		pg := b.page(p, true)
		added := bits.OnesCount64(mask &^ pg[w])
		pg[w] |= mask
		b.counts[p] += uint32(added)
		b.set += uint64(added)
		return true
	})
}

// clearRange clears every slot in [lo, lo+n) and drops pages that become empty.
func (b *bitmap) clearRange(lo, n uint64) {
	b.chunk(lo, n, func(p, w, mask uint64) bool {
		pg := b.pages[p]
		if pg == nil {
			return true
		}
		removed := bits.OnesCount64(mask & pg[w])
		pg[w] &^= mask
		b.counts[p] -= uint32(removed)
		b.set -= uint64(removed)
		if b.counts[p] == 0 {
			b.pages[p] = nil
		}
		return true
	})
}

// firstClear returns the lowest clear slot at or above from.
func (b *bitmap) firstClear(from uint64) (uint64, bool) {
	for p := from >> pageShift; p < uint64(len(b.pages)); p++ {
		start := p * pageSlots
		if from > start {
			start = from
		}
		if b.pages[p] == nil {
			return start, true
		}
		limit := b.pageLen(p)
		if uint64(b.counts[p]) == limit {
			continue
		}
		pg := b.pages[p]
		off := start - p*pageSlots
		for w := off / 64; w < uint64(len(pg)); w++ {
			word := pg[w]
			if w == off/64 {
				word |= uint64(1)<<(off%64) - 1 // ignore slots below from
			}
			if word == ^uint64(0) {
				continue
			}
			slot := w*64 + uint64(bits.TrailingZeros64(^word))
			if slot < limit {
				return p*pageSlots + slot, true
			}
			break
		}
	}
	return 0, false
}
