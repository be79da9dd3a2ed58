// Package nodeaccess runs vxflow's read-only node diagnostics (ofproto/trace on br0, a flow dump, the
// nftables table, a route lookup) where a node's state lives: by exec with a per-node command prefix, or
// through the node agent's debug endpoint, which serves the same four queries with Handler.
package nodeaccess

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
)

// Interface is what vxflowctl trace needs from a node. Every method is read-only and safe to call on a
// production node; each returns the tool's own text output, which the caller parses.
type Interface interface {
	// OFProtoTrace runs `ovs-appctl ofproto/trace BRIDGE [--ct-next STATE]... FLOW` on node and returns its
	// output.
	OFProtoTrace(ctx context.Context, node string, req TraceRequest) (string, error)
	// DumpFlows returns `ovs-ofctl -O OpenFlow13 --no-stats --no-names dump-flows BRIDGE` on node.
	DumpFlows(ctx context.Context, node, bridge string) (string, error)
	// NFTTable returns `nft list table ip vxflow` on node; an error when the table does not exist.
	NFTTable(ctx context.Context, node string) (string, error)
	// RouteGet returns `ip -o route get DST [from SRC iif IIF] [mark MARK]` on node.
	RouteGet(ctx context.Context, node string, q RouteQuery) (string, error)
}

// TraceRequest is one ofproto/trace: the JSON body of POST /debug/trace.
type TraceRequest struct {
	// Bridge is the OVS bridge, normally br0.
	Bridge string `json:"bridge"`
	// Flow is the packet in ovs-ofctl flow syntax, for example
	// "in_port=3,tcp,dl_src=0a:58:0a:80:00:02,nw_src=10.128.0.2,nw_dst=10.128.2.5,tp_src=40000,tp_dst=8080".
	Flow string `json:"flow"`
	// CTNext are the conntrack states to resume with after each ct() recirculation, for example "trk,new".
	CTNext []string `json:"ctNext,omitempty"`
}

// RouteQuery is one route lookup: the JSON body of POST /debug/route.
type RouteQuery struct {
	// Dst is the destination address.
	Dst string `json:"dst"`
	// Src is the source address of a forwarded packet (with IIF) or the preferred source.
	Src string `json:"src,omitempty"`
	// IIF is the interface the packet arrived on, for a forwarded packet.
	IIF string `json:"iif,omitempty"`
	// Mark is the packet mark.
	Mark uint32 `json:"mark,omitempty"`
}

// Output is the JSON response of POST /debug/trace and POST /debug/route.
type Output struct {
	// Output is the tool's standard output.
	Output string `json:"output"`
}

// ErrorResponse is the JSON body of every non-2xx response of the debug endpoint.
type ErrorResponse struct {
	Error string `json:"error"`
}

// DefaultBridge is vxflow's integration bridge.
const DefaultBridge = "br0"

// NFTTableName is vxflow's nftables table (family ip).
const NFTTableName = "vxflow"

// The patterns never let a value start with "-", so that none can be read as an option.
var (
	bridgeRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$`)
	flowRE   = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.:,=/\[\]+-]*$`)
	ctNextRE = regexp.MustCompile(`^[a-z,+|-]{1,64}$`)
	ifaceRE  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,14}$`)
)

// maxFlowLen bounds the flow of one trace.
const maxFlowLen = 2048

// maxCTNext bounds the --ct-next options of one trace.
const maxCTNext = 8

// Validate rejects a request whose fields are not what their names say: nothing reaches a command line
// unchecked, even though commands are run without a shell.
func (r TraceRequest) Validate() error {
	if !bridgeRE.MatchString(r.Bridge) {
		return fmt.Errorf("invalid bridge name %q", r.Bridge)
	}
	if len(r.Flow) > maxFlowLen || !flowRE.MatchString(r.Flow) {
		return fmt.Errorf("invalid flow %q: use ovs-ofctl flow syntax (letters, digits and _.:,=/[]+-)", r.Flow)
	}
	if len(r.CTNext) > maxCTNext {
		return fmt.Errorf("too many ctNext states (%d, at most %d)", len(r.CTNext), maxCTNext)
	}
	for _, s := range r.CTNext {
		if !ctNextRE.MatchString(s) {
			return fmt.Errorf("invalid ctNext state %q, for example trk,new", s)
		}
	}
	return nil
}

// ValidateBridge checks a bridge name.
func ValidateBridge(b string) error {
	if !bridgeRE.MatchString(b) {
		return fmt.Errorf("invalid bridge name %q", b)
	}
	return nil
}

// Validate rejects a route query with anything but addresses, an interface name and a mark.
func (q RouteQuery) Validate() error {
	if _, err := netip.ParseAddr(q.Dst); err != nil {
		return fmt.Errorf("invalid destination %q: %w", q.Dst, err)
	}
	if q.Src != "" {
		if _, err := netip.ParseAddr(q.Src); err != nil {
			return fmt.Errorf("invalid source %q: %w", q.Src, err)
		}
	}
	if q.IIF != "" && !ifaceRE.MatchString(q.IIF) {
		return fmt.Errorf("invalid interface name %q", q.IIF)
	}
	if q.IIF != "" && q.Src == "" {
		return errors.New("a route query with iif needs src")
	}
	return nil
}

// args returns the ofproto/trace arguments after "ofproto/trace".
func (r TraceRequest) args() []string {
	a := []string{r.Bridge}
	for _, s := range r.CTNext {
		a = append(a, "--ct-next", s)
	}
	return append(a, r.Flow)
}

// args returns the `ip route get` arguments after "get".
func (q RouteQuery) args() []string {
	a := []string{q.Dst}
	if q.Src != "" {
		a = append(a, "from", q.Src)
	}
	if q.IIF != "" {
		a = append(a, "iif", q.IIF)
	}
	if q.Mark != 0 {
		a = append(a, "mark", fmt.Sprintf("%#x", q.Mark))
	}
	return a
}
