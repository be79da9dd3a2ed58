package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	gnft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/vxflow/vxflow/internal/render/nftables"
)

// This file is the reference encoding: the renderer's statements compiled to google/nftables expressions,
// as the library would send them. wire_test.go checks that the applier's own encoder produces the same
// bytes for every statement shape.

// compiledSet returns the google/nftables description of a set.
func compiledSet(t *gnft.Table, s *nftables.Set) *gnft.Set {
	out := &gnft.Set{Table: t, Name: s.Name}
	switch s.Type {
	case nftables.SetTypeAddr:
		out.KeyType = gnft.TypeIPAddr
		out.Interval = s.Interval
		out.KeyByteOrder = binaryutil.BigEndian
		if s.Dynamic() {
			// nft gives dynamic sets a size of 65535; the kernel lists it, so we set it too.
			out.HasTimeout, out.Dynamic, out.Timeout, out.Size = true, true, s.Timeout, 65535
			out.KeyByteOrder = nil
		}
	case nftables.SetTypeAddrProtoPortVerdict:
		out.KeyType = gnft.MustConcatSetType(gnft.TypeIPAddr, gnft.TypeInetProto, gnft.TypeInetService)
		out.DataType, out.IsMap, out.Concatenation = gnft.TypeVerdict, true, true
	case nftables.SetTypeProtoPortVerdict:
		out.KeyType = gnft.MustConcatSetType(gnft.TypeInetProto, gnft.TypeInetService)
		out.DataType, out.IsMap, out.Concatenation = gnft.TypeVerdict, true, true
	}
	return out
}

// compiledVerdict returns the google/nftables verdict for map data and rules.
func compiledVerdict(v nftables.Verdict) *expr.Verdict {
	switch v.Kind {
	case nftables.VerdictAccept:
		return &expr.Verdict{Kind: expr.VerdictAccept}
	case nftables.VerdictDrop:
		return &expr.Verdict{Kind: expr.VerdictDrop}
	case nftables.VerdictReturn:
		return &expr.Verdict{Kind: expr.VerdictReturn}
	case nftables.VerdictJump:
		return &expr.Verdict{Kind: expr.VerdictJump, Chain: v.Chain}
	case nftables.VerdictGoto:
		return &expr.Verdict{Kind: expr.VerdictGoto, Chain: v.Chain}
	}
	return &expr.Verdict{Kind: expr.VerdictDrop}
}

// compiledRule returns the rule's expressions, as nft would generate them for the text the statements print.
func compiledRule(t *gnft.Table, c *gnft.Chain, r nftables.Rule) (*gnft.Rule, error) {
	var exprs []expr.Any
	for _, s := range r.Stmts {
		e, err := compileStmt(s)
		if err != nil {
			return nil, fmt.Errorf("failed to compile %q in chain %s: %w", r.String(), c.Name, err)
		}
		exprs = append(exprs, e...)
	}
	out := &gnft.Rule{Table: t, Chain: c, Exprs: exprs}
	if r.Comment != "" {
		out.UserData = userdata.AppendString(nil, userdata.TypeComment, r.Comment)
	}
	return out, nil
}

// loadAddr loads ip saddr or ip daddr (or its first n bytes) into register 1.
func refLoadAddr(f nftables.AddrField, n uint32) *expr.Payload {
	off := uint32(offSAddr)
	if f == nftables.DAddr {
		off = offDAddr
	}
	return &expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n}
}

// loadProto loads meta l4proto into a register.
func refLoadProto(reg uint32) *expr.Meta {
	return &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg}
}

// loadDPort loads th dport into a register.
func refLoadDPort(reg uint32) *expr.Payload {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: offDPort, Len: 2}
}

// cmpOp returns eq, or neq when negated.
func refCmpOp(negate bool) expr.CmpOp {
	if negate {
		return expr.CmpOpNeq
	}
	return expr.CmpOpEq
}

// native encodes a host-order 32-bit value (ct state, ct status, mark, fib result, numgen).
func refNative(v uint32) []byte {
	return binaryutil.NativeEndian.PutUint32(v)
}

// bitTest is `reg & mask op want`, the shape nft uses for ct state and ct status flags (!= 0) and for
// mark bits (== 0 or == mask).
func refBitTest(mask uint32, op expr.CmpOp, want uint32) []expr.Any {
	return []expr.Any{
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: refNative(mask), Xor: refNative(0)},
		&expr.Cmp{Op: op, Register: reg1, Data: refNative(want)},
	}
}

// prefixMatch compiles `ip saddr|daddr [!=] prefix` the way nft does: a whole-address compare for a /32, a
// shorter load for a byte-aligned prefix, and a mask for the rest (including /0).
func refPrefixMatch(f nftables.AddrField, negate bool, p netip.Prefix) []expr.Any {
	a := p.Masked().Addr().As4()
	bits := p.Bits()
	switch {
	case bits == 32:
		return []expr.Any{refLoadAddr(f, 4), &expr.Cmp{Op: refCmpOp(negate), Register: reg1, Data: a[:]}}
	case bits > 0 && bits%8 == 0:
		n := uint32(bits / 8)
		return []expr.Any{refLoadAddr(f, n), &expr.Cmp{Op: refCmpOp(negate), Register: reg1, Data: a[:n]}}
	}
	mask := binary.BigEndian.AppendUint32(nil, ^uint32(0)<<(32-bits))
	if bits == 0 {
		mask = []byte{0, 0, 0, 0}
	}
	return []expr.Any{
		refLoadAddr(f, 4),
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: refCmpOp(negate), Register: reg1, Data: a[:]},
	}
}

// compileStmt compiles one statement.
func compileStmt(s nftables.Stmt) ([]expr.Any, error) {
	switch s := s.(type) {
	case nftables.MatchAddr:
		return refPrefixMatch(s.Field, s.Negate, s.Prefix), nil
	case nftables.MatchAddrSet:
		return []expr.Any{refLoadAddr(s.Field, 4), &expr.Lookup{SourceRegister: reg1, SetName: s.Set, Invert: s.Negate}}, nil
	case nftables.MatchProto:
		return []expr.Any{refLoadProto(reg1), &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{byte(s.Proto)}}}, nil
	case nftables.MatchDPort:
		return []expr.Any{
			refLoadProto(reg1), &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{byte(s.Proto)}},
			refLoadDPort(reg1), &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.BigEndian.PutUint16(s.Port)},
		}, nil
	case nftables.MatchMark:
		want := uint32(0)
		if s.Set {
			want = s.Mask
		}
		return append([]expr.Any{&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1}}, refBitTest(s.Mask, expr.CmpOpEq, want)...), nil
	case nftables.MatchCtStateNew:
		return append([]expr.Any{&expr.Ct{Key: expr.CtKeySTATE, Register: reg1}}, refBitTest(ctStateNew, expr.CmpOpNeq, 0)...), nil
	case nftables.MatchCtStatusDNAT:
		return append([]expr.Any{&expr.Ct{Key: expr.CtKeySTATUS, Register: reg1}}, refBitTest(ctStatusDNAT, expr.CmpOpNeq, 0)...), nil
	case nftables.MatchFibLocal:
		return []expr.Any{
			&expr.Fib{Register: reg1, ResultADDRTYPE: true, FlagSADDR: s.Field == nftables.SAddr, FlagDADDR: s.Field == nftables.DAddr},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: refNative(rtnLocal)},
		}, nil
	case nftables.MatchNumgen:
		if s.Mod == 0 {
			return nil, fmt.Errorf("numgen modulus 0")
		}
		return []expr.Any{
			&expr.Numgen{Register: reg1, Modulus: s.Mod, Type: unix.NFT_NG_RANDOM},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: refNative(0)},
		}, nil
	case nftables.Vmap:
		if s.Key == nftables.VmapKeyProtoPort {
			return []expr.Any{refLoadProto(reg1), refLoadDPort(reg32A),
				&expr.Lookup{SourceRegister: reg1, DestRegister: 0, IsDestRegSet: true, SetName: s.Map}}, nil
		}
		return []expr.Any{refLoadAddr(nftables.DAddr, 4), refLoadProto(reg32A), refLoadDPort(reg32B),
			&expr.Lookup{SourceRegister: reg1, DestRegister: 0, IsDestRegSet: true, SetName: s.Map}}, nil
	case nftables.Verdict:
		return []expr.Any{compiledVerdict(s)}, nil
	case nftables.MarkSet:
		mask, xor := ^s.Bits, s.Bits
		if s.Xor {
			mask = 0xffffffff
		}
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: refNative(mask), Xor: refNative(xor)},
			&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1, SourceRegister: true},
		}, nil
	case nftables.Masquerade:
		return []expr.Any{&expr.Masq{FullyRandom: s.FullyRandom}}, nil
	case nftables.DNAT:
		a := s.Addr.As4()
		return []expr.Any{
			&expr.Immediate{Register: reg1, Data: a[:]},
			&expr.Immediate{Register: reg2, Data: binaryutil.BigEndian.PutUint16(s.Port)},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1, RegAddrMax: reg1,
				RegProtoMin: reg2, RegProtoMax: reg2, Specified: true},
		}, nil
	case nftables.DNATMap:
		return []expr.Any{
			&expr.Numgen{Register: reg1, Modulus: s.Mod, Type: unix.NFT_NG_RANDOM, Offset: s.Offset},
			&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: s.Map},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1, RegAddrMax: reg1,
				RegProtoMin: reg32A, RegProtoMax: reg32A, Specified: true},
		}, nil
	case nftables.Reject:
		if s.TCPReset {
			return []expr.Any{refLoadProto(reg1), &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
				&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}, nil
		}
		return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: icmpPortUnreachable}}, nil
	case nftables.Notrack:
		return []expr.Any{&expr.Notrack{}}, nil
	case nftables.AffinityUpdate:
		return []expr.Any{refLoadAddr(nftables.SAddr, 4),
			&expr.Dynset{SrcRegKey: reg1, SetName: s.Set, Operation: unix.NFT_DYNSET_OP_UPDATE}}, nil
	}
	return nil, fmt.Errorf("unknown statement type %T", s)
}
