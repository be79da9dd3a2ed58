package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/pmezard/go-difflib/difflib"

	"github.com/vxflow/vxflow/internal/render/nftables"
	"github.com/vxflow/vxflow/internal/render/openflow"
)

// Sections of `render` output, for --only.
const (
	SectionAll      = "all"
	SectionOpenFlow = "openflow"
	SectionNFTables = "nftables"
)

// sectionHeader is the comment line that opens a section; comments keep each section loadable as it is
// (`ovs-ofctl add-flows` and `nft -f` both skip lines starting with #).
func sectionHeader(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "# ======== %s ========\n", fmt.Sprintf(format, args...))
}

// WriteNodeState prints a rendered node: a commented summary, the skipped objects, then the OpenFlow and
// nftables sections (only one of them with only = SectionOpenFlow or SectionNFTables, without the summary).
func WriteNodeState(w io.Writer, ns *NodeState, only string) {
	if only == SectionAll || only == "" {
		writeSummary(w, ns)
	}
	if only != SectionNFTables {
		sectionHeader(w, "OpenFlow: bridge %s, %d flows (ovs-ofctl -O OpenFlow13 add-flows syntax)", openflow.BridgeName, len(ns.Flows))
		fmt.Fprint(w, ns.Flows.String())
	}
	if only != SectionOpenFlow {
		sets, chains, rules, elems := ns.Ruleset.Counts()
		sectionHeader(w, "nftables: table ip %s, %d sets, %d chains, %d rules, %d elements (nft -f syntax)",
			nftables.TableName, sets, chains, rules, elems)
		fmt.Fprint(w, ns.Ruleset.String())
	}
}

// writeSummary prints the commented header of a render: the node facts and where they came from.
func writeSummary(w io.Writer, ns *NodeState) {
	v := ns.View
	fmt.Fprintf(w, "# vxflowctl render: node %s\n", ns.Node)
	fmt.Fprintf(w, "#   hostIP %s, subnet %s, gateway (tun0) %s\n", v.NodeIP, v.Subnet, v.Gateway)
	fmt.Fprintf(w, "#   datapath %s (%s), underlay MTU %d (%s), pod MTU %d, VXLAN UDP %d, mode %s\n",
		ns.Facts.Datapath, ns.Facts.DatapathOrigin, ns.Facts.UnderlayMTU, ns.Facts.UnderlayMTUOrigin, v.MTU, v.VXLANPort, v.Mode)
	var remotes []string
	for _, r := range v.RemoteNodes {
		remotes = append(remotes, fmt.Sprintf("%s %s %s", r.Name, r.HostIP, r.Subnet))
	}
	fmt.Fprintf(w, "#   remote nodes: %s\n", orNone(strings.Join(remotes, ", ")))
	var pods []string
	for _, p := range ns.Pods {
		pods = append(pods, fmt.Sprintf("%s %s ofport %d (%s)", p.Key, p.IP, p.OFPort, p.PortOrigin))
	}
	fmt.Fprintf(w, "#   local pods: %s\n", orNone(strings.Join(pods, ", ")))
	ports, eps := 0, 0
	for _, s := range ns.Services.Services {
		ports += len(s.Ports)
		for _, p := range s.Ports {
			eps += len(p.Endpoints)
		}
	}
	fmt.Fprintf(w, "#   Services: %d (%d ports, %d endpoints)\n", len(ns.Services.Services), ports, eps)
	fmt.Fprintf(w, "#   state hash %s (the agent reports it in HostSubnet %s status.agent.stateHash)\n", ns.StateHash, ns.Node)
	if len(ns.Skipped) > 0 {
		fmt.Fprintf(w, "# left out (the rest is rendered):\n")
		for _, s := range ns.Skipped {
			fmt.Fprintf(w, "#   %s\n", s)
		}
	}
}

// jsonFlow is one flow in JSON output, with its table's name and its owner.
type jsonFlow struct {
	Table     uint8  `json:"table"`
	TableName string `json:"tableName"`
	Priority  uint16 `json:"priority"`
	Cookie    string `json:"cookie"`
	Owner     string `json:"owner"`
	Match     string `json:"match"`
	Actions   string `json:"actions"`
	Text      string `json:"text"`
}

// jsonNodeState is the JSON form of a render.
type jsonNodeState struct {
	Node        string          `json:"node"`
	NodeIP      string          `json:"nodeIP"`
	Subnet      string          `json:"subnet"`
	Gateway     string          `json:"gateway"`
	Datapath    string          `json:"datapath"`
	DatapathSrc string          `json:"datapathOrigin"`
	UnderlayMTU int             `json:"underlayMTU"`
	UnderlaySrc string          `json:"underlayMTUOrigin"`
	MTU         int             `json:"mtu"`
	VXLANPort   uint16          `json:"vxlanPort"`
	StateHash   string          `json:"stateHash"`
	RemoteNodes []jsonRemote    `json:"remoteNodes"`
	LocalPods   []jsonPod       `json:"localPods"`
	Skipped     []jsonSkipped   `json:"skipped"`
	OpenFlow    *jsonOpenFlow   `json:"openflow,omitempty"`
	NFTables    *jsonNFTables   `json:"nftables,omitempty"`
	Services    []jsonServiceID `json:"services"`
}

type jsonRemote struct {
	Name   string `json:"name"`
	HostIP string `json:"hostIP"`
	Subnet string `json:"subnet"`
}

type jsonPod struct {
	Pod        string `json:"pod"`
	IP         string `json:"ip"`
	OFPort     int32  `json:"ofport"`
	PortOrigin string `json:"ofportOrigin"`
}

type jsonSkipped struct {
	Path   string `json:"path"`
	Detail string `json:"detail"`
	Source string `json:"source,omitempty"`
}

type jsonOpenFlow struct {
	Bridge string     `json:"bridge"`
	Flows  []jsonFlow `json:"flows"`
}

type jsonNFTables struct {
	Table    string `json:"table"`
	Sets     int    `json:"sets"`
	Chains   int    `json:"chains"`
	Rules    int    `json:"rules"`
	Elements int    `json:"elements"`
	Ruleset  string `json:"ruleset"`
}

type jsonServiceID struct {
	Service   string   `json:"service"`
	ClusterIP string   `json:"clusterIP"`
	Ports     []string `json:"ports"`
}

// toJSONFlows converts flows, naming each flow's owner in the view.
func toJSONFlows(ns *NodeState, flows openflow.FlowSet) []jsonFlow {
	out := make([]jsonFlow, 0, len(flows))
	for _, f := range flows {
		out = append(out, jsonFlow{
			Table: f.Table, TableName: openflow.TableName(f.Table), Priority: f.Priority,
			Cookie: fmt.Sprintf("%#x", f.Cookie), Owner: openflow.CookieOwner(ns.View, f.Cookie),
			Match: f.Match, Actions: f.Actions, Text: f.String(),
		})
	}
	return out
}

// WriteNodeStateJSON prints a rendered node as JSON.
func WriteNodeStateJSON(w io.Writer, ns *NodeState, only string) error {
	v := ns.View
	out := jsonNodeState{
		Node: ns.Node, NodeIP: v.NodeIP.String(), Subnet: v.Subnet.String(), Gateway: v.Gateway.String(),
		Datapath: string(ns.Facts.Datapath), DatapathSrc: ns.Facts.DatapathOrigin,
		UnderlayMTU: ns.Facts.UnderlayMTU, UnderlaySrc: ns.Facts.UnderlayMTUOrigin, MTU: v.MTU, VXLANPort: v.VXLANPort,
		StateHash: ns.StateHash, RemoteNodes: []jsonRemote{}, LocalPods: []jsonPod{}, Skipped: []jsonSkipped{},
		Services: []jsonServiceID{},
	}
	for _, r := range v.RemoteNodes {
		out.RemoteNodes = append(out.RemoteNodes, jsonRemote{Name: r.Name, HostIP: r.HostIP.String(), Subnet: r.Subnet.String()})
	}
	for _, p := range ns.Pods {
		out.LocalPods = append(out.LocalPods, jsonPod{Pod: p.Key, IP: p.IP.String(), OFPort: p.OFPort, PortOrigin: p.PortOrigin})
	}
	for _, s := range ns.Skipped {
		js := jsonSkipped{Path: s.Path, Detail: s.Detail}
		if s.Source != nil {
			js.Source = s.Source.String()
		}
		out.Skipped = append(out.Skipped, js)
	}
	for _, s := range ns.Services.Services {
		id := jsonServiceID{Service: s.Key(), ClusterIP: s.ClusterIP.String(), Ports: []string{}}
		for _, p := range s.Ports {
			id.Ports = append(id.Ports, fmt.Sprintf("%s/%d", p.Protocol, p.Port))
		}
		out.Services = append(out.Services, id)
	}
	if only != SectionNFTables {
		out.OpenFlow = &jsonOpenFlow{Bridge: openflow.BridgeName, Flows: toJSONFlows(ns, ns.Flows)}
	}
	if only != SectionOpenFlow {
		sets, chains, rules, elems := ns.Ruleset.Counts()
		out.NFTables = &jsonNFTables{Table: "ip " + nftables.TableName, Sets: sets, Chains: chains, Rules: rules,
			Elements: elems, Ruleset: ns.Ruleset.String()}
	}
	return writeJSON(w, out)
}

// writeJSON prints v indented, with a final newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("failed to write JSON: %w", err)
	}
	return nil
}

// NodeDiff is what a change of manifests does to one node.
type NodeDiff struct {
	// Node is the node name.
	Node string
	// Before and After are the two renders.
	Before, After *NodeState
	// FlowsAdded and FlowsRemoved are whole flows (a flow whose actions or cookie change is in both).
	FlowsAdded, FlowsRemoved openflow.FlowSet
	// NFTAdded and NFTRemoved are the lines of the nftables listing that appear or disappear.
	NFTAdded, NFTRemoved []string
	// OpenFlowDiff and NFTablesDiff are unified diffs of the two sections ("" when equal).
	OpenFlowDiff, NFTablesDiff string
}

// Changed reports whether the change does anything to the node's sections selected by only.
func (d *NodeDiff) Changed(only string) bool {
	return (only != SectionNFTables && d.OpenFlowDiff != "") || (only != SectionOpenFlow && d.NFTablesDiff != "")
}

// DiffNodeStates compares two renders of the same node; beforeName and afterName label the diff headers.
func DiffNodeStates(before, after *NodeState, beforeName, afterName string) (*NodeDiff, error) {
	d := &NodeDiff{Node: after.Node, Before: before, After: after}
	had := make(map[string]bool, len(before.Flows))
	for _, f := range before.Flows {
		had[f.String()] = true
	}
	has := make(map[string]bool, len(after.Flows))
	for _, f := range after.Flows {
		has[f.String()] = true
		if !had[f.String()] {
			d.FlowsAdded = append(d.FlowsAdded, f)
		}
	}
	for _, f := range before.Flows {
		if !has[f.String()] {
			d.FlowsRemoved = append(d.FlowsRemoved, f)
		}
	}
	var err error
	d.OpenFlowDiff, _, _, err = unifiedDiff(before.Flows.String(), after.Flows.String(),
		"a/"+before.Node+"/openflow ("+beforeName+")", "b/"+after.Node+"/openflow ("+afterName+")")
	if err != nil {
		return nil, err
	}
	d.NFTablesDiff, d.NFTAdded, d.NFTRemoved, err = unifiedDiff(before.Ruleset.String(), after.Ruleset.String(),
		"a/"+before.Node+"/nftables ("+beforeName+")", "b/"+after.Node+"/nftables ("+afterName+")")
	if err != nil {
		return nil, err
	}
	return d, nil
}

// unifiedDiff returns a unified diff with 3 lines of context and the lines added and removed.
func unifiedDiff(a, b, aName, bName string) (string, []string, []string, error) {
	if a == b {
		return "", nil, nil, nil
	}
	al, bl := difflib.SplitLines(a), difflib.SplitLines(b)
	text, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{A: al, B: bl, FromFile: aName, ToFile: bName, Context: 3})
	if err != nil {
		return "", nil, nil, fmt.Errorf("failed to diff: %w", err)
	}
	var added, removed []string
	for _, op := range difflib.NewMatcher(al, bl).GetOpCodes() {
		if op.Tag == 'r' || op.Tag == 'd' {
			for _, l := range al[op.I1:op.I2] {
				removed = append(removed, strings.TrimSuffix(l, "\n"))
			}
		}
		if op.Tag == 'r' || op.Tag == 'i' {
			for _, l := range bl[op.J1:op.J2] {
				added = append(added, strings.TrimSuffix(l, "\n"))
			}
		}
	}
	return text, added, removed, nil
}

// WriteNodeDiff prints a diff: a commented summary, then the unified diffs of the sections that changed.
func WriteNodeDiff(w io.Writer, d *NodeDiff, only string) {
	fmt.Fprintf(w, "# vxflowctl render --diff: node %s\n", d.Node)
	if only != SectionNFTables {
		fmt.Fprintf(w, "#   OpenFlow %s: %d flows added, %d removed (%d -> %d flows)\n", openflow.BridgeName,
			len(d.FlowsAdded), len(d.FlowsRemoved), len(d.Before.Flows), len(d.After.Flows))
	}
	if only != SectionOpenFlow {
		_, _, br, be := d.Before.Ruleset.Counts()
		_, _, ar, ae := d.After.Ruleset.Counts()
		fmt.Fprintf(w, "#   nftables ip %s: %d lines added, %d removed (rules %d -> %d, elements %d -> %d)\n",
			nftables.TableName, len(d.NFTAdded), len(d.NFTRemoved), br, ar, be, ae)
	}
	fmt.Fprintf(w, "#   state hash %s -> %s\n", d.Before.StateHash, d.After.StateHash)
	if !d.Changed(only) {
		fmt.Fprintf(w, "# no change on node %s\n", d.Node)
		return
	}
	if only != SectionNFTables {
		fmt.Fprint(w, d.OpenFlowDiff)
	}
	if only != SectionOpenFlow {
		fmt.Fprint(w, d.NFTablesDiff)
	}
}

// WriteNodeDiffJSON prints a diff as JSON.
func WriteNodeDiffJSON(w io.Writer, d *NodeDiff, only string) error {
	type side struct {
		StateHash string `json:"stateHash"`
		Flows     int    `json:"flows"`
		Rules     int    `json:"nftRules"`
		Elements  int    `json:"nftElements"`
	}
	sideOf := func(ns *NodeState) side {
		_, _, r, e := ns.Ruleset.Counts()
		return side{StateHash: ns.StateHash, Flows: len(ns.Flows), Rules: r, Elements: e}
	}
	out := struct {
		Node         string     `json:"node"`
		Changed      bool       `json:"changed"`
		Before       side       `json:"before"`
		After        side       `json:"after"`
		FlowsAdded   []jsonFlow `json:"flowsAdded,omitempty"`
		FlowsRemoved []jsonFlow `json:"flowsRemoved,omitempty"`
		NFTAdded     []string   `json:"nftLinesAdded,omitempty"`
		NFTRemoved   []string   `json:"nftLinesRemoved,omitempty"`
		Unified      string     `json:"unified"`
	}{Node: d.Node, Changed: d.Changed(only), Before: sideOf(d.Before), After: sideOf(d.After)}
	if only != SectionNFTables {
		out.FlowsAdded = toJSONFlows(d.After, d.FlowsAdded)
		out.FlowsRemoved = toJSONFlows(d.Before, d.FlowsRemoved)
		out.Unified += d.OpenFlowDiff
	}
	if only != SectionOpenFlow {
		out.NFTAdded, out.NFTRemoved = d.NFTAdded, d.NFTRemoved
		out.Unified += d.NFTablesDiff
	}
	return writeJSON(w, out)
}
