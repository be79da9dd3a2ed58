package nft

import (
	"strings"
	"testing"
)

// TestNormalizeListing checks the comparison helper itself: reordering blocks and elements and dynamic set
// entries do not matter, a different rule or element does.
func TestNormalizeListing(t *testing.T) {
	base := "table ip vxflow {\n\tset a {\n\t\ttype ipv4_addr\n\t\telements = { 10.0.0.1, 10.0.0.2,\n\t\t\t     10.0.0.3 }\n\t}\n\n" +
		"\tset aff {\n\t\ttype ipv4_addr\n\t\tsize 65535\n\t\tflags dynamic,timeout\n\t\ttimeout 3h\n\t}\n\n" +
		"\tchain c {\n\t\tip saddr 10.0.0.1 accept\n\t\tdrop\n\t}\n}\n"
	tests := []struct {
		name  string
		other string
		same  bool
	}{
		{"identical", base, true},
		{"elements reordered", strings.Replace(base, "10.0.0.1, 10.0.0.2,\n\t\t\t     10.0.0.3", "10.0.0.3, 10.0.0.1,\n\t\t\t     10.0.0.2", 1), true},
		{"blocks reordered", "table ip vxflow {\n\tchain c {\n\t\tip saddr 10.0.0.1 accept\n\t\tdrop\n\t}\n\n" +
			strings.TrimPrefix(strings.Split(base, "\tchain c")[0], "table ip vxflow {\n") + "}\n", true},
		{"dynamic entries", strings.Replace(base, "timeout 3h\n", "timeout 3h\n\t\telements = { 10.9.9.9 expires 2h59m }\n", 1), true},
		{"element missing", strings.Replace(base, ", 10.0.0.2", "", 1), false},
		{"rule changed", strings.Replace(base, "drop", "accept", 1), false},
		{"rule order changed", strings.Replace(base, "\t\tip saddr 10.0.0.1 accept\n\t\tdrop", "\t\tdrop\n\t\tip saddr 10.0.0.1 accept", 1), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := normalizeListing(base) == normalizeListing(tc.other); got != tc.same {
				t.Errorf("same = %v, want %v:\n%s\n%s", got, tc.same, normalizeListing(base), normalizeListing(tc.other))
			}
		})
	}
}
