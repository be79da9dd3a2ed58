package openflow

import (
	"fmt"
	"strings"
)

// Flow is one desired OpenFlow 1.3 flow in ovs-ofctl syntax; it is the contract between the renderer and
// internal/apply/ovs, which diffs it against the switch's dump and sends only the difference.
//
// Match and Actions are written exactly as `ovs-ofctl -O OpenFlow13 dump-flows` prints them back (field
// order, spelling such as `set_field:...->tun_dst`, `goto_table:N`), so that a flow read from the switch and
// the same flow rendered compare equal as strings. The apply integration test proves this by applying a
// rendered set and then expecting an empty diff.
type Flow struct {
	// Table is the OpenFlow table the flow lives in.
	Table uint8
	// Priority orders flows inside a table; higher wins.
	Priority uint16
	// Cookie identifies the flow's owner (node, remote HostSubnet or pod) and pipeline round; see cookie.go.
	Cookie uint64
	// Match is the ovs-ofctl match without table and priority, for example "ip,in_port=3,nw_src=10.128.2.5".
	// An empty Match matches every packet.
	Match string
	// Actions is the ovs-ofctl action list, for example "goto_table:30" or "drop".
	Actions string
}

// Key identifies a flow inside a bridge: OpenFlow allows one flow per (table, priority, match).
func (f Flow) Key() string {
	return fmt.Sprintf("table=%d,priority=%d,%s", f.Table, f.Priority, f.Match)
}

// String renders the flow as one `ovs-ofctl add-flow` line.
func (f Flow) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cookie=%#x,table=%d,priority=%d", f.Cookie, f.Table, f.Priority)
	if f.Match != "" {
		b.WriteByte(',')
		b.WriteString(f.Match)
	}
	b.WriteString(" actions=")
	b.WriteString(f.Actions)
	return b.String()
}
