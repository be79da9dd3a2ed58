package demo

import (
	"slices"
	"testing"
)

func TestTraceLines(t *testing.T) {
	trace := `Flow: tcp,in_port=2,nw_src=10.128.0.1,nw_dst=10.128.2.2

bridge("br0")
-------------
 0. ip,in_port=2,nw_src=10.128.0.1, priority 400, cookie 0x1010000000000
    goto_table:30
90. ip,nw_dst=10.128.2.0/23, priority 100, cookie 0x102000a800200
    set_field:192.168.100.12->tun_dst
     -> tunneling to 192.168.100.12 via br-ex

Final flow: tcp,tun_dst=192.168.100.12,in_port=2
Datapath actions: tnl_push(...),1`
	got := traceLines(trace, "set_field", "tunneling")
	want := []string{
		"0. ip,in_port=2,nw_src=10.128.0.1, priority 400, cookie 0x1010000000000",
		"90. ip,nw_dst=10.128.2.0/23, priority 100, cookie 0x102000a800200",
		"set_field:192.168.100.12->tun_dst",
		"-> tunneling to 192.168.100.12 via br-ex",
		"Datapath actions: tnl_push(...),1",
	}
	if !slices.Equal(got, want) {
		t.Errorf("traceLines =\n%q\nwant\n%q", got, want)
	}
}

func TestGrepLines(t *testing.T) {
	ruleset := "table ip vxflow {\n\t\t10.10.12.208 . tcp . 8080 : goto external,\n\t\tmeta l4proto tcp   dnat to 10.128.2.2:8080\n}"
	got := grepLines(ruleset, "10.10.12.208", "dnat to 10.128.2.2")
	want := []string{"10.10.12.208 . tcp . 8080 : goto external,", "meta l4proto tcp dnat to 10.128.2.2:8080"}
	if !slices.Equal(got, want) {
		t.Errorf("grepLines = %q, want %q", got, want)
	}
}
