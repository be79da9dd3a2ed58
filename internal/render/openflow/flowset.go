package openflow

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// FlowSet is a bridge's complete desired flow set; Render returns it sorted by table, then priority
// (highest first), then match, which is also the order of its text form.
type FlowSet []Flow

// Sort puts the flows in FlowSet order.
func (s FlowSet) Sort() {
	slices.SortFunc(s, func(a, b Flow) int {
		if c := cmp.Compare(a.Table, b.Table); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Match, b.Match); c != 0 {
			return c
		}
		return cmp.Compare(a.Cookie, b.Cookie)
	})
}

// CheckUnique returns an error naming the first Key held by more than one flow: OpenFlow keeps one flow per
// (table, priority, match), so such a set could never be applied as rendered.
func (s FlowSet) CheckUnique() error {
	seen := make(map[string]Flow, len(s))
	for _, f := range s {
		k := f.Key()
		if prev, ok := seen[k]; ok {
			return fmt.Errorf("failed to render flows: %q and %q share the key %s", prev, f, k)
		}
		seen[k] = f
	}
	return nil
}

// CountByTable returns how many flows each table holds, for metrics and status.
func (s FlowSet) CountByTable() map[uint8]int {
	m := make(map[uint8]int)
	for _, f := range s {
		m[f.Table]++
	}
	return m
}

// String renders the set as an `ovs-ofctl add-flows` file: one flow per line in Flow.String form, in set
// order, with a comment line naming each table before its flows. It is the golden-file format.
func (s FlowSet) String() string {
	var b strings.Builder
	for i, f := range s {
		if i == 0 || s[i-1].Table != f.Table {
			if t, ok := LookupTable(f.Table); ok {
				fmt.Fprintf(&b, "# table %d %s: %s\n", t.ID, t.Name, t.Purpose)
			} else {
				fmt.Fprintf(&b, "# table %d\n", f.Table)
			}
		}
		b.WriteString(f.String())
		b.WriteByte('\n')
	}
	return b.String()
}
