package cli

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/nftables"
)

// ParseNFTRuleset reads `nft list table ip vxflow` back into the renderer's Ruleset, so that the trace
// follows the rules a node really has with the same code that follows rendered ones. Like kube-proxy's
// test tracer, it knows only the statement shapes vxflow's renderer writes (plus the counters and element
// expiries the kernel adds) and rejects anything else with its line number: a rule vxflow did not write is
// itself a finding.
func ParseNFTRuleset(text string) (*nftables.Ruleset, error) {
	p := &nftParser{lines: strings.Split(text, "\n")}
	rs, err := p.parse()
	if err != nil {
		return nil, fmt.Errorf("failed to parse the nftables table: line %d: %w", p.n, err)
	}
	return rs, nil
}

type nftParser struct {
	lines []string
	n     int // 1-based number of the line being parsed
}

// next returns the next non-blank line, trimmed, and false at the end.
func (p *nftParser) next() (string, bool) {
	for p.n < len(p.lines) {
		l := strings.TrimSpace(p.lines[p.n])
		p.n++
		if l != "" && !strings.HasPrefix(l, "#") {
			return l, true
		}
	}
	return "", false
}

func (p *nftParser) parse() (*nftables.Ruleset, error) {
	rs := &nftables.Ruleset{}
	l, ok := p.next()
	if !ok {
		return nil, fmt.Errorf("empty listing")
	}
	if l != "table ip "+nftables.TableName+" {" {
		return nil, fmt.Errorf("want %q, found %q", "table ip "+nftables.TableName+" {", l)
	}
	for {
		l, ok := p.next()
		if !ok {
			return nil, fmt.Errorf("the table is not closed")
		}
		switch {
		case l == "}":
			return rs, nil
		case strings.HasPrefix(l, "set ") || strings.HasPrefix(l, "map "):
			s, err := p.set(strings.TrimSuffix(strings.Fields(l)[1], " {"))
			if err != nil {
				return nil, err
			}
			rs.Sets = append(rs.Sets, s)
		case strings.HasPrefix(l, "chain "):
			c, err := p.chain(strings.TrimSuffix(strings.TrimPrefix(l, "chain "), " {"))
			if err != nil {
				return nil, err
			}
			rs.Chains = append(rs.Chains, c)
		case strings.HasPrefix(l, "comment "), strings.HasPrefix(l, "flags "):
		default:
			return nil, fmt.Errorf("unexpected %q in the table", l)
		}
	}
}

func (p *nftParser) set(name string) (*nftables.Set, error) {
	s := &nftables.Set{Name: name}
	for {
		l, ok := p.next()
		if !ok {
			return nil, fmt.Errorf("set %s is not closed", name)
		}
		switch {
		case l == "}":
			return s, nil
		case l == "type ipv4_addr":
			s.Type = nftables.SetTypeAddr
		case l == "type ipv4_addr . inet_proto . inet_service : verdict":
			s.Type = nftables.SetTypeAddrProtoPortVerdict
		case l == "type inet_proto . inet_service : verdict":
			s.Type = nftables.SetTypeProtoPortVerdict
		case l == "typeof numgen random mod 1 : ip daddr . tcp dport":
			s.Type = nftables.SetTypeEndpointMap
		case l == "flags interval":
			s.Interval = true
		case strings.HasPrefix(l, "flags "), strings.HasPrefix(l, "size "), strings.HasPrefix(l, "comment "):
		case strings.HasPrefix(l, "timeout "):
			d, err := parseNFTDuration(strings.TrimPrefix(l, "timeout "))
			if err != nil {
				return nil, err
			}
			s.Timeout = d
		case strings.HasPrefix(l, "elements = {"):
			body := strings.TrimPrefix(l, "elements = {")
			for !strings.HasSuffix(body, "}") {
				more, ok := p.next()
				if !ok {
					return nil, fmt.Errorf("the elements of %s are not closed", name)
				}
				body += " " + more
			}
			for _, e := range strings.Split(strings.TrimSuffix(body, "}"), ",") {
				if e = strings.TrimSpace(e); e == "" {
					continue
				}
				el, err := parseElement(s.Type, e)
				if err != nil {
					return nil, fmt.Errorf("set %s: %w", name, err)
				}
				s.Elements = append(s.Elements, el)
			}
		default:
			return nil, fmt.Errorf("unexpected %q in set %s", l, name)
		}
	}
}

// parseElement reads one element; the kernel's "timeout 3h expires 2h59m" annotations are ignored.
func parseElement(t nftables.SetType, e string) (nftables.Element, error) {
	var el nftables.Element
	key, verdict, hasVerdict := strings.Cut(e, " : ")
	parts := strings.Split(key, " . ")
	for i := range parts {
		f := strings.Fields(parts[i])
		if len(f) == 0 {
			return el, fmt.Errorf("element %q has an empty field", e)
		}
		parts[i] = f[0]
	}
	var err error
	switch t {
	case nftables.SetTypeAddr:
		el.Prefix, err = parsePrefixOrAddr(parts[0])
	case nftables.SetTypeAddrProtoPortVerdict:
		if len(parts) != 3 {
			return el, fmt.Errorf("element %q: want address . protocol . port", e)
		}
		if el.Prefix, err = parsePrefixOrAddr(parts[0]); err == nil {
			el.Proto, el.Port, err = parseProtoPort(parts[1], parts[2])
		}
	case nftables.SetTypeProtoPortVerdict:
		if len(parts) != 2 {
			return el, fmt.Errorf("element %q: want protocol . port", e)
		}
		el.Proto, el.Port, err = parseProtoPort(parts[0], parts[1])
	case nftables.SetTypeEndpointMap:
		el.Index, el.Target, err = parseEndpointElement(parts[0], verdict, hasVerdict)
	}
	if err != nil {
		return el, fmt.Errorf("element %q: %w", e, err)
	}
	if t.HasVerdicts() {
		if !hasVerdict {
			return el, fmt.Errorf("element %q of a map has no verdict", e)
		}
		v, n, err := parseVerdict(strings.Fields(verdict))
		if err != nil || n == 0 {
			return el, fmt.Errorf("element %q: unknown verdict %q", e, verdict)
		}
		el.Verdict = v
	}
	return el, nil
}

// parseEndpointElement reads an endpoint map element's index and its `address . port` data.
func parseEndpointElement(key, data string, hasData bool) (uint32, netip.AddrPort, error) {
	idx, err := strconv.ParseUint(key, 10, 32)
	if err != nil {
		return 0, netip.AddrPort{}, fmt.Errorf("invalid index %q", key)
	}
	f := strings.Fields(data)
	if !hasData || len(f) < 3 || f[1] != "." {
		return 0, netip.AddrPort{}, fmt.Errorf("want index : address . port")
	}
	a, err := netip.ParseAddr(f[0])
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	port, err := strconv.ParseUint(f[2], 10, 16)
	if err != nil {
		return 0, netip.AddrPort{}, fmt.Errorf("invalid port %q", f[2])
	}
	return uint32(idx), netip.AddrPortFrom(a, uint16(port)), nil
}

func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func parseProto(s string) (model.L4Proto, error) {
	switch s {
	case "tcp":
		return model.L4ProtoTCP, nil
	case "udp":
		return model.L4ProtoUDP, nil
	case "sctp":
		return model.L4ProtoSCTP, nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("unknown protocol %q", s)
	}
	return model.L4Proto(n), nil
}

func parseProtoPort(proto, port string) (model.L4Proto, uint16, error) {
	pr, err := parseProto(proto)
	if err != nil {
		return 0, 0, err
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return 0, 0, fmt.Errorf("invalid port %q", port)
	}
	return pr, uint16(n), nil
}

var nftDurationRE = regexp.MustCompile(`(\d+)(ms|d|h|m|s)`)

// parseNFTDuration reads nft's durations: 3h, 1h30m, 1m40s, 500ms.
func parseNFTDuration(s string) (time.Duration, error) {
	units := map[string]time.Duration{"d": 24 * time.Hour, "h": time.Hour, "m": time.Minute, "s": time.Second, "ms": time.Millisecond}
	ms := nftDurationRE.FindAllStringSubmatch(s, -1)
	if len(ms) == 0 || strings.Join(nftDurationRE.FindAllString(s, -1), "") != s {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	var d time.Duration
	for _, m := range ms {
		n, _ := strconv.Atoi(m[1])
		d += time.Duration(n) * units[m[2]]
	}
	return d, nil
}

var basePriorityRE = regexp.MustCompile(`^type (filter|nat) hook (prerouting|input|forward|output|postrouting) priority ([a-z]+|-?\d+)(?: ([+-]) (\d+))?; policy accept;$`)

func (p *nftParser) chain(name string) (*nftables.Chain, error) {
	c := &nftables.Chain{Name: name}
	for {
		l, ok := p.next()
		if !ok {
			return nil, fmt.Errorf("chain %s is not closed", name)
		}
		switch {
		case l == "}":
			return c, nil
		case strings.HasPrefix(l, "type "):
			m := basePriorityRE.FindStringSubmatch(l)
			if m == nil {
				return nil, fmt.Errorf("chain %s: unrecognised base chain %q", name, l)
			}
			prio, err := parsePriority(m[3], m[4], m[5])
			if err != nil {
				return nil, fmt.Errorf("chain %s: %w", name, err)
			}
			c.Base = &nftables.BaseChain{Type: nftables.ChainType(m[1]), Hook: nftables.Hook(m[2]), Priority: prio}
		case strings.HasPrefix(l, "comment "):
		default:
			r, err := ParseNFTRule(l)
			if err != nil {
				return nil, fmt.Errorf("chain %s: %w", name, err)
			}
			c.Rules = append(c.Rules, r)
		}
	}
}

func parsePriority(base, sign, off string) (int, error) {
	std := map[string]int{"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
	v, ok := std[base]
	if !ok {
		n, err := strconv.Atoi(base)
		if err != nil {
			return 0, fmt.Errorf("unknown priority %q", base)
		}
		v = n
	}
	if sign != "" {
		n, _ := strconv.Atoi(off)
		if sign == "-" {
			n = -n
		}
		v += n
	}
	return v, nil
}

// tokenize splits a rule into words, keeping a quoted comment as one token (with its quotes).
func tokenize(s string) []string {
	var out []string
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		if s[0] == '"' {
			end := 1
			for end < len(s) && (s[end] != '"' || s[end-1] == '\\') {
				end++
			}
			out = append(out, s[:min(end+1, len(s))])
			s = s[min(end+1, len(s)):]
			continue
		}
		i := strings.IndexAny(s, " \t")
		if i < 0 {
			out = append(out, s)
			break
		}
		out = append(out, s[:i])
		s = s[i:]
	}
	return out
}

// ParseNFTRule reads one rule line as `nft list` prints it into the renderer's statements.
func ParseNFTRule(line string) (nftables.Rule, error) {
	var r nftables.Rule
	toks := tokenize(line)
	for len(toks) > 0 {
		st, n, err := parseStmt(toks)
		if err != nil {
			return r, fmt.Errorf("rule %q: %w", line, err)
		}
		if n == 0 {
			return r, fmt.Errorf("rule %q: unrecognised statement at %q (vxflow does not write it)", line, strings.Join(toks, " "))
		}
		switch s := st.(type) {
		case comment:
			c, err := strconv.Unquote(string(s))
			if err != nil {
				c = strings.Trim(string(s), `"`)
			}
			r.Comment = c
		case nftables.Stmt:
			r.Stmts = append(r.Stmts, s)
		}
		toks = toks[n:]
	}
	return r, nil
}

// comment is a parsed `comment "..."`, which is not a statement.
type comment string

func (comment) String() string { return "" }

func hexOrDec(s string) (uint32, error) {
	v, err := strconv.ParseUint(s, 0, 32)
	return uint32(v), err
}

func parseVerdict(t []string) (nftables.Verdict, int, error) {
	if len(t) == 0 {
		return nftables.Verdict{}, 0, nil
	}
	switch t[0] {
	case "accept":
		return nftables.Verdict{Kind: nftables.VerdictAccept}, 1, nil
	case "drop":
		return nftables.Verdict{Kind: nftables.VerdictDrop}, 1, nil
	case "return":
		return nftables.Verdict{Kind: nftables.VerdictReturn}, 1, nil
	case "jump", "goto":
		if len(t) < 2 {
			return nftables.Verdict{}, 0, fmt.Errorf("%s without a chain", t[0])
		}
		k := nftables.VerdictJump
		if t[0] == "goto" {
			k = nftables.VerdictGoto
		}
		return nftables.Verdict{Kind: k, Chain: t[1]}, 2, nil
	}
	return nftables.Verdict{}, 0, nil
}

// parseStmt reads the statement at the start of t and returns how many tokens it used (0: unknown). A nil
// statement with n > 0 is something to skip, such as a counter.
func parseStmt(t []string) (any, int, error) {
	at := func(i int) string {
		if i < len(t) {
			return t[i]
		}
		return ""
	}
	if v, n, err := parseVerdict(t); n > 0 || err != nil {
		return v, n, err
	}
	switch at(0) {
	case "comment":
		return comment(at(1)), 2, nil
	case "counter":
		n := 1
		for n+1 < len(t) && (t[n] == "packets" || t[n] == "bytes") {
			n += 2
		}
		return nil, n, nil
	case "notrack":
		return nftables.Notrack{}, 1, nil
	case "masquerade":
		if at(1) == "fully-random" {
			return nftables.Masquerade{FullyRandom: true}, 2, nil
		}
		return nftables.Masquerade{}, 1, nil
	case "reject":
		if at(1) == "with" && at(2) == "tcp" && at(3) == "reset" {
			return nftables.Reject{TCPReset: true}, 4, nil
		}
		return nftables.Reject{}, 1, nil
	case "dnat":
		i := 1
		if at(i) == "ip" {
			i++
		}
		if at(i) != "to" {
			return nil, 0, nil
		}
		if at(i+1) == "numgen" {
			return parseDNATMap(t[i+1:], i+1)
		}
		ap, err := netip.ParseAddrPort(at(i + 1))
		if err != nil {
			return nil, 0, fmt.Errorf("dnat target %q: %w", at(i+1), err)
		}
		return nftables.DNAT{Addr: ap.Addr(), Port: ap.Port()}, i + 2, nil
	case "ct":
		switch {
		case at(1) == "state" && at(2) == "new":
			return nftables.MatchCtStateNew{}, 3, nil
		case at(1) == "status" && at(2) == "dnat":
			return nftables.MatchCtStatusDNAT{}, 3, nil
		}
	case "fib":
		if at(2) == "type" && at(3) == "local" && (at(1) == "saddr" || at(1) == "daddr") {
			return nftables.MatchFibLocal{Field: addrField(at(1))}, 4, nil
		}
	case "numgen":
		if at(1) == "random" && at(2) == "mod" && at(4) == "0" {
			mod, err := strconv.ParseUint(at(3), 10, 32)
			if err != nil {
				return nil, 0, fmt.Errorf("numgen modulus %q", at(3))
			}
			return nftables.MatchNumgen{Mod: uint32(mod)}, 5, nil
		}
	case "update":
		if strings.HasPrefix(at(1), "@") && at(2) == "{" && at(3) == "ip" && at(4) == "saddr" && at(5) == "}" {
			return nftables.AffinityUpdate{Set: strings.TrimPrefix(at(1), "@")}, 6, nil
		}
	case "meta":
		switch {
		case at(1) == "l4proto" && at(2) == "." && at(3) == "th" && at(4) == "dport" && at(5) == "vmap":
			return nftables.Vmap{Key: nftables.VmapKeyProtoPort, Map: strings.TrimPrefix(at(6), "@")}, 7, nil
		case at(1) == "l4proto":
			pr, err := parseProto(at(2))
			if err != nil {
				return nil, 0, err
			}
			return nftables.MatchProto{Proto: pr}, 3, nil
		case at(1) == "mark" && at(2) == "&" && at(4) == "==":
			mask, err1 := hexOrDec(at(3))
			want, err2 := hexOrDec(at(5))
			if err1 != nil || err2 != nil || (want != 0 && want != mask) {
				return nil, 0, fmt.Errorf("mark test %q", strings.Join(t[:min(6, len(t))], " "))
			}
			return nftables.MatchMark{Mask: mask, Set: want == mask && mask != 0}, 6, nil
		case at(1) == "mark" && at(2) == "set" && at(3) == "meta" && at(4) == "mark" && (at(5) == "|" || at(5) == "^"):
			bits, err := hexOrDec(at(6))
			if err != nil {
				return nil, 0, fmt.Errorf("mark bits %q", at(6))
			}
			return nftables.MarkSet{Bits: bits, Xor: at(5) == "^"}, 7, nil
		}
	case "tcp", "udp", "sctp":
		if at(1) == "dport" {
			pr, port, err := parseProtoPort(at(0), at(2))
			if err != nil {
				return nil, 0, err
			}
			return nftables.MatchDPort{Proto: pr, Port: port}, 3, nil
		}
	case "ip":
		if at(1) == "daddr" && at(2) == "." && at(3) == "meta" && at(4) == "l4proto" && at(5) == "." && at(6) == "th" &&
			at(7) == "dport" && at(8) == "vmap" {
			return nftables.Vmap{Key: nftables.VmapKeyAddrProtoPort, Map: strings.TrimPrefix(at(9), "@")}, 10, nil
		}
		if at(1) != "saddr" && at(1) != "daddr" {
			return nil, 0, nil
		}
		field, i, neg := addrField(at(1)), 2, false
		if at(2) == "!=" {
			i, neg = 3, true
		}
		v := at(i)
		if strings.HasPrefix(v, "@") {
			return nftables.MatchAddrSet{Field: field, Negate: neg, Set: strings.TrimPrefix(v, "@")}, i + 1, nil
		}
		pfx, err := parsePrefixOrAddr(v)
		if err != nil {
			return nil, 0, fmt.Errorf("address %q: %w", v, err)
		}
		return nftables.MatchAddr{Field: field, Negate: neg, Prefix: pfx}, i + 1, nil
	}
	return nil, 0, nil
}

// parseDNATMap reads `numgen random mod N [offset K] map @name` after `dnat ip to`; used counts the
// tokens before it.
func parseDNATMap(t []string, used int) (any, int, error) {
	if len(t) < 6 || t[1] != "random" || t[2] != "mod" {
		return nil, 0, nil
	}
	mod, err := strconv.ParseUint(t[3], 10, 32)
	if err != nil || mod == 0 {
		return nil, 0, fmt.Errorf("numgen modulus %q", t[3])
	}
	d, i := nftables.DNATMap{Mod: uint32(mod)}, 4
	if t[i] == "offset" {
		off, err := strconv.ParseUint(t[i+1], 10, 32)
		if err != nil {
			return nil, 0, fmt.Errorf("numgen offset %q", t[i+1])
		}
		d.Offset, i = uint32(off), i+2
	}
	if i+1 >= len(t) || t[i] != "map" || !strings.HasPrefix(t[i+1], "@") {
		return nil, 0, nil
	}
	d.Map = strings.TrimPrefix(t[i+1], "@")
	return d, used + i + 2, nil
}

func addrField(s string) nftables.AddrField {
	if s == "saddr" {
		return nftables.SAddr
	}
	return nftables.DAddr
}
