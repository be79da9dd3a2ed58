package cli

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/nftables"
)

// extraServices are Services of every shape the renderer writes, beside the seed's almighty5.
const extraServices = `
apiVersion: v1
kind: Service
metadata: {name: two, namespace: web}
spec:
  type: ClusterIP
  clusterIP: 172.30.0.20
  ports: [{name: http, protocol: TCP, port: 80}]
  sessionAffinity: ClientIP
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: two-a, namespace: web, labels: {kubernetes.io/service-name: two}}
addressType: IPv4
endpoints:
- {addresses: [10.128.2.10], nodeName: node2}
- {addresses: [10.128.4.10], nodeName: node3}
ports: [{name: http, protocol: TCP, port: 8000}]
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: web}
spec:
  type: NodePort
  clusterIP: 172.30.0.21
  ports: [{name: dns, protocol: UDP, port: 53, nodePort: 30053}]
---
apiVersion: v1
kind: Service
metadata: {name: guarded, namespace: web}
spec:
  type: LoadBalancer
  clusterIP: 172.30.0.22
  externalTrafficPolicy: Local
  loadBalancerSourceRanges: [192.168.50.0/24]
  externalIPs: [10.10.12.250]
  ports: [{name: https, protocol: TCP, port: 443, nodePort: 30443}]
status:
  loadBalancer:
    ingress: [{ip: 10.10.12.209}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: guarded-a, namespace: web, labels: {kubernetes.io/service-name: guarded}}
addressType: IPv4
endpoints:
- {addresses: [10.128.0.40], nodeName: node1, conditions: {ready: true}}
- {addresses: [10.128.2.40], nodeName: node2, conditions: {ready: false, serving: true, terminating: true}}
ports: [{name: https, protocol: TCP, port: 8443}]
`

// seedState loads the seed's manifests plus extra YAML.
func seedState(t *testing.T, extra string) *ClusterState {
	t.Helper()
	st, err := LoadManifests([]string{"testdata/seed"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if extra != "" {
		if errs := st.addFile("extra.yaml", []byte(extra)); len(errs) > 0 {
			t.Fatal(errs)
		}
		st.sort()
	}
	return st
}

func seedRuleset(t *testing.T, node string, dp model.DatapathType, extra string) (*NodeState, *nftables.Ruleset) {
	t.Helper()
	ns, err := RenderNode(seedState(t, extra), RenderOptions{Node: node, Datapath: dp})
	if err != nil {
		t.Fatal(err)
	}
	return ns, ns.Ruleset
}

func TestParseNFTRulesetRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		node  string
		dp    model.DatapathType
		extra string
	}{
		{"seed node1 netdev", "node1", model.DatapathNetdev, ""},
		{"seed node2 system", "node2", model.DatapathSystem, ""},
		{"every shape, node1", "node1", model.DatapathNetdev, extraServices},
		{"every shape, node3", "node3", model.DatapathSystem, extraServices},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, want := seedRuleset(t, tc.node, tc.dp, tc.extra)
			assertParsesBack(t, want)
		})
	}
}

// assertParsesBack checks that the text of a rendered ruleset parses back to a ruleset that prints the same
// and has the same content (in any order: a Renderer also groups the chains by Service and keeps the shared
// maps' elements per Service, which a listing has no notion of).
func assertParsesBack(t *testing.T, want *nftables.Ruleset) {
	t.Helper()
	text := want.String()
	got, err := ParseNFTRuleset(text)
	if err != nil {
		t.Fatalf("ParseNFTRuleset: %v\n%s", err, text)
	}
	if got.String() != text {
		t.Errorf("the parsed ruleset prints differently:\n%s", lineDiff(text, got.String()))
	}
	if a, b := cloneForCompare(got), cloneForCompare(want); a != b {
		t.Errorf("the parsed ruleset differs from the rendered one:\n%s", lineDiff(b, a))
	}
}

// TestParseNFTRulesetKernelListing parses what nft 1.0.6 listed after the rendered table of the extra
// Services was loaded into a network namespace (captured by TestLiveTwoNodes with -update).
func TestParseNFTRulesetKernelListing(t *testing.T) {
	b, err := os.ReadFile("testdata/nft/list-node1.txt")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseNFTRuleset(string(b))
	if err != nil {
		t.Fatal(err)
	}
	_, want := seedRuleset(t, "node1", model.DatapathNetdev, extraServices)
	normalise(want)
	normalise(got)
	if got.String() != want.String() {
		t.Errorf("the kernel's listing parses to another ruleset than the rendered one:\n%s", lineDiff(want.String(), got.String()))
	}
}

func TestParseNFTRuleErrors(t *testing.T) {
	for _, tc := range []struct{ rule, want string }{
		{"ip saddr 10.0.0.0/8 log prefix x", `unrecognised statement at "log prefix x"`},
		{"tcp dport http accept", `invalid port "http"`},
		{"meta mark & 0x1 == 0x2 return", "mark test"},
		{"jump", "jump without a chain"},
		{"dnat to nowhere", "dnat target"},
	} {
		if _, err := ParseNFTRule(tc.rule); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseNFTRule(%q) = %v, want an error containing %q", tc.rule, err, tc.want)
		}
	}
	if _, err := ParseNFTRuleset("table ip other {\n}\n"); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("a foreign table was accepted: %v", err)
	}
	r, err := ParseNFTRule(`ip daddr 172.30.0.0/16 counter packets 3 bytes 180 drop comment "drop traffic to unallocated ClusterIPs"`)
	if err != nil || r.Comment != "drop traffic to unallocated ClusterIPs" || len(r.Stmts) != 2 {
		t.Errorf("counter and comment: %+v, %v", r, err)
	}
}

func TestTraceNFT(t *testing.T) {
	node1IP, gw1 := netip.MustParseAddr("10.10.12.11"), netip.MustParseAddr("10.128.0.1")
	// The route of node1: the cluster and service networks via tun0 (the gateway's address), the rest out of
	// the underlay.
	route := func(dst netip.Addr) NFTRoute {
		if netip.MustParsePrefix("10.128.0.0/14").Contains(dst) || netip.MustParsePrefix("172.30.0.0/16").Contains(dst) {
			return NFTRoute{OutIface: "tun0", OutAddr: gw1}
		}
		return NFTRoute{OutIface: "br-ex", OutAddr: node1IP}
	}
	env := NFTEnv{LocalAddrs: []netip.Addr{node1IP, gw1}, Route: route}
	tcp := func(src, dst string) NFTPacket {
		s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
		return NFTPacket{Src: s.Addr(), Dst: d.Addr(), Proto: model.L4ProtoTCP, SrcPort: s.Port(), DstPort: d.Port()}
	}
	tests := []struct {
		name       string
		dp         model.DatapathType
		pkt        NFTPacket
		prefer     string
		local      bool
		verdict    string
		element    string
		dnat       string
		marked     bool
		masq       string // masquerade source, "" for none
		dropChain  string
		candidates int
	}{
		{name: "external client to the seed's LoadBalancer IP: DNAT, mark, masquerade to tun0", dp: model.DatapathNetdev,
			pkt: tcp("192.168.1.50:40000", "10.10.12.208:8080"), verdict: NFTAccept,
			element: "10.10.12.208 . tcp . 8080 : goto external-almighty/almighty5/tcp/web", dnat: "10.128.2.151:8080",
			marked: true, masq: "10.128.0.1", candidates: 1},
		{name: "same on the kernel datapath: the external path is masqueraded too", dp: model.DatapathSystem,
			pkt: tcp("192.168.1.50:40000", "10.10.12.208:8080"), verdict: NFTAccept,
			element: "10.10.12.208 . tcp . 8080 : goto external-almighty/almighty5/tcp/web", dnat: "10.128.2.151:8080",
			marked: true, masq: "10.128.0.1", candidates: 1},
		{name: "pod to ClusterIP, userspace datapath: masqueraded because OVS cannot un-NAT", dp: model.DatapathNetdev,
			pkt: tcp("10.128.0.5:40000", "172.30.91.5:8080"), verdict: NFTAccept,
			element: "172.30.91.5 . tcp . 8080 : goto service-almighty/almighty5/tcp/web", dnat: "10.128.2.151:8080",
			masq: "10.128.0.1", candidates: 1},
		{name: "pod to ClusterIP, kernel datapath: not masqueraded (OVS un-NATs the reply)", dp: model.DatapathSystem,
			pkt: tcp("10.128.0.5:40000", "172.30.91.5:8080"), verdict: NFTAccept,
			element: "172.30.91.5 . tcp . 8080 : goto service-almighty/almighty5/tcp/web", dnat: "10.128.2.151:8080", candidates: 1},
		{name: "the node itself (from tun0's address) to the ClusterIP: masqueraded on the userspace datapath", dp: model.DatapathNetdev,
			local: true, pkt: tcp("10.128.0.1:40000", "172.30.91.5:8080"), verdict: NFTAccept, dnat: "10.128.2.151:8080",
			element: "172.30.91.5 . tcp . 8080 : goto service-almighty/almighty5/tcp/web", masq: "10.128.0.1", candidates: 1},
		{name: "the node from its underlay address to the ClusterIP: marked, masqueraded", dp: model.DatapathSystem,
			local: true, pkt: tcp("10.10.12.11:40000", "172.30.91.5:8080"), verdict: NFTAccept, dnat: "10.128.2.151:8080",
			element: "172.30.91.5 . tcp . 8080 : goto service-almighty/almighty5/tcp/web", marked: true, masq: "10.128.0.1", candidates: 1},
		{name: "NodePort on the node IP", dp: model.DatapathNetdev, pkt: tcp("192.168.1.50:40000", "10.10.12.11:31808"),
			verdict: NFTAccept, element: "tcp . 31808 : goto external-almighty/almighty5/tcp/web", dnat: "10.128.2.151:8080",
			marked: true, masq: "10.128.0.1", candidates: 1},
		{name: "a ClusterIP's unknown port is rejected", dp: model.DatapathNetdev, pkt: tcp("10.128.0.5:40000", "172.30.91.5:9999"),
			verdict: NFTReject, dropChain: "cluster-ips-check"},
		{name: "an unallocated ClusterIP is dropped", dp: model.DatapathNetdev, pkt: tcp("10.128.0.5:40000", "172.30.7.7:80"),
			verdict: NFTDrop, dropChain: "cluster-ips-check"},
		{name: "a Service without endpoints rejects", dp: model.DatapathNetdev,
			pkt:     NFTPacket{Src: netip.MustParseAddr("10.128.0.5"), Dst: netip.MustParseAddr("172.30.0.21"), Proto: model.L4ProtoUDP, SrcPort: 5353, DstPort: 53},
			verdict: NFTReject, dropChain: "reject-chain"},
		{name: "two endpoints: the preferred one is chosen, both are candidates", dp: model.DatapathNetdev,
			pkt: tcp("10.128.0.5:40000", "172.30.0.20:80"), prefer: "10.128.4.10:8000", verdict: NFTAccept,
			element: "172.30.0.20 . tcp . 80 : goto service-web/two/tcp/http", dnat: "10.128.4.10:8000", masq: "10.128.0.1", candidates: 2},
		{name: "two endpoints, no preference: the first", dp: model.DatapathNetdev,
			pkt: tcp("10.128.0.5:40000", "172.30.0.20:80"), verdict: NFTAccept,
			element: "172.30.0.20 . tcp . 80 : goto service-web/two/tcp/http", dnat: "10.128.2.10:8000", masq: "10.128.0.1", candidates: 2},
		{name: "loadBalancerSourceRanges: a source outside is dropped", dp: model.DatapathNetdev,
			pkt: tcp("192.168.1.50:40000", "10.10.12.209:443"), verdict: NFTDrop, dropChain: "firewall-web/guarded/tcp/https"},
		{name: "loadBalancerSourceRanges: a source inside reaches the local endpoint, not masqueraded (Local)", dp: model.DatapathNetdev,
			pkt: tcp("192.168.50.7:40000", "10.10.12.209:443"), verdict: NFTAccept,
			element: "10.10.12.209 . tcp . 443 : goto external-web/guarded/tcp/https", dnat: "10.128.0.40:8443", candidates: 1},
		{name: "pod traffic leaving the cluster is masqueraded to the node IP", dp: model.DatapathNetdev,
			pkt: tcp("10.128.0.5:40000", "203.0.113.10:443"), verdict: NFTAccept, masq: "10.10.12.11"},
		{name: "hairpin: the endpoint reaching itself through its Service is marked", dp: model.DatapathSystem,
			pkt: tcp("10.128.2.151:40000", "172.30.91.5:8080"), verdict: NFTAccept,
			element: "172.30.91.5 . tcp . 8080 : goto service-almighty/almighty5/tcp/web", dnat: "10.128.2.151:8080",
			marked: true, masq: "10.128.0.1", candidates: 1},
		{name: "VXLAN to the node is accepted untouched", dp: model.DatapathNetdev,
			pkt:     NFTPacket{Src: netip.MustParseAddr("10.10.12.12"), Dst: node1IP, Proto: model.L4ProtoUDP, SrcPort: 51000, DstPort: 4789},
			verdict: NFTAccept},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, rs := seedRuleset(t, "node1", tc.dp, extraServices)
			// Trace the kernel-shaped listing, not the in-memory ruleset: the CLI does the same for live nodes.
			parsed, err := ParseNFTRuleset(rs.String())
			if err != nil {
				t.Fatal(err)
			}
			e := env
			e.LocallyGenerated = tc.local
			if tc.prefer != "" {
				e.PreferEndpoint = netip.MustParseAddrPort(tc.prefer)
			}
			res := TraceNFT(parsed, tc.pkt, e)
			if res.Verdict != tc.verdict {
				t.Fatalf("verdict %s, want %s; events:\n%s", res.Verdict, tc.verdict, eventsText(res))
			}
			if res.MapElement != tc.element {
				t.Errorf("element %q, want %q", res.MapElement, tc.element)
			}
			if got := addrPortText(res.DNAT); got != tc.dnat {
				t.Errorf("DNAT %q, want %q", got, tc.dnat)
			}
			if res.Marked != tc.marked {
				t.Errorf("marked %v, want %v; events:\n%s", res.Marked, tc.marked, eventsText(res))
			}
			gotMasq := ""
			if res.Masquerade {
				gotMasq = res.MasqAddr.String()
			}
			if gotMasq != tc.masq {
				t.Errorf("masquerade to %q, want %q; events:\n%s", gotMasq, tc.masq, eventsText(res))
			}
			if tc.dropChain != "" && (res.DropEvent == nil || res.DropEvent.Chain != tc.dropChain) {
				t.Errorf("dropped by %+v, want chain %s", res.DropEvent, tc.dropChain)
			}
			if len(res.Candidates) != tc.candidates {
				t.Errorf("%d candidates, want %d: %+v", len(res.Candidates), tc.candidates, res.Candidates)
			}
			chosen := 0
			var sum float64
			for _, c := range res.Candidates {
				sum += c.Probability
				if c.Chosen {
					chosen++
				}
			}
			if tc.candidates > 0 && (chosen != 1 || sum < 0.999 || sum > 1.001) {
				t.Errorf("candidates %+v: want exactly one chosen and probabilities summing to 1", res.Candidates)
			}
		})
	}
}

func addrPortText(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func eventsText(r *NFTResult) string {
	var b strings.Builder
	for _, e := range r.Events {
		b.WriteString("  " + e.Hook + " " + e.Chain + ": " + e.Rule + " => " + e.What + "\n")
	}
	return b.String()
}

// pairService is a Service with two endpoints and no affinity, which Options.EndpointMap sends through the
// endpoint map on the userspace datapath.
const pairService = `
---
apiVersion: v1
kind: Service
metadata: {name: pair, namespace: web}
spec:
  type: ClusterIP
  clusterIP: 172.30.0.30
  ports: [{name: http, protocol: TCP, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: pair-a, namespace: web, labels: {kubernetes.io/service-name: pair}}
addressType: IPv4
endpoints:
- {addresses: [10.128.2.30], nodeName: node2}
- {addresses: [10.128.4.30], nodeName: node3}
ports: [{name: http, protocol: TCP, port: 8000}]
`

// endpointMapRuleset renders the seed plus every shape with nftables.Options.EndpointMap.
func endpointMapRuleset(t *testing.T, node string, dp model.DatapathType) *nftables.Ruleset {
	t.Helper()
	ns, _ := seedRuleset(t, node, dp, extraServices+pairService)
	return nftables.NewRenderer(nftables.Options{EndpointMap: true}).Render(ns.Services)
}

func TestParseNFTRulesetEndpointMap(t *testing.T) {
	for _, tc := range []struct {
		node string
		dp   model.DatapathType
		maps bool
	}{{"node1", model.DatapathNetdev, true}, {"node3", model.DatapathSystem, false}} {
		t.Run(tc.node, func(t *testing.T) {
			want := endpointMapRuleset(t, tc.node, tc.dp)
			text := want.String()
			if strings.Contains(text, "map @service-endpoints") != tc.maps {
				t.Fatalf("endpoint map used: %v, want %v (the kernel datapath keeps endpoint chains)", !tc.maps, tc.maps)
			}
			assertParsesBack(t, want)
		})
	}
	for _, tc := range []struct{ rule, want string }{
		{"meta l4proto tcp dnat ip to numgen random mod x offset 4096 map @service-endpoints", "numgen modulus"},
		{"meta l4proto tcp dnat ip to numgen random mod 2 offset y map @service-endpoints", "numgen offset"},
		{"meta l4proto tcp dnat ip to numgen random mod 2 offset 4096 vmap @service-endpoints", "unrecognised statement"},
	} {
		if _, err := ParseNFTRule(tc.rule); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseNFTRule(%q) = %v, want an error containing %q", tc.rule, err, tc.want)
		}
	}
	r, err := ParseNFTRule("meta l4proto udp dnat ip to numgen random mod 3 offset 8192 map @service-endpoints")
	if err != nil || len(r.Stmts) != 2 || r.Stmts[1] != (nftables.DNATMap{Mod: 3, Offset: 8192, Map: "service-endpoints"}) {
		t.Errorf("DNATMap rule: %+v, %v", r, err)
	}
	if _, err := ParseNFTRuleset("table ip vxflow {\n\tmap service-endpoints {\n\t\ttypeof numgen random mod 1 : ip daddr . tcp dport\n\t\telements = { 4096 : 10.0.0.1 }\n\t}\n}\n"); err == nil || !strings.Contains(err.Error(), "want index : address . port") {
		t.Errorf("an element without a port was accepted: %v", err)
	}
}

func TestTraceNFTEndpointMap(t *testing.T) {
	node1IP, gw1 := netip.MustParseAddr("10.10.12.11"), netip.MustParseAddr("10.128.0.1")
	route := func(dst netip.Addr) NFTRoute {
		if netip.MustParsePrefix("10.128.0.0/14").Contains(dst) || netip.MustParsePrefix("172.30.0.0/16").Contains(dst) {
			return NFTRoute{OutIface: "tun0", OutAddr: gw1}
		}
		return NFTRoute{OutIface: "br-ex", OutAddr: node1IP}
	}
	tcp := func(src, dst string) NFTPacket {
		s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
		return NFTPacket{Src: s.Addr(), Dst: d.Addr(), Proto: model.L4ProtoTCP, SrcPort: s.Port(), DstPort: d.Port()}
	}
	rs := endpointMapRuleset(t, "node1", model.DatapathNetdev)
	parsed, err := ParseNFTRuleset(rs.String())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, prefer string
		pkt          NFTPacket
		verdict      string
		dnat         string
		candidates   int
		masq         string
	}{
		{name: "external client to the seed's LoadBalancer IP", pkt: tcp("192.168.1.50:40000", "10.10.12.208:8080"),
			verdict: NFTAccept, dnat: "10.128.2.151:8080", candidates: 1, masq: "10.128.0.1"},
		{name: "NodePort", pkt: tcp("192.168.1.50:40000", "10.10.12.11:31808"),
			verdict: NFTAccept, dnat: "10.128.2.151:8080", candidates: 1, masq: "10.128.0.1"},
		{name: "two endpoints, no preference: index 0", pkt: tcp("10.128.0.5:40000", "172.30.0.30:80"),
			verdict: NFTAccept, dnat: "10.128.2.30:8000", candidates: 2, masq: "10.128.0.1"},
		{name: "two endpoints, the preferred one", pkt: tcp("10.128.0.5:40000", "172.30.0.30:80"), prefer: "10.128.4.30:8000",
			verdict: NFTAccept, dnat: "10.128.4.30:8000", candidates: 2, masq: "10.128.0.1"},
		{name: "affinity keeps its endpoint chains", pkt: tcp("10.128.0.5:40000", "172.30.0.20:80"), prefer: "10.128.4.10:8000",
			verdict: NFTAccept, dnat: "10.128.4.10:8000", candidates: 2, masq: "10.128.0.1"},
		{name: "Local policy from outside: the local endpoint only", pkt: tcp("192.168.50.7:40000", "10.10.12.209:443"),
			verdict: NFTAccept, dnat: "10.128.0.40:8443", candidates: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := NFTEnv{LocalAddrs: []netip.Addr{node1IP, gw1}, Route: route}
			if tc.prefer != "" {
				env.PreferEndpoint = netip.MustParseAddrPort(tc.prefer)
			}
			res := TraceNFT(parsed, tc.pkt, env)
			if res.Verdict != tc.verdict || addrPortText(res.DNAT) != tc.dnat {
				t.Fatalf("verdict %s DNAT %q, want %s %q; events:\n%s", res.Verdict, addrPortText(res.DNAT), tc.verdict, tc.dnat, eventsText(res))
			}
			gotMasq := ""
			if res.Masquerade {
				gotMasq = res.MasqAddr.String()
			}
			if gotMasq != tc.masq {
				t.Errorf("masquerade to %q, want %q; events:\n%s", gotMasq, tc.masq, eventsText(res))
			}
			chosen, sum := 0, 0.0
			for _, c := range res.Candidates {
				sum += c.Probability
				if c.Chosen {
					chosen++
				}
			}
			if len(res.Candidates) != tc.candidates || chosen != 1 || sum < 0.999 || sum > 1.001 {
				t.Errorf("candidates %+v: want %d, one chosen, probabilities summing to 1", res.Candidates, tc.candidates)
			}
		})
	}
	// A missing element makes the kernel's lookup fail: the rule does not match and nothing is DNATed.
	for _, s := range parsed.Sets {
		if s.Type == nftables.SetTypeEndpointMap {
			s.Elements = nil
		}
	}
	if res := TraceNFT(parsed, tcp("10.128.0.5:40000", "172.30.0.30:80"), NFTEnv{LocalAddrs: []netip.Addr{node1IP, gw1}, Route: route}); res.DNAT.IsValid() || len(res.Candidates) != 0 {
		t.Errorf("an empty endpoint map still DNATed to %s (%+v)", res.DNAT, res.Candidates)
	}
}
