package cni

import (
	"net/netip"
	"testing"
)

// TestPodOfport is a unit test: the ofport a pod port asks for follows its address, from 3 up, and is 0
// where no number can be asked for.
func TestPodOfport(t *testing.T) {
	for _, tc := range []struct {
		subnet, ip string
		want       int
	}{
		{"10.128.0.0/23", "10.128.0.2", 3},
		{"10.128.0.0/23", "10.128.1.254", 511},
		{"10.128.2.0/23", "10.128.3.0", 257},
		{"10.128.0.0/23", "10.128.0.1", 0},    // the gateway
		{"10.128.0.0/23", "10.128.0.0", 0},    // the network address
		{"10.128.0.0/23", "10.128.2.5", 0},    // outside
		{"10.0.0.0/8", "10.0.254.254", 65279}, // the highest number
		{"10.0.0.0/8", "10.0.254.255", 0},     // past it
		{"10.128.0.0/23", "fd00::2", 0},       // not IPv4
	} {
		if got := PodOfport(netip.MustParsePrefix(tc.subnet), netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("PodOfport(%s, %s) = %d, want %d", tc.subnet, tc.ip, got, tc.want)
		}
	}
}
