// Package textdiff shows how two multi-line texts differ, for test failure messages of golden and listing
// comparisons.
package textdiff

import "strings"

// Lines lists the lines only in want (prefixed "- ") and only in got (prefixed "+ "), each in its text's
// order; it ignores order, which listings of sets and chains do not keep.
func Lines(want, got string) string {
	count := func(s string) map[string]int {
		m := map[string]int{}
		for _, l := range strings.Split(s, "\n") {
			m[l]++
		}
		return m
	}
	w, g := count(want), count(got)
	var b strings.Builder
	for _, l := range strings.Split(want, "\n") {
		if g[l] == 0 {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range strings.Split(got, "\n") {
		if w[l] == 0 {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}
