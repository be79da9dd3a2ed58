package openflow

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// match is a flow match whose String is exactly what `ovs-ofctl -O OpenFlow13 dump-flows` prints for it.
// OVS 3.1 prints the fields in a fixed order, whatever order they were written in (lib/match.c,
// match_format): ct_state, the protocol keyword, reg0..reg7, tun_id, tun_src, tun_dst, in_port, dl_src,
// dl_dst, nw_src/arp_spa, nw_dst/arp_tpa, arp_op, arp_sha, arp_tha, tp_src, tp_dst. Writing the match
// through this type keeps the rendered text equal to the dump; the round-trip test checks it against a real
// switch.
type match struct {
	// ctState is the conntrack state, in OVS's flag order, for example "-trk" or "+rpl".
	ctState string
	// proto is the protocol keyword: "ip", "arp", "udp", "tcp" or "" for any packet.
	proto string
	// regs are register matches, in register order.
	regs []regMatch
	// tunSrc is the outer source address of tunnelled packets.
	tunSrc netip.Addr
	// inPort is the ingress ofport, 0 for any.
	inPort int32
	// dlSrc is the Ethernet source.
	dlSrc net.HardwareAddr
	// nwSrc and nwDst are the IP (nw_src/nw_dst) or ARP (arp_spa/arp_tpa) addresses.
	nwSrc, nwDst netip.Prefix
	// arpSha is the ARP sender hardware address.
	arpSha net.HardwareAddr
	// tpDst is the TCP or UDP destination port, 0 for any.
	tpDst uint16
}

// regMatch is one register match, reg<N>=value.
type regMatch struct {
	reg   Register
	value uint32
}

// String renders the match in ovs-ofctl's canonical form.
func (m match) String() string {
	var parts []string
	add := func(s string) { parts = append(parts, s) }
	if m.ctState != "" {
		add("ct_state=" + m.ctState)
	}
	if m.proto != "" {
		add(m.proto)
	}
	for _, r := range m.regs {
		add(fmt.Sprintf("reg%d=%s", r.reg.N, hexOrZero(uint64(r.value))))
	}
	if m.tunSrc.IsValid() {
		add("tun_src=" + m.tunSrc.String())
	}
	if m.inPort != 0 {
		add("in_port=" + strconv.Itoa(int(m.inPort)))
	}
	if m.dlSrc != nil {
		add("dl_src=" + m.dlSrc.String())
	}
	src, dst := "nw_src=", "nw_dst="
	if m.proto == "arp" {
		src, dst = "arp_spa=", "arp_tpa="
	}
	if m.nwSrc.IsValid() {
		add(src + prefixString(m.nwSrc))
	}
	if m.nwDst.IsValid() {
		add(dst + prefixString(m.nwDst))
	}
	if m.arpSha != nil {
		add("arp_sha=" + m.arpSha.String())
	}
	if m.tpDst != 0 {
		add("tp_dst=" + strconv.Itoa(int(m.tpDst)))
	}
	return strings.Join(parts, ",")
}

// prefixString prints a prefix as OVS does: a /32 as a bare address.
func prefixString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// host turns an address into the /32 prefix a match takes.
func host(ip netip.Addr) netip.Prefix {
	return netip.PrefixFrom(ip, ip.BitLen())
}

// hexOrZero prints a value as OVS prints loaded and matched numbers: 0, or hex with 0x.
func hexOrZero(v uint64) string {
	if v == 0 {
		return "0"
	}
	return fmt.Sprintf("%#x", v)
}

// Actions, each spelled as ovs-ofctl prints it back; actions joins them.

func actions(as ...string) string { return strings.Join(as, ",") }

const drop = "drop"

func gotoTable(t Table) string { return "goto_table:" + strconv.Itoa(int(t.ID)) }

func output(port int32) string { return "output:" + strconv.Itoa(int(port)) }

func outputReg(r Register) string { return "output:" + r.field() }

func loadReg(v uint32, r Register) string { return "load:" + hexOrZero(uint64(v)) + "->" + r.field() }

func moveTunIDToReg(r Register) string { return "move:" + tunIDField + "->" + r.field() }

func moveRegToTunID(r Register) string { return "move:" + r.field() + "->" + tunIDField }

func setTunDst(ip netip.Addr) string { return "set_field:" + ip.String() + "->tun_dst" }

// conntrack sends the packet through the default conntrack zone and continues in table t.
func conntrack(t Table) string { return "ct(table=" + strconv.Itoa(int(t.ID)) + ")" }

// conntrackNAT reverses the NAT of the connection the packet belongs to and continues in table t.
func conntrackNAT(t Table) string { return "ct(table=" + strconv.Itoa(int(t.ID)) + ",nat)" }

// note is the note action with its bytes zero-padded as OVS pads and prints them: the action (10 bytes of
// header plus the note) fills whole 8-byte units, so a note has 6, 14, 22… bytes.
func note(b []byte) string {
	n := len(b) + (8-(len(b)+2)%8)%8
	padded := make([]byte, n)
	copy(padded, b)
	hex := make([]string, n)
	for i, c := range padded {
		hex[i] = fmt.Sprintf("%02x", c)
	}
	return "note:" + strings.Join(hex, ".")
}
