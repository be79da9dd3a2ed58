package cli

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vxflow/vxflow/internal/render/openflow"
)

// TestParseOFTrace reads the ofproto/trace outputs of OVS 3.1.0 recorded from the two-node lab of
// TestLiveTwoNodes (testdata/ofproto-trace, refreshed with -update as root).
func TestParseOFTrace(t *testing.T) {
	podClient := openflow.PodCookie(netip.MustParseAddr("10.128.0.10"))
	podWeb := openflow.PodCookie(netip.MustParseAddr("10.128.2.20"))
	node2 := openflow.RemoteNodeCookie(netip.MustParsePrefix("10.128.2.0/23"))
	node1 := openflow.RemoteNodeCookie(netip.MustParsePrefix("10.128.0.0/23"))
	node3 := openflow.RemoteNodeCookie(netip.MustParsePrefix("10.128.4.0/23"))
	nodeC := openflow.NodeCookie()
	tests := []struct {
		file       string
		passes     int
		tables     []int
		cookies    []uint64 // the cookies of the br0 hops, when checked
		kind       string
		port       int
		tunDst     string
		encap      bool
		dropTable  int // -1: no drop hop
		dropReason string
		warning    string
		noMatch    bool
	}{
		{file: "pod-to-remote-pod-node1", passes: 1, tables: []int{0, 20, 30, 90}, cookies: []uint64{nodeC, podClient, nodeC, node2},
			kind: OutcomeTunnel, port: 1, tunDst: "192.168.100.2", encap: true, dropTable: -1},
		{file: "pod-to-remote-pod-node2", passes: 1, tables: []int{0, 10, 30, 70, 80}, cookies: []uint64{nodeC, node1, nodeC, podWeb, nodeC},
			kind: OutcomeOutput, port: 3, dropTable: -1},
		{file: "pod-to-service-node1", passes: 1, tables: []int{0, 20, 30, 60}, kind: OutcomeOutput, port: 2, dropTable: -1},
		{file: "tun0-to-remote-pod-node1", passes: 1, tables: []int{0, 30, 90}, kind: OutcomeTunnel, port: 1, tunDst: "192.168.100.2",
			encap: true, dropTable: -1},
		{file: "tun0-to-local-pod-node2", passes: 1, tables: []int{0, 30, 70, 80}, kind: OutcomeOutput, port: 3, dropTable: -1},
		{file: "arp-for-gateway-node1", passes: 1, tables: []int{0, 20, 30}, kind: OutcomeOutput, port: 2, dropTable: -1},
		{file: "spoofed-source-node1", passes: 1, tables: []int{0, 20}, cookies: []uint64{nodeC, nodeC}, kind: OutcomeDrop,
			dropTable: 20, dropReason: "the flow in table 20 drops it"},
		{file: "vxlan-from-unknown-vtep-node2", passes: 1, tables: []int{0, 10}, kind: OutcomeDrop, dropTable: 10,
			dropReason: "the flow in table 10 drops it"},
		{file: "neighbour-miss-node1", passes: 1, tables: []int{0, 20, 30, 90}, cookies: []uint64{nodeC, podClient, nodeC, node3},
			kind: OutcomeTunnel, port: 1, tunDst: "192.168.100.3", dropTable: -1,
			warning: "neighbor cache miss for 192.168.100.3 on bridge br-ex"},
		{file: "no-flows-node2", passes: 1, tables: []int{0}, kind: OutcomeDrop, dropTable: 0, dropReason: "no flow in table 0 matched", noMatch: true},
		{file: "system-conntrack-node2", passes: 2, tables: []int{0, 0, 10, 30, 70, 80}, kind: OutcomeOutput, port: 3, dropTable: -1},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "ofproto-trace", tc.file+".txt"))
			if err != nil {
				t.Fatal(err)
			}
			tr, err := ParseOFTrace(string(b))
			if err != nil {
				t.Fatal(err)
			}
			if len(tr.Passes) != tc.passes {
				t.Errorf("%d passes, want %d", len(tr.Passes), tc.passes)
			}
			hops := tr.Hops("br0")
			var tables []int
			var cookies []uint64
			for _, h := range hops {
				tables = append(tables, int(h.Table))
				cookies = append(cookies, h.Cookie)
			}
			if !slices.Equal(tables, tc.tables) {
				t.Errorf("tables %v, want %v", tables, tc.tables)
			}
			if tc.cookies != nil && !slices.Equal(cookies, tc.cookies) {
				t.Errorf("cookies %x, want %x", cookies, tc.cookies)
			}
			for _, h := range hops {
				if !h.NoMatch && (h.Priority < 0 || len(h.Actions) == 0) {
					t.Errorf("hop %+v has no priority or actions", h)
				}
			}
			o := tr.Outcome("br0", 1)
			if o.Kind != tc.kind {
				t.Fatalf("outcome %s, want %s (%+v)", o.Kind, tc.kind, o)
			}
			if tc.kind != OutcomeDrop && o.Port != tc.port {
				t.Errorf("port %d, want %d", o.Port, tc.port)
			}
			if tc.tunDst != "" {
				if o.TunDst.String() != tc.tunDst || !o.VNIKnown || o.VNI != 0 {
					t.Errorf("tunnel to %s VNI %d (known %v), want %s VNI 0", o.TunDst, o.VNI, o.VNIKnown, tc.tunDst)
				}
			}
			if (o.Encap != nil) != tc.encap {
				t.Errorf("encapsulation %+v, want present=%v", o.Encap, tc.encap)
			} else if tc.encap {
				e := o.Encap
				if e.HeaderSize != 50 || e.OuterSrc.String() != "192.168.100.1" || e.OuterDst.String() != tc.tunDst ||
					e.UDPDstPort != 4789 || e.VNI != 0 || !e.DontFrag {
					t.Errorf("encapsulation %+v", e)
				}
			}
			switch {
			case tc.dropTable < 0 && o.DropHop != nil:
				t.Errorf("unexpected drop hop %+v", o.DropHop)
			case tc.dropTable >= 0 && (o.DropHop == nil || int(o.DropHop.Table) != tc.dropTable || o.DropHop.NoMatch != tc.noMatch):
				t.Errorf("drop hop %+v, want table %d (no match %v)", o.DropHop, tc.dropTable, tc.noMatch)
			}
			if tc.dropReason != "" && o.DropReason != tc.dropReason {
				t.Errorf("drop reason %q, want %q", o.DropReason, tc.dropReason)
			}
			if !strings.Contains(o.Warning, tc.warning) || (tc.warning == "") != (o.Warning == "") {
				t.Errorf("warning %q, want %q", o.Warning, tc.warning)
			}
		})
	}
}

func TestParseOFTraceNotes(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "ofproto-trace", "pod-to-remote-pod-node2.txt"))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := ParseOFTrace(string(b))
	if err != nil {
		t.Fatal(err)
	}
	hops := tr.Hops("br0")
	last := hops[len(hops)-1]
	if got := fmt.Sprint(last.Actions); !strings.Contains(got, "output:NXM_NX_REG2[]") || !strings.Contains(got, "output port is 3") {
		t.Errorf("the last hop's actions %v lack the output and its note", got)
	}
	if hops[0].Match != "ip,in_port=1,nw_dst=10.128.0.0/14" || hops[0].Priority != 200 {
		t.Errorf("first hop %+v", hops[0])
	}
	if !strings.HasPrefix(tr.Passes[0].Flow, "tcp,reg0=0x0") && !strings.HasPrefix(tr.Passes[0].Flow, "tcp,tun_src=192.168.100.1") {
		t.Errorf("flow %q", tr.Passes[0].Flow)
	}
	sys, err := os.ReadFile(filepath.Join("testdata", "ofproto-trace", "system-conntrack-node2.txt"))
	if err != nil {
		t.Fatal(err)
	}
	tr, err = ParseOFTrace(string(sys))
	if err != nil {
		t.Fatal(err)
	}
	if h := tr.Passes[1].Header; !strings.HasPrefix(h, "recirc(0x") || !strings.Contains(h, "ct_state=new|trk") {
		t.Errorf("recirculation header %q", h)
	}
	if tr.Passes[0].DatapathActions == tr.Final().DatapathActions {
		t.Errorf("the passes were not split: %q", tr.Final().DatapathActions)
	}
}

func TestParseOFTraceErrors(t *testing.T) {
	for _, in := range []string{
		"",
		"br9: unknown bridge\n",
		"Flow: tcp,in_port=3\n\nbridge(\"br0\")\n-------------\n 0. ip, priority 100\n    goto_table:20\n",
	} {
		if _, err := ParseOFTrace(in); err == nil {
			t.Errorf("ParseOFTrace(%q) accepted it", in)
		}
	}
}

// FuzzParseOFTrace checks that no input makes the parser or Outcome panic.
func FuzzParseOFTrace(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "ofproto-trace", "*.txt"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err == nil {
			f.Add(string(b))
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		tr, err := ParseOFTrace(s)
		if err == nil {
			_ = tr.Outcome("br0", 1)
			_ = tr.Hops("br0")
		}
	})
}

// FuzzParseNFTRuleset checks that no input makes the nftables parser panic, and that whatever it accepts
// prints back to something it accepts again.
func FuzzParseNFTRuleset(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("testdata", "nft", "list-node1.txt")); err == nil {
		f.Add(string(b))
	}
	f.Add("table ip vxflow {\n\tchain c {\n\t\tip saddr 10.0.0.0/8 meta mark set meta mark | 0x1 goto d\n\t}\n}\n")
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := ParseNFTRuleset(s)
		if err != nil {
			return
		}
		if _, err := ParseNFTRuleset(rs.String()); err != nil {
			t.Errorf("a parsed ruleset does not parse again: %v\n%s", err, rs.String())
		}
	})
}
