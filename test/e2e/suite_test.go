//go:build e2e

package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vxflow/vxflow/test/lab"
)

var (
	labName = flag.String("lab", envOr("LAB", "e2e"), "name of the lab the suite brings up (and removes)")
	keep    = flag.Bool("keep", os.Getenv("E2E_KEEP") != "", "leave the lab running afterwards ($E2E_KEEP)")
)

// tally counts the checks for the closing "N passed, N failed" line.
var tally struct {
	sync.Mutex
	passed, failed []string
	notes          []string
}

func TestMain(m *testing.M) {
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Println("e2e: needs root (network namespaces, Open vSwitch, nf_tables)")
		fmt.Println("0 passed, 1 failed")
		os.Exit(1)
	}
	code := m.Run()
	tally.Lock()
	defer tally.Unlock()
	if code != 0 && len(tally.failed) == 0 {
		tally.failed = append(tally.failed, "the suite itself (setup failed, see above)")
	}
	if len(tally.notes) > 0 {
		fmt.Println("\nMeasured:")
		for _, n := range tally.notes {
			fmt.Println("  " + n)
		}
	}
	if len(tally.failed) > 0 {
		fmt.Println("\nFailed checks:")
		for _, f := range tally.failed {
			fmt.Println("  " + f)
		}
	}
	fmt.Printf("\n%d passed, %d failed\n", len(tally.passed), len(tally.failed))
	os.Exit(code)
}

// check runs one named check as a subtest and counts it.
func check(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	start := time.Now()
	ok := t.Run(name, f)
	d := time.Since(start).Round(10 * time.Millisecond)
	tally.Lock()
	defer tally.Unlock()
	if ok {
		tally.passed = append(tally.passed, name)
		fmt.Printf("PASS  %-70s %s\n", name, d)
	} else {
		tally.failed = append(tally.failed, name)
		fmt.Printf("FAIL  %-70s %s\n", name, d)
	}
}

// note records a measurement for the summary.
func note(format string, a ...any) {
	tally.Lock()
	defer tally.Unlock()
	tally.notes = append(tally.notes, fmt.Sprintf(format, a...))
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// upLab brings up a fresh lab (removing what a crashed earlier run of the same name left) and removes it
// when the suite ends, unless -keep.
func upLab(t *testing.T) *lab.Lab {
	t.Helper()
	ctx := context.Background()
	cfg := lab.Config{Name: *labName, Out: prefixWriter{}}
	if err := lab.Down(ctx, cfg); err != nil {
		t.Fatalf("failed to remove a leftover lab %s: %v", *labName, err)
	}
	start := time.Now()
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		t.Fatalf("failed to bring up the lab: %v", err)
	}
	note("lab up (3 nodes, control plane, controller, agents): %s", time.Since(start).Round(10*time.Millisecond))
	t.Cleanup(func() {
		if *keep {
			fmt.Printf("The lab %s stays up (-keep): bin/vxflow-lab --name %s status | down\n", *labName, *labName)
			return
		}
		if t.Failed() {
			for _, key := range []string{"controller", "agent-node1", "agent-node2", "agent-node3"} {
				fmt.Printf("--- tail of %s ---\n%s\n", key, indent(l.Tail(key, 25)))
			}
		}
		start := time.Now()
		if err := l.Down(context.Background()); err != nil {
			t.Errorf("failed to remove the lab: %v", err)
		}
		note("lab down: %s", time.Since(start).Round(10*time.Millisecond))
	})
	return l
}

// prefixWriter indents the lab's progress lines under the check lines.
type prefixWriter struct{}

func (prefixWriter) Write(p []byte) (int, error) {
	fmt.Print(indent(string(p)))
	return len(p), nil
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "      " + strings.ReplaceAll(s, "\n", "\n      ") + "\n"
}
