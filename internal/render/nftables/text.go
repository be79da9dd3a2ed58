package nftables

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// String prints the ruleset exactly as `nft list table ip vxflow` (nft 1.0.6) lists it after the applier has
// programmed it, except for the order of elements inside a set and of sets and chains created by later
// partial syncs, which depend on the kernel's hash tables and on history; elements are printed sorted.
func (r *Ruleset) String() string {
	r = r.Flat()
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {\n", TableName)
	first := true
	sep := func() {
		if !first {
			b.WriteByte('\n')
		}
		first = false
	}
	for _, s := range r.Sets {
		sep()
		s.write(&b)
	}
	for _, c := range r.Chains {
		sep()
		c.write(&b)
	}
	b.WriteString("}\n")
	return b.String()
}

// write prints one set or map block.
func (s *Set) write(b *strings.Builder) {
	kind := "set"
	if s.Type.IsMap() {
		kind = "map"
	}
	fmt.Fprintf(b, "\t%s %s {\n", kind, s.Name)
	switch s.Type {
	case SetTypeAddr:
		b.WriteString("\t\ttype ipv4_addr\n")
	case SetTypeAddrProtoPortVerdict:
		b.WriteString("\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n")
	case SetTypeProtoPortVerdict:
		b.WriteString("\t\ttype inet_proto . inet_service : verdict\n")
	case SetTypeEndpointMap:
		b.WriteString("\t\ttypeof numgen random mod 1 : ip daddr . tcp dport\n")
	}
	if s.Dynamic() {
		// nft gives dynamic sets a default size, and the kernel reports it back.
		b.WriteString("\t\tsize 65535\n\t\tflags dynamic,timeout\n")
		fmt.Fprintf(b, "\t\ttimeout %s\n", nftDuration(s.Timeout))
	} else if s.Interval {
		b.WriteString("\t\tflags interval\n")
	}
	if len(s.Elements) > 0 {
		elems := slices.Clone(s.Elements)
		slices.SortFunc(elems, compareElements)
		b.WriteString("\t\telements = { ")
		for i, e := range elems {
			if i > 0 {
				// nft puts two addresses on a line and every concatenated element on its own line.
				// The endpoint map's elements go five on a line.
				if s.Type == SetTypeAddr && i%2 == 1 || s.Type == SetTypeEndpointMap && i%5 != 0 {
					b.WriteString(", ")
				} else {
					b.WriteString(",\n\t\t\t     ")
				}
			}
			b.WriteString(s.elementString(e))
		}
		b.WriteString(" }\n")
	}
	b.WriteString("\t}\n")
}

// elementString prints one element.
func (s *Set) elementString(e Element) string {
	switch s.Type {
	case SetTypeAddrProtoPortVerdict:
		return fmt.Sprintf("%s . %s . %d : %s", prefixString(e.Prefix), e.Proto, e.Port, e.Verdict)
	case SetTypeProtoPortVerdict:
		return fmt.Sprintf("%s . %d : %s", e.Proto, e.Port, e.Verdict)
	case SetTypeEndpointMap:
		return fmt.Sprintf("%d : %s . %d", e.Index, e.Target.Addr(), e.Target.Port())
	}
	return prefixString(e.Prefix)
}

// write prints one chain block.
func (c *Chain) write(b *strings.Builder) {
	fmt.Fprintf(b, "\tchain %s {\n", c.Name)
	if c.Base != nil {
		fmt.Fprintf(b, "\t\ttype %s hook %s priority %s; policy accept;\n", c.Base.Type, c.Base.Hook,
			priorityString(c.Base.Hook, c.Base.Priority))
	}
	for _, r := range c.Rules {
		b.WriteString("\t\t")
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	b.WriteString("\t}\n")
}

// String prints the rule as one line of `nft list`.
func (r Rule) String() string {
	parts := make([]string, 0, len(r.Stmts)+1)
	for _, s := range r.Stmts {
		parts = append(parts, s.String())
	}
	if r.Comment != "" {
		parts = append(parts, fmt.Sprintf("comment %q", r.Comment))
	}
	return strings.Join(parts, " ")
}

// priorityString prints a hook priority the way nft 1.0.6 does: by standard name, with an offset of at
// most 10, when that name is valid for the hook (dstnat only in prerouting, srcnat only in postrouting),
// otherwise as a number.
func priorityString(hook Hook, prio int) string {
	std := []struct {
		name string
		val  int
	}{{"raw", -300}, {"mangle", -150}, {"dstnat", -100}, {"filter", 0}, {"security", 50}, {"srcnat", 100}}
	for _, s := range std {
		off := prio - s.val
		if off < -10 || off > 10 {
			continue
		}
		if (s.name == "dstnat" && hook != HookPrerouting) || (s.name == "srcnat" && hook != HookPostrouting) {
			break
		}
		switch {
		case off > 0:
			return fmt.Sprintf("%s + %d", s.name, off)
		case off < 0:
			return fmt.Sprintf("%s - %d", s.name, -off)
		}
		return s.name
	}
	return fmt.Sprintf("%d", prio)
}

// nftDuration prints a duration like nft: 3h, 1h30m, 1m40s.
func nftDuration(d time.Duration) string {
	var b strings.Builder
	units := []struct {
		suffix string
		d      time.Duration
	}{{"d", 24 * time.Hour}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}, {"ms", time.Millisecond}}
	for _, u := range units {
		if n := d / u.d; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.suffix)
			d -= n * u.d
		}
	}
	if b.Len() == 0 {
		return "0s"
	}
	return b.String()
}

// prefixString prints an address for a /32 and a CIDR otherwise.
func prefixString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

func (f AddrField) String() string {
	if f == SAddr {
		return "saddr"
	}
	return "daddr"
}

func negation(n bool) string {
	if n {
		return "!= "
	}
	return ""
}

// String is part of Stmt.
func (m MatchAddr) String() string {
	return fmt.Sprintf("ip %s %s%s", m.Field, negation(m.Negate), prefixString(m.Prefix))
}

// String is part of Stmt.
func (m MatchAddrSet) String() string {
	return fmt.Sprintf("ip %s %s@%s", m.Field, negation(m.Negate), m.Set)
}

// String is part of Stmt.
func (m MatchProto) String() string {
	return "meta l4proto " + m.Proto.String()
}

// String is part of Stmt.
func (m MatchDPort) String() string {
	return fmt.Sprintf("%s dport %d", m.Proto, m.Port)
}

// String is part of Stmt.
func (m MatchMark) String() string {
	want := uint32(0)
	if m.Set {
		want = m.Mask
	}
	return fmt.Sprintf("meta mark & 0x%08x == 0x%08x", m.Mask, want)
}

// String is part of Stmt.
func (MatchCtStateNew) String() string { return "ct state new" }

// String is part of Stmt.
func (MatchCtStatusDNAT) String() string { return "ct status dnat" }

// String is part of Stmt.
func (m MatchFibLocal) String() string {
	return fmt.Sprintf("fib %s type local", m.Field)
}

// String is part of Stmt.
func (m MatchNumgen) String() string {
	return fmt.Sprintf("numgen random mod %d 0", m.Mod)
}

// String is part of Stmt.
func (v Vmap) String() string {
	if v.Key == VmapKeyProtoPort {
		return "meta l4proto . th dport vmap @" + v.Map
	}
	return "ip daddr . meta l4proto . th dport vmap @" + v.Map
}

// String is part of Stmt.
func (v Verdict) String() string {
	switch v.Kind {
	case VerdictAccept:
		return "accept"
	case VerdictDrop:
		return "drop"
	case VerdictReturn:
		return "return"
	case VerdictJump:
		return "jump " + v.Chain
	case VerdictGoto:
		return "goto " + v.Chain
	}
	return fmt.Sprintf("verdict(%d)", v.Kind)
}

// String is part of Stmt.
func (m MarkSet) String() string {
	op := "|"
	if m.Xor {
		op = "^"
	}
	return fmt.Sprintf("meta mark set meta mark %s 0x%08x", op, m.Bits)
}

// String is part of Stmt.
func (m Masquerade) String() string {
	if m.FullyRandom {
		return "masquerade fully-random"
	}
	return "masquerade"
}

// String is part of Stmt.
func (d DNAT) String() string {
	return "dnat to " + netip.AddrPortFrom(d.Addr, d.Port).String()
}

// String is part of Stmt.
func (d DNATMap) String() string {
	return fmt.Sprintf("dnat ip to numgen random mod %d offset %d map @%s", d.Mod, d.Offset, d.Map)
}

// String is part of Stmt.
func (r Reject) String() string {
	if r.TCPReset {
		return "reject with tcp reset"
	}
	return "reject"
}

// String is part of Stmt.
func (Notrack) String() string { return "notrack" }

// String is part of Stmt.
func (a AffinityUpdate) String() string {
	return fmt.Sprintf("update @%s { ip saddr }", a.Set)
}
