package lab

import (
	"slices"
	"testing"
)

func TestFlowMatches(t *testing.T) {
	dump := ` cookie=0x1010000000000, table=0, priority=400,ip,in_port=2,nw_src=10.128.0.1 actions=goto_table:30
 cookie=0x102000a800200, table=10, priority=100,tun_src=192.168.100.12 actions=goto_table:30
 cookie=0x102000a800200, table=90, priority=100,ip,nw_dst=10.128.2.0/23 actions=move:NXM_NX_REG0[]->NXM_NX_TUN_ID[0..31],set_field:192.168.100.12->tun_dst,output:1
 cookie=0x0, priority=0 actions=drop
`
	tests := []struct {
		substr string
		want   []string
	}{
		{"192.168.100.12", []string{"table=10,priority=100,tun_src=192.168.100.12", "table=90,priority=100,ip,nw_dst=10.128.2.0/23"}},
		{"actions=drop", []string{"table=0,priority=0"}},
		{"192.168.100.99", nil},
	}
	for _, tt := range tests {
		if got := FlowMatches(dump, tt.substr); !slices.Equal(got, tt.want) {
			t.Errorf("FlowMatches(%q) = %q, want %q", tt.substr, got, tt.want)
		}
	}
}
