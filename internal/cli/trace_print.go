package cli

import (
	"fmt"
	"io"
	"strings"
)

// WriteTrace prints a trace as numbered steps, then the result, the reply path and any warnings; with raw,
// each step is followed by the tool output it was read from.
func WriteTrace(w io.Writer, r *TraceResult, raw bool) {
	fmt.Fprintf(w, "Trace %s\n", r.Packet)
	fmt.Fprintf(w, "  from: %s\n", r.Source)
	fmt.Fprintf(w, "  to:   %s\n\n", r.Destination)
	for _, s := range r.Steps {
		fmt.Fprintf(w, "%2d. %s\n", s.N, s.Title)
		if len(s.Tables) > 0 {
			writeTables(w, s.Tables)
		}
		for _, l := range s.Lines {
			fmt.Fprintf(w, "      %s\n", l)
		}
		if raw && s.Raw != "" {
			fmt.Fprintf(w, "      ---- raw output ----\n")
			for _, l := range strings.Split(strings.TrimRight(s.Raw, "\n"), "\n") {
				fmt.Fprintf(w, "      | %s\n", l)
			}
		}
	}
	fmt.Fprintln(w)
	switch {
	case r.Verdict == VerdictIncomplete:
		fmt.Fprintf(w, "Result: INCOMPLETE: %s\n", r.Incomplete)
	case r.Drop != nil:
		fmt.Fprintf(w, "Result: DROPPED on node %s at %s\n", r.Drop.Node, r.Drop.Where)
		if r.Drop.Rule != "" {
			fmt.Fprintf(w, "  rule: %s\n", r.Drop.Rule)
		}
		fmt.Fprintf(w, "  why:  %s\n", r.Drop.Reason)
	default:
		fmt.Fprintf(w, "Result: %s: %s\n", r.Verdict, r.DeliveredTo)
	}
	if len(r.Reply) > 0 {
		fmt.Fprintln(w, "Reply:")
		for _, l := range r.Reply {
			fmt.Fprintf(w, "  - %s\n", l)
		}
	}
	if len(r.Warnings) > 0 {
		fmt.Fprintln(w, "Warnings:")
		for _, l := range r.Warnings {
			fmt.Fprintf(w, "  - %s\n", l)
		}
	}
}

// writeTables prints the OVS tables a packet crossed: table, name, priority, match, owner, then actions.
func writeTables(w io.Writer, tables []TraceTable) {
	for _, t := range tables {
		name := t.TableName
		if name == "" {
			name = t.Bridge
		}
		if t.NoMatch {
			fmt.Fprintf(w, "      table %-3d %-16s no flow matched -> drop\n", t.Table, name)
			continue
		}
		match := t.Match
		if match == "" {
			match = "(any)"
		}
		owner := ""
		if t.Owner != "" {
			owner = "  [" + t.Owner + "]"
		}
		fmt.Fprintf(w, "      table %-3d %-16s priority %-4d %s%s\n", t.Table, name, t.Priority, match, owner)
		if len(t.Actions) > 0 {
			fmt.Fprintf(w, "      %26s-> %s\n", "", strings.Join(t.Actions, ", "))
		}
	}
}
