package nft

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"

	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/nftables"
)

// This file encodes nf_tables transactions directly into one netlink buffer. google/nftables builds the same
// messages, but through per-attribute allocations and with NLM_F_ECHO on every rule, which made the kernel
// send back (and the library decode) each of the 330,000 rules of a 10,000-Service table: a full sync took
// 15 s, of which 5 s were spent building messages. Encoding straight into one buffer for the ~20
// statement shapes the renderer emits takes a fraction of a second. The expression encodings are tested
// byte for byte against google/nftables' expr.Marshal (wire_test.go), and the messages against the kernel
// (the golden tests list the programmed table back).

// Message and attribute numbers from include/uapi/linux/netfilter/nf_tables.h and nfnetlink.h.
const (
	nfnlSubsysNFTables = 10
	nfnlMsgBatchBegin  = 0x10
	nfnlMsgBatchEnd    = 0x11
	nfnlBatchGenID     = 1

	nftMsgNewTable   = 0
	nftMsgDelTable   = 2
	nftMsgNewChain   = 3
	nftMsgDelChain   = 5
	nftMsgNewRule    = 6
	nftMsgDelRule    = 8
	nftMsgNewSet     = 9
	nftMsgDelSet     = 11
	nftMsgNewSetElem = 12
	nftMsgDelSetElem = 14

	nlaFNested = 0x8000

	flagRequest = unix.NLM_F_REQUEST
	flagCreate  = unix.NLM_F_CREATE
	flagAppend  = unix.NLM_F_APPEND

	nftSetFlagInterval = 0x4
	nftSetFlagMap      = 0x8
	nftSetFlagTimeout  = 0x10
	nftSetFlagEval     = 0x20
	nftSetFlagConcat   = 0x80

	nftDataVerdict = 0xffffff00

	nfDrop   = 0
	nfAccept = 1

	nftaSetDescConcat = 2 // NFTA_SET_DESC_CONCAT: nested list of field lengths
	nftaSetFieldLen   = 1 // NFTA_SET_FIELD_LEN inside NFTA_LIST_ELEM

	// Set key type numbers as nft defines them; a concatenation packs them 6 bits each.
	typeIPAddr      = 7
	typeInetProto   = 12
	typeInetService = 13
)

// batch is one nf_tables transaction being encoded: BATCH_BEGIN, the messages, BATCH_END.
type batch struct {
	// table is the name of the (ip family) table every message addresses.
	table string
	buf   []byte
	seq   uint32
	msgs  int
}

// op names one message of the batch, for error messages.
type op struct {
	kind string
	name string
}

// newBatch starts a batch that the kernel accepts only if the ruleset generation is still genID
// (0 disables the check).
func newBatch(table string, genID uint32, sizeHint int) *batch {
	b := &batch{table: table, buf: make([]byte, 0, sizeHint), seq: 1}
	off := b.msgStart(nfnlMsgBatchBegin, flagRequest, unix.AF_UNSPEC, nfnlSubsysNFTables)
	if genID != 0 {
		b.u32(nfnlBatchGenID, genID)
	}
	b.msgEnd(off)
	return b
}

// finish appends BATCH_END and returns the bytes to send.
func (b *batch) finish() []byte {
	off := b.msgStart(nfnlMsgBatchEnd, flagRequest, unix.AF_UNSPEC, nfnlSubsysNFTables)
	b.msgEnd(off)
	return b.buf
}

// msgStart appends a netlink header and nfgenmsg; msgEnd patches the length.
func (b *batch) msgStart(typ uint16, flags uint16, family uint8, resID uint16) int {
	off := len(b.buf)
	b.buf = binary.NativeEndian.AppendUint32(b.buf, 0)
	b.buf = binary.NativeEndian.AppendUint16(b.buf, typ)
	b.buf = binary.NativeEndian.AppendUint16(b.buf, flags)
	b.buf = binary.NativeEndian.AppendUint32(b.buf, b.seq)
	b.buf = binary.NativeEndian.AppendUint32(b.buf, 0)
	b.seq++
	b.buf = append(b.buf, family, unix.NFNETLINK_V0)
	b.buf = binary.BigEndian.AppendUint16(b.buf, resID)
	return off
}

func (b *batch) msgEnd(off int) {
	binary.NativeEndian.PutUint32(b.buf[off:], uint32(len(b.buf)-off))
}

// nft starts an nf_tables message of family ip.
func (b *batch) nft(msg uint16, flags uint16) int {
	b.msgs++
	return b.msgStart(nfnlSubsysNFTables<<8|msg, flags, unix.NFPROTO_IPV4, 0)
}

// attr appends one attribute with its padding.
func (b *batch) attr(typ uint16, data []byte) {
	b.buf = binary.NativeEndian.AppendUint16(b.buf, uint16(4+len(data)))
	b.buf = binary.NativeEndian.AppendUint16(b.buf, typ)
	b.buf = append(b.buf, data...)
	b.pad()
}

func (b *batch) pad() {
	for len(b.buf)%4 != 0 {
		b.buf = append(b.buf, 0)
	}
}

func (b *batch) u32(typ uint16, v uint32) {
	b.buf = binary.NativeEndian.AppendUint16(b.buf, 8)
	b.buf = binary.NativeEndian.AppendUint16(b.buf, typ)
	b.buf = binary.BigEndian.AppendUint32(b.buf, v)
}

func (b *batch) u64(typ uint16, v uint64) {
	b.buf = binary.NativeEndian.AppendUint16(b.buf, 12)
	b.buf = binary.NativeEndian.AppendUint16(b.buf, typ)
	b.buf = binary.BigEndian.AppendUint64(b.buf, v)
}

func (b *batch) str(typ uint16, s string) {
	b.buf = binary.NativeEndian.AppendUint16(b.buf, uint16(4+len(s)+1))
	b.buf = binary.NativeEndian.AppendUint16(b.buf, typ)
	b.buf = append(b.buf, s...)
	b.buf = append(b.buf, 0)
	b.pad()
}

// nest starts a nested attribute; nestEnd patches its length.
func (b *batch) nest(typ uint16) int {
	off := len(b.buf)
	b.buf = binary.NativeEndian.AppendUint16(b.buf, 0)
	b.buf = binary.NativeEndian.AppendUint16(b.buf, typ|nlaFNested)
	return off
}

func (b *batch) nestEnd(off int) {
	binary.NativeEndian.PutUint16(b.buf[off:], uint16(len(b.buf)-off))
}

// value appends a nested NFTA_DATA_VALUE.
func (b *batch) value(typ uint16, data []byte) {
	n := b.nest(typ)
	b.attr(unix.NFTA_DATA_VALUE, data)
	b.nestEnd(n)
}

// describe names the message with sequence number seq, decoded from the batch (an error is rare, and
// keeping a name per message cost tens of megabytes in a full sync).
func (b *batch) describe(seq uint32) op {
	kinds := map[uint16]string{nftMsgNewTable: "add table", nftMsgDelTable: "delete table", nftMsgNewChain: "add chain",
		nftMsgDelChain: "delete chain", nftMsgNewRule: "add rule", nftMsgDelRule: "flush chain", nftMsgNewSet: "add set",
		nftMsgDelSet: "delete set", nftMsgNewSetElem: "add element", nftMsgDelSetElem: "delete element"}
	for off := 0; off+unix.NLMSG_HDRLEN+4 <= len(b.buf); {
		l := int(binary.NativeEndian.Uint32(b.buf[off:]))
		if l < unix.NLMSG_HDRLEN+4 || off+l > len(b.buf) {
			break
		}
		if binary.NativeEndian.Uint32(b.buf[off+8:]) != seq {
			off += l
			continue
		}
		typ := binary.NativeEndian.Uint16(b.buf[off+4:]) & 0xff
		o := op{kind: kinds[typ]}
		if o.kind == "" {
			o.kind = fmt.Sprintf("message type %d", typ)
		}
		// Attributes: the table's name first, then the object's (a chain, a rule's chain, a set).
		var strs []string
		hasElems := false
		for a := off + unix.NLMSG_HDRLEN + 4; a+4 <= off+l; {
			al := int(binary.NativeEndian.Uint16(b.buf[a:]))
			at := binary.NativeEndian.Uint16(b.buf[a+2:]) &^ nlaFNested
			if al < 4 || a+al > off+l {
				break
			}
			if typ == nftMsgDelSetElem && at == unix.NFTA_SET_ELEM_LIST_ELEMENTS {
				hasElems = true
			}
			if at <= 3 && al > 5 && b.buf[a+al-1] == 0 && len(strs) < 2 {
				strs = append(strs, string(b.buf[a+4:a+al-1]))
			}
			a += (al + 3) &^ 3
		}
		if typ == nftMsgDelSetElem && !hasElems {
			o.kind = "flush set"
		}
		switch {
		case typ == nftMsgNewTable || typ == nftMsgDelTable:
			if len(strs) > 0 {
				o.name = strs[0]
			}
		case len(strs) > 1:
			o.name = strs[1]
		}
		return o
	}
	return op{kind: "batch", name: fmt.Sprintf("message %d", seq)}
}

// --- objects -----------------------------------------------------------------------------------------

func (b *batch) addTable() {
	m := b.nft(nftMsgNewTable, flagRequest|flagCreate)
	b.str(unix.NFTA_TABLE_NAME, b.table)
	b.u32(unix.NFTA_TABLE_FLAGS, 0)
	b.msgEnd(m)
}

func (b *batch) addChain(c *nftables.Chain) {
	m := b.nft(nftMsgNewChain, flagRequest|flagCreate)
	b.str(unix.NFTA_CHAIN_TABLE, b.table)
	b.str(unix.NFTA_CHAIN_NAME, c.Name)
	if c.Base != nil {
		h := b.nest(unix.NFTA_CHAIN_HOOK)
		b.u32(unix.NFTA_HOOK_HOOKNUM, uint32(hookNumbers[c.Base.Hook]))
		b.u32(unix.NFTA_HOOK_PRIORITY, uint32(int32(c.Base.Priority)))
		b.nestEnd(h)
		b.u32(unix.NFTA_CHAIN_POLICY, nfAccept)
		b.str(unix.NFTA_CHAIN_TYPE, string(c.Base.Type))
	}
	b.msgEnd(m)
}

func (b *batch) delChain(name string) {
	m := b.nft(nftMsgDelChain, flagRequest)
	b.str(unix.NFTA_CHAIN_TABLE, b.table)
	b.str(unix.NFTA_CHAIN_NAME, name)
	b.msgEnd(m)
}

func (b *batch) flushChain(name string) {
	m := b.nft(nftMsgDelRule, flagRequest)
	b.str(unix.NFTA_RULE_TABLE, b.table)
	b.str(unix.NFTA_RULE_CHAIN, name)
	b.msgEnd(m)
}

func (b *batch) addRule(chain string, r nftables.Rule) {
	m := b.nft(nftMsgNewRule, flagRequest|flagCreate|flagAppend)
	b.str(unix.NFTA_RULE_TABLE, b.table)
	b.str(unix.NFTA_RULE_CHAIN, chain)
	l := b.nest(unix.NFTA_RULE_EXPRESSIONS)
	for _, s := range r.Stmts {
		b.stmt(s)
	}
	b.nestEnd(l)
	if r.Comment != "" {
		b.attr(unix.NFTA_RULE_USERDATA, userdata.AppendString(nil, userdata.TypeComment, r.Comment))
	}
	b.msgEnd(m)
}

// setKey returns a set type's key type number, key length and concatenated field lengths.
func setKey(t nftables.SetType) (typ, length uint32, fields []uint32) {
	switch t {
	case nftables.SetTypeAddrProtoPortVerdict:
		return typeIPAddr<<12 | typeInetProto<<6 | typeInetService, 12, []uint32{4, 1, 2}
	case nftables.SetTypeProtoPortVerdict:
		return typeInetProto<<6 | typeInetService, 8, []uint32{1, 2}
	case nftables.SetTypeEndpointMap:
		return typeInteger, 4, nil
	}
	return typeIPAddr, 4, nil
}

// typeInteger is nft's integer datatype, numgen's.
const typeInteger = 4

// endpointMapUserdata is what nft 1.0.6 records for `typeof numgen random mod 1 : ip daddr . tcp dport`
// (key byte order host, data byte order, then the key's and the data's typeof expressions), copied from
// the set nft creates, so that `nft list` prints the map's typeof line and its elements.
var endpointMapUserdata = mustHex("0004010000000104000000000" +
	"31a0004170000000112000401000000010401000000020400000000043400040d000000012c0014000407000000010c00040c00000001040c0000000114000407000000010c000408000000010402000000060400000000")

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func (b *batch) addSet(s *nftables.Set, id uint32) {
	m := b.nft(nftMsgNewSet, flagRequest|flagCreate)
	typ, length, fields := setKey(s.Type)
	var flags uint32
	switch {
	case s.Type == nftables.SetTypeEndpointMap:
		flags = nftSetFlagMap
	case s.Type.IsMap():
		flags = nftSetFlagMap | nftSetFlagConcat
	case s.Dynamic():
		flags = nftSetFlagTimeout | nftSetFlagEval
	case s.Interval:
		flags = nftSetFlagInterval
	}
	b.str(unix.NFTA_SET_TABLE, b.table)
	b.str(unix.NFTA_SET_NAME, s.Name)
	b.u32(unix.NFTA_SET_FLAGS, flags)
	b.u32(unix.NFTA_SET_KEY_TYPE, typ)
	b.u32(unix.NFTA_SET_KEY_LEN, length)
	b.u32(unix.NFTA_SET_ID, id)
	switch {
	case s.Type == nftables.SetTypeEndpointMap:
		b.u32(unix.NFTA_SET_DATA_TYPE, typeIPAddr<<6|typeInetService)
		b.u32(unix.NFTA_SET_DATA_LEN, 8)
	case s.Type.IsMap():
		b.u32(unix.NFTA_SET_DATA_TYPE, nftDataVerdict)
		b.u32(unix.NFTA_SET_DATA_LEN, 0)
	}
	if s.Dynamic() {
		b.u64(unix.NFTA_SET_TIMEOUT, uint64(s.Timeout.Milliseconds()))
	}
	if s.Dynamic() || len(fields) > 0 {
		d := b.nest(unix.NFTA_SET_DESC)
		if s.Dynamic() {
			// nft gives dynamic sets a size of 65535 and the kernel lists it, so we do the same.
			b.u32(unix.NFTA_SET_DESC_SIZE, 65535)
		}
		if len(fields) > 0 {
			c := b.nest(nftaSetDescConcat)
			for _, f := range fields {
				e := b.nest(unix.NFTA_LIST_ELEM)
				b.u32(nftaSetFieldLen, f)
				b.nestEnd(e)
			}
			b.nestEnd(c)
		}
		b.nestEnd(d)
	}
	if s.Type == nftables.SetTypeAddr && !s.Dynamic() {
		// nft records that addresses are big-endian; `nft list` needs it for interval sets.
		b.attr(unix.NFTA_SET_USERDATA, userdata.AppendUint32(nil, userdata.NFTNL_UDATA_SET_KEYBYTEORDER, 2))
	}
	if s.Type == nftables.SetTypeEndpointMap {
		b.attr(unix.NFTA_SET_USERDATA, endpointMapUserdata)
	}
	b.msgEnd(m)
}

func (b *batch) delSet(name string) {
	m := b.nft(nftMsgDelSet, flagRequest)
	b.str(unix.NFTA_SET_TABLE, b.table)
	b.str(unix.NFTA_SET_NAME, name)
	b.msgEnd(m)
}

func (b *batch) flushSet(name string) {
	m := b.nft(nftMsgDelSetElem, flagRequest)
	b.str(unix.NFTA_SET_ELEM_LIST_TABLE, b.table)
	b.str(unix.NFTA_SET_ELEM_LIST_SET, name)
	b.msgEnd(m)
}

// maxElemBytes keeps each element message well under the 64 KiB a nested attribute can hold.
const maxElemBytes = 60000

// elements appends NEWSETELEM or DELSETELEM messages for a set, split so that each list fits in one
// attribute. Verdicts are sent only when adding to a map.
func (b *batch) elements(s *nftables.Set, elems []nftables.Element, del bool) {
	if len(elems) == 0 {
		return
	}
	msg, flags := uint16(nftMsgNewSetElem), uint16(flagRequest|flagCreate)
	if del {
		msg, flags = nftMsgDelSetElem, flagRequest
	}
	var keys [][]byte
	var ends []bool
	if s.Type == nftables.SetTypeAddr && s.Interval {
		keys, ends = intervalKeys(elems)
	}
	n := len(elems)
	if keys != nil {
		n = len(keys)
	}
	for i := 0; i < n; {
		m := b.nft(msg, flags)
		b.str(unix.NFTA_SET_ELEM_LIST_TABLE, b.table)
		b.str(unix.NFTA_SET_ELEM_LIST_SET, s.Name)
		l := b.nest(unix.NFTA_SET_ELEM_LIST_ELEMENTS)
		for start := len(b.buf); i < n && len(b.buf)-start < maxElemBytes; i++ {
			e := b.nest(unix.NFTA_LIST_ELEM)
			if keys != nil {
				if ends[i] {
					b.u32(unix.NFTA_SET_ELEM_FLAGS, unix.NFT_SET_ELEM_INTERVAL_END)
				}
				b.value(unix.NFTA_SET_ELEM_KEY, keys[i])
			} else {
				b.value(unix.NFTA_SET_ELEM_KEY, elementKey(s.Type, elems[i].Key()))
				switch {
				case del:
				case s.Type == nftables.SetTypeEndpointMap:
					b.value(unix.NFTA_SET_ELEM_DATA, endpointData(elems[i].Target))
				case s.Type.IsMap():
					d := b.nest(unix.NFTA_SET_ELEM_DATA)
					b.verdictData(elems[i].Verdict)
					b.nestEnd(d)
				}
			}
			b.nestEnd(e)
		}
		b.nestEnd(l)
		b.msgEnd(m)
	}
}

// intervalKeys encodes prefixes as nft encodes an interval set: ranges that overlap or touch are merged,
// each becomes a start key and an end key (the first address after it, flagged interval-end), and a
// leading 0.0.0.0 end key closes the gap below the first range.
func intervalKeys(elems []nftables.Element) ([][]byte, []bool) {
	type span struct{ lo, hi uint64 } // hi is exclusive, up to 1<<32
	var merged []span
	for _, e := range elems { // sorted by address
		a := e.Prefix.Masked().Addr().As4()
		lo := uint64(binary.BigEndian.Uint32(a[:]))
		sp := span{lo, lo + 1<<(32-e.Prefix.Bits())}
		if n := len(merged); n > 0 && sp.lo <= merged[n-1].hi {
			merged[n-1].hi = max(merged[n-1].hi, sp.hi)
			continue
		}
		merged = append(merged, sp)
	}
	addr := func(v uint64) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }
	var keys [][]byte
	var ends []bool
	if len(merged) > 0 && merged[0].lo != 0 {
		keys, ends = append(keys, addr(0)), append(ends, true)
	}
	for _, sp := range merged {
		keys, ends = append(keys, addr(sp.lo)), append(ends, false)
		if sp.hi <= 0xffffffff {
			keys, ends = append(keys, addr(sp.hi)), append(ends, true)
		}
	}
	return keys, ends
}

// elementKey encodes an element's key as the kernel stores it: each part of a concatenation padded to 4
// bytes, ports big-endian.
func elementKey(t nftables.SetType, k nftables.ElementKey) []byte {
	switch t {
	case nftables.SetTypeAddrProtoPortVerdict:
		b := make([]byte, 12)
		a := k.Prefix.Addr().As4()
		copy(b, a[:])
		b[4] = byte(k.Proto)
		binary.BigEndian.PutUint16(b[8:], k.Port)
		return b
	case nftables.SetTypeProtoPortVerdict:
		b := make([]byte, 8)
		b[0] = byte(k.Proto)
		binary.BigEndian.PutUint16(b[4:], k.Port)
		return b
	case nftables.SetTypeEndpointMap:
		return native(k.Index)
	}
	a := k.Prefix.Addr().As4()
	return a[:]
}

// endpointData encodes an endpoint map's data: the address, then the port big-endian in its own 4 bytes.
func endpointData(ap netip.AddrPort) []byte {
	b := make([]byte, 8)
	a := ap.Addr().As4()
	copy(b, a[:])
	binary.BigEndian.PutUint16(b[4:], ap.Port())
	return b
}

// verdictCode is the kernel's number for a verdict (NF_DROP, NF_ACCEPT, NFT_RETURN, NFT_JUMP, NFT_GOTO).
func verdictCode(k nftables.VerdictKind) uint32 {
	switch k {
	case nftables.VerdictAccept:
		return nfAccept
	case nftables.VerdictReturn:
		return uint32(0xfffffffb) // NFT_RETURN = -5
	case nftables.VerdictJump:
		return uint32(0xfffffffd) // NFT_JUMP = -3
	case nftables.VerdictGoto:
		return uint32(0xfffffffc) // NFT_GOTO = -4
	}
	return nfDrop
}

// verdictData appends NFTA_DATA_VERDICT { code, chain }.
func (b *batch) verdictData(v nftables.Verdict) {
	n := b.nest(unix.NFTA_DATA_VERDICT)
	b.u32(unix.NFTA_VERDICT_CODE, verdictCode(v.Kind))
	if v.Chain != "" {
		b.str(unix.NFTA_VERDICT_CHAIN, v.Chain)
	}
	b.nestEnd(n)
}

// --- expressions -------------------------------------------------------------------------------------

// expr starts one expression (NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA { ... } }); exprEnd closes it.
func (b *batch) expr(name string) (elem, data int) {
	elem = b.nest(unix.NFTA_LIST_ELEM)
	b.str(unix.NFTA_EXPR_NAME, name)
	return elem, b.nest(unix.NFTA_EXPR_DATA)
}

func (b *batch) exprEnd(elem, data int) {
	b.nestEnd(data)
	b.nestEnd(elem)
}

func (b *batch) payload(dreg uint32, base uint32, offset, length uint32) {
	e, d := b.expr("payload")
	b.u32(unix.NFTA_PAYLOAD_DREG, dreg)
	b.u32(unix.NFTA_PAYLOAD_BASE, base)
	b.u32(unix.NFTA_PAYLOAD_OFFSET, offset)
	b.u32(unix.NFTA_PAYLOAD_LEN, length)
	b.exprEnd(e, d)
}

func (b *batch) loadAddr(f nftables.AddrField, n uint32) {
	off := uint32(offSAddr)
	if f == nftables.DAddr {
		off = offDAddr
	}
	b.payload(reg1, unix.NFT_PAYLOAD_NETWORK_HEADER, off, n)
}

func (b *batch) loadDPort(reg uint32) {
	b.payload(reg, unix.NFT_PAYLOAD_TRANSPORT_HEADER, offDPort, 2)
}

func (b *batch) meta(key, reg uint32, set bool) {
	e, d := b.expr("meta")
	b.u32(unix.NFTA_META_KEY, key)
	if set {
		b.u32(unix.NFTA_META_SREG, reg)
	} else {
		b.u32(unix.NFTA_META_DREG, reg)
	}
	b.exprEnd(e, d)
}

func (b *batch) cmp(op uint32, data []byte) {
	e, d := b.expr("cmp")
	b.u32(unix.NFTA_CMP_SREG, reg1)
	b.u32(unix.NFTA_CMP_OP, op)
	b.value(unix.NFTA_CMP_DATA, data)
	b.exprEnd(e, d)
}

func (b *batch) bitwise(mask, xor []byte) {
	e, d := b.expr("bitwise")
	b.u32(unix.NFTA_BITWISE_SREG, reg1)
	b.u32(unix.NFTA_BITWISE_DREG, reg1)
	b.u32(unix.NFTA_BITWISE_LEN, uint32(len(mask)))
	b.value(unix.NFTA_BITWISE_MASK, mask)
	b.value(unix.NFTA_BITWISE_XOR, xor)
	b.exprEnd(e, d)
}

func (b *batch) lookup(set string, dreg bool, invert bool) {
	e, d := b.expr("lookup")
	b.u32(unix.NFTA_LOOKUP_SREG, reg1)
	if dreg {
		b.u32(unix.NFTA_LOOKUP_DREG, unix.NFT_REG_VERDICT)
	}
	if invert {
		b.u32(unix.NFTA_LOOKUP_FLAGS, unix.NFT_LOOKUP_F_INV)
	}
	b.str(unix.NFTA_LOOKUP_SET, set)
	b.u32(unix.NFTA_LOOKUP_SET_ID, 0)
	b.exprEnd(e, d)
}

func (b *batch) ct(key uint32) {
	e, d := b.expr("ct")
	b.u32(unix.NFTA_CT_KEY, key)
	b.u32(unix.NFTA_CT_DREG, reg1)
	b.exprEnd(e, d)
}

func (b *batch) immediate(reg uint32, data []byte) {
	e, d := b.expr("immediate")
	b.u32(unix.NFTA_IMMEDIATE_DREG, reg)
	b.value(unix.NFTA_IMMEDIATE_DATA, data)
	b.exprEnd(e, d)
}

func (b *batch) verdict(v nftables.Verdict) {
	e, d := b.expr("immediate")
	b.u32(unix.NFTA_IMMEDIATE_DREG, unix.NFT_REG_VERDICT)
	n := b.nest(unix.NFTA_IMMEDIATE_DATA)
	b.verdictData(v)
	b.nestEnd(n)
	b.exprEnd(e, d)
}

func (b *batch) protoEq(p model.L4Proto) {
	b.meta(unix.NFT_META_L4PROTO, reg1, false)
	b.cmp(unix.NFT_CMP_EQ, []byte{byte(p)})
}

func cmpOp(negate bool) uint32 {
	if negate {
		return unix.NFT_CMP_NEQ
	}
	return unix.NFT_CMP_EQ
}

// prefix matches `ip saddr|daddr [!=] prefix` as nft compiles it: a whole-address compare for a /32, a
// shorter load for a byte-aligned prefix, and a mask otherwise (including /0).
func (b *batch) prefix(f nftables.AddrField, negate bool, p netip.Prefix) {
	a := p.Masked().Addr().As4()
	bits := p.Bits()
	switch {
	case bits == 32:
		b.loadAddr(f, 4)
		b.cmp(cmpOp(negate), a[:])
	case bits > 0 && bits%8 == 0:
		b.loadAddr(f, uint32(bits/8))
		b.cmp(cmpOp(negate), a[:bits/8])
	default:
		mask := []byte{0, 0, 0, 0}
		if bits > 0 {
			mask = binary.BigEndian.AppendUint32(nil, ^uint32(0)<<(32-bits))
		}
		b.loadAddr(f, 4)
		b.bitwise(mask, []byte{0, 0, 0, 0})
		b.cmp(cmpOp(negate), a[:])
	}
}

// native encodes a host-order 32-bit value (ct state, ct status, mark, fib result, numgen).
func native(v uint32) []byte {
	return binary.NativeEndian.AppendUint32(nil, v)
}

// stmt appends the expressions of one statement.
func (b *batch) stmt(s nftables.Stmt) {
	switch s := s.(type) {
	case nftables.MatchAddr:
		b.prefix(s.Field, s.Negate, s.Prefix)
	case nftables.MatchAddrSet:
		b.loadAddr(s.Field, 4)
		b.lookup(s.Set, false, s.Negate)
	case nftables.MatchProto:
		b.protoEq(s.Proto)
	case nftables.MatchDPort:
		b.protoEq(s.Proto)
		b.loadDPort(reg1)
		b.cmp(unix.NFT_CMP_EQ, binary.BigEndian.AppendUint16(nil, s.Port))
	case nftables.MatchMark:
		want := uint32(0)
		if s.Set {
			want = s.Mask
		}
		b.meta(unix.NFT_META_MARK, reg1, false)
		b.bitwise(native(s.Mask), native(0))
		b.cmp(unix.NFT_CMP_EQ, native(want))
	case nftables.MatchCtStateNew:
		b.ct(unix.NFT_CT_STATE)
		b.bitwise(native(ctStateNew), native(0))
		b.cmp(unix.NFT_CMP_NEQ, native(0))
	case nftables.MatchCtStatusDNAT:
		b.ct(unix.NFT_CT_STATUS)
		b.bitwise(native(ctStatusDNAT), native(0))
		b.cmp(unix.NFT_CMP_NEQ, native(0))
	case nftables.MatchFibLocal:
		e, d := b.expr("fib")
		b.u32(unix.NFTA_FIB_DREG, reg1)
		flag := uint32(unix.NFTA_FIB_F_SADDR)
		if s.Field == nftables.DAddr {
			flag = unix.NFTA_FIB_F_DADDR
		}
		b.u32(unix.NFTA_FIB_FLAGS, flag)
		b.u32(unix.NFTA_FIB_RESULT, unix.NFT_FIB_RESULT_ADDRTYPE)
		b.exprEnd(e, d)
		b.cmp(unix.NFT_CMP_EQ, native(rtnLocal))
	case nftables.MatchNumgen:
		e, d := b.expr("numgen")
		b.u32(unix.NFTA_NG_DREG, reg1)
		b.u32(unix.NFTA_NG_MODULUS, s.Mod)
		b.u32(unix.NFTA_NG_TYPE, unix.NFT_NG_RANDOM)
		b.u32(unix.NFTA_NG_OFFSET, 0)
		b.exprEnd(e, d)
		b.cmp(unix.NFT_CMP_EQ, native(0))
	case nftables.Vmap:
		if s.Key == nftables.VmapKeyProtoPort {
			b.meta(unix.NFT_META_L4PROTO, reg1, false)
			b.loadDPort(reg32A)
		} else {
			b.loadAddr(nftables.DAddr, 4)
			b.meta(unix.NFT_META_L4PROTO, reg32A, false)
			b.loadDPort(reg32B)
		}
		b.lookup(s.Map, true, false)
	case nftables.Verdict:
		b.verdict(s)
	case nftables.MarkSet:
		mask, xor := ^s.Bits, s.Bits
		if s.Xor {
			mask = 0xffffffff
		}
		b.meta(unix.NFT_META_MARK, reg1, false)
		b.bitwise(native(mask), native(xor))
		b.meta(unix.NFT_META_MARK, reg1, true)
	case nftables.Masquerade:
		e, d := b.expr("masq")
		if s.FullyRandom {
			b.u32(unix.NFTA_MASQ_FLAGS, unix.NF_NAT_RANGE_PROTO_RANDOM_FULLY)
		}
		b.exprEnd(e, d)
	case nftables.DNAT:
		a := s.Addr.As4()
		b.immediate(reg1, a[:])
		b.immediate(reg2, binary.BigEndian.AppendUint16(nil, s.Port))
		e, d := b.expr("nat")
		b.u32(unix.NFTA_NAT_TYPE, unix.NFT_NAT_DNAT)
		b.u32(unix.NFTA_NAT_FAMILY, unix.NFPROTO_IPV4)
		b.u32(unix.NFTA_NAT_REG_ADDR_MIN, reg1)
		b.u32(unix.NFTA_NAT_REG_ADDR_MAX, reg1)
		b.u32(unix.NFTA_NAT_REG_PROTO_MIN, reg2)
		b.u32(unix.NFTA_NAT_REG_PROTO_MAX, reg2)
		b.u32(unix.NFTA_NAT_FLAGS, unix.NF_NAT_RANGE_PROTO_SPECIFIED)
		b.exprEnd(e, d)
	case nftables.DNATMap:
		e, d := b.expr("numgen")
		b.u32(unix.NFTA_NG_DREG, reg1)
		b.u32(unix.NFTA_NG_MODULUS, s.Mod)
		b.u32(unix.NFTA_NG_TYPE, unix.NFT_NG_RANDOM)
		b.u32(unix.NFTA_NG_OFFSET, s.Offset)
		b.exprEnd(e, d)
		e, d = b.expr("lookup")
		b.u32(unix.NFTA_LOOKUP_SREG, reg1)
		b.u32(unix.NFTA_LOOKUP_DREG, reg1)
		b.str(unix.NFTA_LOOKUP_SET, s.Map)
		b.u32(unix.NFTA_LOOKUP_SET_ID, 0)
		b.exprEnd(e, d)
		// The map's data is address . port: the address in register 1's first 32 bits, the port in the next.
		e, d = b.expr("nat")
		b.u32(unix.NFTA_NAT_TYPE, unix.NFT_NAT_DNAT)
		b.u32(unix.NFTA_NAT_FAMILY, unix.NFPROTO_IPV4)
		b.u32(unix.NFTA_NAT_REG_ADDR_MIN, reg1)
		b.u32(unix.NFTA_NAT_REG_ADDR_MAX, reg1)
		b.u32(unix.NFTA_NAT_REG_PROTO_MIN, reg32A)
		b.u32(unix.NFTA_NAT_REG_PROTO_MAX, reg32A)
		b.u32(unix.NFTA_NAT_FLAGS, unix.NF_NAT_RANGE_PROTO_SPECIFIED)
		b.exprEnd(e, d)
	case nftables.Reject:
		typ, code := uint32(unix.NFT_REJECT_ICMP_UNREACH), byte(icmpPortUnreachable)
		if s.TCPReset {
			b.protoEq(model.L4ProtoTCP)
			typ, code = unix.NFT_REJECT_TCP_RST, 0
		}
		e, d := b.expr("reject")
		b.u32(unix.NFTA_REJECT_TYPE, typ)
		b.attr(unix.NFTA_REJECT_ICMP_CODE, []byte{code})
		b.exprEnd(e, d)
	case nftables.Notrack:
		e := b.nest(unix.NFTA_LIST_ELEM)
		b.str(unix.NFTA_EXPR_NAME, "notrack")
		b.nestEnd(e)
	case nftables.AffinityUpdate:
		b.loadAddr(nftables.SAddr, 4)
		e, d := b.expr("dynset")
		b.u32(unix.NFTA_DYNSET_SREG_KEY, reg1)
		b.u32(unix.NFTA_DYNSET_OP, unix.NFT_DYNSET_OP_UPDATE)
		b.str(unix.NFTA_DYNSET_SET_NAME, s.Set)
		b.u32(unix.NFTA_DYNSET_SET_ID, 0)
		b.u32(unix.NFTA_DYNSET_FLAGS, 0)
		b.exprEnd(e, d)
	}
}
