package cli

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// OFTrace is the parsed output of `ovs-appctl ofproto/trace` (OVS 3.1): one pass per pipeline run, the
// first for the packet as given, one more for each recirculation (after ct()), each with the tables the
// packet crossed and the datapath actions it ended with.
type OFTrace struct {
	Passes []OFTracePass
}

// OFTracePass is one run of the pipeline.
type OFTracePass struct {
	// Header is the recirculation banner, for example "recirc(0x1) - resume conntrack with ct_state=new|trk";
	// empty for the first pass.
	Header string
	// Flow is the packet as the pass starts ("Flow: ...").
	Flow string
	// Hops are the tables crossed, in order, on every bridge (a tunnelled packet continues on the underlay
	// bridge).
	Hops []OFTraceHop
	// FinalFlow, Megaflow and DatapathActions are the pass's last three lines.
	FinalFlow, Megaflow, DatapathActions string
}

// OFTraceHop is one table lookup.
type OFTraceHop struct {
	// Bridge is the bridge the table belongs to.
	Bridge string
	// Table is the OpenFlow table number.
	Table uint8
	// NoMatch is true when no flow matched (the packet is dropped).
	NoMatch bool
	// Match, Priority and Cookie identify the flow that matched; Match is empty for a catch-all flow.
	Match    string
	Priority int
	Cookie   uint64
	// Actions are the flow's actions as executed, each with the notes OVS printed about it.
	Actions []OFTraceAction
}

// OFTraceAction is one executed action and what OVS said about it ("-> output port is 3").
type OFTraceAction struct {
	Action string
	Notes  []string
}

var (
	ofTraceTableRE = regexp.MustCompile(`^\s{0,2}(\d{1,3})\. (.*)$`)
	ofTraceFlowRE  = regexp.MustCompile(`^(?:(.*), )?priority (\d+)(?:, cookie (0x[0-9a-f]+))?$`)
	ofTraceBridge  = regexp.MustCompile(`^bridge\("([^"]+)"\)$`)
)

// ParseOFTrace parses ofproto/trace output. It fails only when the text is not a trace at all (no "Flow:"
// or no "Datapath actions:" line); lines it does not know are skipped.
func ParseOFTrace(out string) (*OFTrace, error) {
	t := &OFTrace{}
	var pass *OFTracePass
	var hop *OFTraceHop
	bridge := ""
	newPass := func(header string) {
		t.Passes = append(t.Passes, OFTracePass{Header: header})
		pass, hop, bridge = &t.Passes[len(t.Passes)-1], nil, ""
	}
	lines := strings.Split(out, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimRight(lines[i], " \r")
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
			continue
		case strings.HasPrefix(line, "====="):
			// A recirculation banner: "=====", the header, "=====".
			header := ""
			if i+1 < len(lines) {
				header = strings.TrimSpace(lines[i+1])
				i++
			}
			if i+1 < len(lines) && strings.HasPrefix(lines[i+1], "=====") {
				i++
			}
			newPass(header)
			continue
		case strings.HasPrefix(line, "Flow: "):
			if pass == nil || pass.Flow != "" {
				newPass("")
			}
			pass.Flow = strings.TrimPrefix(line, "Flow: ")
			continue
		}
		if pass == nil {
			continue // text before the first Flow: line (nothing in OVS 3.1)
		}
		switch {
		case ofTraceBridge.MatchString(line):
			bridge = ofTraceBridge.FindStringSubmatch(line)[1]
			hop = nil
		case strings.HasPrefix(line, "---"):
		case strings.HasPrefix(line, "Final flow: "):
			pass.FinalFlow = strings.TrimPrefix(line, "Final flow: ")
		case strings.HasPrefix(line, "Megaflow: "):
			pass.Megaflow = strings.TrimPrefix(line, "Megaflow: ")
		case strings.HasPrefix(line, "Datapath actions: "):
			pass.DatapathActions = strings.TrimPrefix(line, "Datapath actions: ")
		case ofTraceTableRE.MatchString(line):
			m := ofTraceTableRE.FindStringSubmatch(line)
			table, _ := strconv.Atoi(m[1])
			pass.Hops = append(pass.Hops, OFTraceHop{Bridge: bridge, Table: uint8(table)})
			hop = &pass.Hops[len(pass.Hops)-1]
			rest := strings.TrimSpace(m[2])
			if rest == "No match." {
				hop.NoMatch = true
				continue
			}
			if fm := ofTraceFlowRE.FindStringSubmatch(rest); fm != nil {
				hop.Match = fm[1]
				hop.Priority, _ = strconv.Atoi(fm[2])
				if fm[3] != "" {
					hop.Cookie, _ = strconv.ParseUint(fm[3], 0, 64)
				}
			} else {
				hop.Match = rest
			}
		case strings.HasPrefix(trimmed, "->") || strings.HasPrefix(trimmed, ">>"):
			note := strings.TrimSpace(strings.TrimLeft(trimmed, "->"))
			if hop == nil {
				continue
			}
			if len(hop.Actions) == 0 {
				hop.Actions = append(hop.Actions, OFTraceAction{})
			}
			a := &hop.Actions[len(hop.Actions)-1]
			a.Notes = append(a.Notes, note)
		case trimmed == "thaw" || strings.HasPrefix(trimmed, "Resuming from table"):
			// The start of a recirculated pass; the hops that follow say where it resumed.
		case hop != nil && strings.HasPrefix(line, "    "):
			hop.Actions = append(hop.Actions, OFTraceAction{Action: trimmed})
		}
	}
	if len(t.Passes) == 0 || t.Passes[0].Flow == "" {
		return nil, errors.New("failed to parse ofproto/trace output: no \"Flow:\" line")
	}
	if last := t.Passes[len(t.Passes)-1]; last.DatapathActions == "" {
		return nil, errors.New("failed to parse ofproto/trace output: no \"Datapath actions:\" line (truncated?)")
	}
	return t, nil
}

// Hops returns the hops of every pass on one bridge, in order: the packet's whole walk through it.
func (t *OFTrace) Hops(bridge string) []OFTraceHop {
	var out []OFTraceHop
	for _, p := range t.Passes {
		for _, h := range p.Hops {
			if h.Bridge == bridge {
				out = append(out, h)
			}
		}
	}
	return out
}

// Final returns the last pass, whose datapath actions are what happens to the packet.
func (t *OFTrace) Final() *OFTracePass {
	return &t.Passes[len(t.Passes)-1]
}

// Outcome kinds of an OFOutcome.
const (
	OutcomeOutput = "output"
	OutcomeTunnel = "tunnel"
	OutcomeDrop   = "drop"
)

// OFOutcome is what a traced bridge did with the packet in the end.
type OFOutcome struct {
	// Kind is OutcomeOutput (to a local port), OutcomeTunnel (out of the VXLAN port) or OutcomeDrop.
	Kind string
	// Port is the OpenFlow port of an output or tunnel.
	Port int
	// TunDst and VNI are the tunnel destination and key a tunnelled packet was given; VNIKnown is false
	// when the trace did not show the key.
	TunDst   netip.Addr
	VNI      uint32
	VNIKnown bool
	// Encap is the outer header the datapath pushes, when the trace resolved it.
	Encap *Encapsulation
	// DropHop is the table lookup that dropped the packet (nil for a drop after the pipeline, such as an
	// unresolved tunnel neighbour).
	DropHop *OFTraceHop
	// DropReason says why, in OVS's words or the pipeline's.
	DropReason string
	// DatapathActions are the final datapath actions.
	DatapathActions string
	// Warning notes something that costs only this packet, such as an unresolved tunnel neighbour.
	Warning string
}

// Encapsulation is the outer header of a VXLAN packet, from a tnl_push datapath action.
type Encapsulation struct {
	HeaderSize int
	OuterSrc   netip.Addr
	OuterDst   netip.Addr
	SrcMAC     string
	DstMAC     string
	UDPDstPort int
	VNI        uint32
	DontFrag   bool
}

var (
	tnlPushRE = regexp.MustCompile(`tnl_push\(tnl_port\(\d+\),header\(size=(\d+),type=\d+,eth\(dst=([0-9a-f:]+),src=([0-9a-f:]+),dl_type=0x0800\),` +
		`ipv4\(src=([0-9.]+),dst=([0-9.]+),proto=17,tos=0x?[0-9a-f]*,ttl=\d+,frag=(0x[0-9a-f]+)\),udp\(src=\d+,dst=(\d+),csum=0x[0-9a-f]+\),` +
		`vxlan\(flags=0x[0-9a-f]+,vni=(0x[0-9a-f]+)\)\)`)
	outputActionRE = regexp.MustCompile(`^output:(\d+)$`)
	outputPortNote = regexp.MustCompile(`^output port is (\d+)$`)
	tunDstRE       = regexp.MustCompile(`^set_field:([0-9.]+)->tun_dst$`)
	tunIDNoteRE    = regexp.MustCompile(`^NXM_NX_TUN_ID\[(?:0\.\.31)?\] is now (0x[0-9a-f]+|\d+)$`)
	tunIDSetRE     = regexp.MustCompile(`^(?:set_field:(0x[0-9a-f]+|\d+)->tun_id|load:(0x[0-9a-f]+|\d+)->NXM_NX_TUN_ID\[(?:0\.\.31)?\])$`)
)

// Outcome derives what bridge did with the packet, given that tunnelPort is its VXLAN port.
func (t *OFTrace) Outcome(bridge string, tunnelPort int) OFOutcome {
	final := t.Final()
	o := OFOutcome{Kind: OutcomeDrop, DatapathActions: final.DatapathActions}
	var tunDst netip.Addr
	var notes []string
	for i := range final.Hops {
		h := &final.Hops[i]
		if h.Bridge != bridge {
			continue
		}
		if h.NoMatch {
			o.DropHop, o.DropReason = h, fmt.Sprintf("no flow in table %d matched", h.Table)
			return o
		}
		for _, a := range h.Actions {
			notes = append(notes, a.Notes...)
			for _, n := range a.Notes {
				if m := tunIDNoteRE.FindStringSubmatch(n); m != nil {
					v, _ := strconv.ParseUint(m[1], 0, 32)
					o.VNI, o.VNIKnown = uint32(v), true
				}
			}
			if m := tunIDSetRE.FindStringSubmatch(a.Action); m != nil {
				v, _ := strconv.ParseUint(m[1]+m[2], 0, 32)
				o.VNI, o.VNIKnown = uint32(v), true
			}
			if m := tunDstRE.FindStringSubmatch(a.Action); m != nil {
				tunDst, _ = netip.ParseAddr(m[1])
			}
			port := 0
			if m := outputActionRE.FindStringSubmatch(a.Action); m != nil {
				port, _ = strconv.Atoi(m[1])
			} else if strings.HasPrefix(a.Action, "output:") {
				for _, n := range a.Notes {
					if m := outputPortNote.FindStringSubmatch(n); m != nil {
						port, _ = strconv.Atoi(m[1])
					}
				}
			}
			switch {
			case port != 0 && port == tunnelPort:
				o.Kind, o.Port, o.TunDst = OutcomeTunnel, port, tunDst
			case port != 0 && o.Kind != OutcomeTunnel:
				o.Kind, o.Port = OutcomeOutput, port
			case a.Action == "drop" && o.Kind == OutcomeDrop && o.DropHop == nil:
				o.DropHop, o.DropReason = h, fmt.Sprintf("the flow in table %d drops it", h.Table)
			}
		}
	}
	if m := tnlPushRE.FindStringSubmatch(final.DatapathActions); m != nil {
		e := &Encapsulation{SrcMAC: m[3], DstMAC: m[2]}
		e.HeaderSize, _ = strconv.Atoi(m[1])
		e.OuterSrc, _ = netip.ParseAddr(m[4])
		e.OuterDst, _ = netip.ParseAddr(m[5])
		frag, _ := strconv.ParseUint(m[6], 0, 16)
		e.DontFrag = frag&0x4000 != 0
		e.UDPDstPort, _ = strconv.Atoi(m[7])
		vni, _ := strconv.ParseUint(m[8], 0, 32)
		e.VNI = uint32(vni)
		o.Encap = e
		if !o.VNIKnown {
			o.VNI, o.VNIKnown = e.VNI, true
		}
	}
	if o.Kind != OutcomeDrop && final.DatapathActions == "drop" {
		// The pipeline sent the packet somewhere, but the datapath drops it: say why, from OVS's notes. An
		// unresolved tunnel neighbour only costs the first packets, so it is a warning, not a drop.
		reason := "the datapath drops it after the pipeline"
		for _, n := range notes {
			switch {
			case strings.Contains(n, "neighbor cache miss"):
				o.Warning = "OVS had not resolved the underlay neighbour yet (" + n + "): this packet is dropped while OVS ARPs, the next ones pass"
				return o
			case strings.Contains(n, "native tunnel routing failed"):
				reason = "native tunnel routing failed: OVS found no route to the remote VTEP through an OVS bridge (the node IP must be on a bridge such as br-ex)"
			}
		}
		o.Kind, o.DropReason = OutcomeDrop, reason
	}
	return o
}
