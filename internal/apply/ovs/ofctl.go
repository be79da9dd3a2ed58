package ovs

// This file is the one place where the package adapts go-openvswitch to the flows vxflow renders.
//
// go-openvswitch builds typed flows and runs `ovs-ofctl --bundle add-flow BR -` for a FlowTransaction, but
// (peers.md §4.2) it cannot express goto_table, note, or a strict delete with a priority, and its DumpFlows
// parser rejects a whole dump when one flow has an action it does not know. So:
//
//   - Match and actions travel verbatim: rawMatch and rawActions implement ovs.Match and ovs.Action with the
//     ovs-ofctl text of openflow.Flow, and go-openvswitch only frames them (priority, table, cookie, "add").
//   - Deletes must be strict (table + priority + exact match), or deleting one flow would also remove every
//     more specific flow it covers. FlowTransaction.Delete can only write "delete" lines, which ovs-ofctl
//     parses as non-strict and which refuse a priority; the PipeFunc hook, through which go-openvswitch runs
//     ovs-ofctl, turns each "delete " line into "delete_strict ". Nothing else in the bundle is rewritten.
//   - The same hook runs ovs-ofctl through the package's execer (context, timeout, environment, stderr kept
//     for the error), which is also the seam unit tests replace.
//   - Dumps do not use go-openvswitch: dumpFlows runs `ovs-ofctl --no-stats --no-names dump-flows` and
//     parseDump reads it (skipping "OFPST_FLOW reply" headers, dropping statistics fields).
//
// A modified flow is sent as "add" with the same table, priority and match: OpenFlow replaces the existing
// flow (actions and cookie), like ovs-ofctl replace-flows does, at the cost of resetting its counters.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	goovs "github.com/digitalocean/go-openvswitch/ovs"

	"github.com/vxflow/vxflow/internal/render/openflow"
)

// defaultPriority is the priority ovs-ofctl assumes (and omits from dumps) when a flow gives none.
const defaultPriority = 32768

// rawMatch is an ovs.Match that is an ovs-ofctl match written out verbatim.
type rawMatch string

// MarshalText is part of ovs.Match.
func (m rawMatch) MarshalText() ([]byte, error) { return []byte(m), nil }

// GoString is part of ovs.Match.
func (m rawMatch) GoString() string { return fmt.Sprintf("rawMatch(%q)", string(m)) }

// rawActions is an ovs.Action that is a whole ovs-ofctl action list written out verbatim.
type rawActions string

// MarshalText is part of ovs.Action.
func (a rawActions) MarshalText() ([]byte, error) { return []byte(a), nil }

// GoString is part of ovs.Action.
func (a rawActions) GoString() string { return fmt.Sprintf("rawActions(%q)", string(a)) }

// addFlow returns the go-openvswitch flow that adds (or replaces) f.
func addFlow(f openflow.Flow) *goovs.Flow {
	g := &goovs.Flow{
		Priority: int(f.Priority),
		Table:    int(f.Table),
		Cookie:   f.Cookie,
		Actions:  []goovs.Action{rawActions(f.Actions)},
	}
	if f.Match != "" {
		g.Matches = []goovs.Match{rawMatch(f.Match)}
	}
	return g
}

// strictDeleteFlow returns the go-openvswitch match that, once its line is made strict by strictDeletes,
// deletes exactly the flow with f's table, priority and match.
func strictDeleteFlow(f openflow.Flow) *goovs.MatchFlow {
	m := "priority=" + strconv.Itoa(int(f.Priority))
	if f.Match != "" {
		m += "," + f.Match
	}
	return &goovs.MatchFlow{Table: int(f.Table), Matches: []goovs.Match{rawMatch(m)}}
}

// strictDeletes turns the "delete " lines of a bundle written by go-openvswitch into "delete_strict " lines.
func strictDeletes(bundle []byte) []byte {
	lines := bytes.SplitAfter(bundle, []byte("\n"))
	var out bytes.Buffer
	out.Grow(len(bundle) + 16*len(lines))
	for _, l := range lines {
		if rest, ok := bytes.CutPrefix(l, []byte("delete ")); ok {
			out.WriteString("delete_strict ")
			out.Write(rest)
			continue
		}
		out.Write(l)
	}
	return out.Bytes()
}

// validateFlow rejects flows that would not survive the trip through ovs-ofctl's text format unchanged.
func validateFlow(f openflow.Flow) error {
	if f.Actions == "" {
		return fmt.Errorf("flow %q has no actions (write \"drop\")", f.Key())
	}
	for _, s := range []string{f.Match, f.Actions} {
		if strings.ContainsAny(s, "\n\r") {
			return fmt.Errorf("flow %q contains a line break", f.Key())
		}
	}
	for _, tok := range splitTopLevel(f.Match) {
		k, _, _ := strings.Cut(tok, "=")
		if _, ok := flowFields[k]; ok {
			return fmt.Errorf("flow %q has %q in its match; use the Flow field instead", f.Key(), k)
		}
		if strings.ContainsAny(tok, " \t") {
			return fmt.Errorf("flow %q has white space in its match", f.Key())
		}
	}
	return nil
}

// flowFields are the comma-separated fields of a dump line that are not part of the match: the flow's
// identity outside the match, its statistics and its flags.
var flowFields = map[string]struct{}{
	"cookie": {}, "table": {}, "priority": {}, "actions": {},
	"duration": {}, "n_packets": {}, "n_bytes": {}, "idle_age": {}, "hard_age": {},
	"idle_timeout": {}, "hard_timeout": {}, "importance": {},
	"send_flow_rem": {}, "reset_counts": {}, "no_packet_counts": {}, "no_byte_counts": {}, "check_overlap": {},
}

// parseDump reads `ovs-ofctl -O OpenFlow13 --no-stats --no-names dump-flows` output (statistics fields,
// when present, are dropped). Every flow line must parse; reply headers and blank lines are skipped.
func parseDump(out []byte) ([]openflow.Flow, error) {
	var flows []openflow.Flow
	for i, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "OFPST_FLOW reply") || strings.HasPrefix(line, "NXST_FLOW reply") {
			continue
		}
		f, err := parseDumpLine(line)
		if err != nil {
			return nil, fmt.Errorf("failed to parse dump line %d %q: %w", i+1, line, err)
		}
		flows = append(flows, f)
	}
	return flows, nil
}

// parseDumpLine parses one flow of a dump, for example
// "cookie=0x3, table=90, priority=100,ip,nw_dst=10.128.2.0/23 actions=set_field:192.168.100.2->tun_dst,output:1".
// ovs-ofctl omits cookie 0, table 0 and the default priority 32768.
func parseDumpLine(line string) (openflow.Flow, error) {
	var head, actions string
	if rest, ok := strings.CutPrefix(line, "actions="); ok {
		actions = rest
	} else {
		i := strings.Index(line, " actions=")
		if i < 0 {
			return openflow.Flow{}, fmt.Errorf("no actions")
		}
		head, actions = line[:i], line[i+len(" actions="):]
	}
	f := openflow.Flow{Priority: defaultPriority, Actions: actions}
	var match []string
	for _, tok := range splitTopLevel(head) {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			continue
		}
		k, v, _ := strings.Cut(tok, "=")
		if _, ok := flowFields[k]; !ok {
			match = append(match, tok)
			continue
		}
		switch k {
		case "cookie":
			c, err := strconv.ParseUint(v, 0, 64)
			if err != nil {
				return openflow.Flow{}, fmt.Errorf("bad cookie %q: %w", v, err)
			}
			f.Cookie = c
		case "table":
			t, err := strconv.ParseUint(v, 10, 8)
			if err != nil {
				return openflow.Flow{}, fmt.Errorf("bad table %q: %w", v, err)
			}
			f.Table = uint8(t)
		case "priority":
			p, err := strconv.ParseUint(v, 10, 16)
			if err != nil {
				return openflow.Flow{}, fmt.Errorf("bad priority %q: %w", v, err)
			}
			f.Priority = uint16(p)
		}
	}
	f.Match = strings.Join(match, ",")
	return f, nil
}

// splitTopLevel splits s at the commas that are not inside parentheses (OVS prints some values, such as
// packet_type=(0,0x800), with a comma inside).
func splitTopLevel(s string) []string {
	if s == "" {
		return nil
	}
	var parts []string
	depth, start := 0, 0
	for i, r := range s {
		switch r {
		case '(':
			depth++
		case ')':
			if depth > 0 {
				depth--
			}
		case ',':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

// execer runs a program to completion; it is the package's process seam, replaced in unit tests.
type execer interface {
	// Run runs name with args, feeding stdin when it is not nil, and returns stdout; a failure returns a
	// *CommandError that carries stderr.
	Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)
}

// CommandError is a failed ovs-ofctl run, with its standard error, which holds the OpenFlow error
// (for example OFPBAC_BAD_OUT_GROUP followed by OFPBFC_MSG_FAILED for a rejected bundle).
type CommandError struct {
	// Command is the command line that failed.
	Command string
	// Stderr is the command's trimmed standard error.
	Stderr string
	// Err is the exec error (usually an *exec.ExitError).
	Err error
}

// Error is part of error.
func (e *CommandError) Error() string {
	msg := e.Stderr
	if len(msg) > 2000 {
		msg = msg[:2000] + "…"
	}
	return fmt.Sprintf("%s: %v: %s", e.Command, e.Err, msg)
}

// Unwrap returns the exec error.
func (e *CommandError) Unwrap() error { return e.Err }

// osExecer runs programs with the process's environment.
type osExecer struct{}

// Run is part of execer.
func (e osExecer) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		// Keep only the command and subcommand: the arguments can be a whole bundle's worth of flags.
		return stdout.Bytes(), &CommandError{
			Command: name + " " + strings.Join(args, " "),
			Stderr:  strings.TrimSpace(stderr.String()),
			Err:     err,
		}
	}
	// ovs-ofctl writes warnings (long poll intervals, coverage counters) to stderr on success: not an error.
	return stdout.Bytes(), nil
}

// ofctl talks OpenFlow 1.3 to one bridge through ovs-ofctl.
type ofctl struct {
	exec    execer
	target  string // the bridge name, or "unix:<rundir>/<bridge>.mgmt"
	timeout time.Duration
}

// newOfctl returns an ofctl for bridge; with runDir set it connects to runDir/<bridge>.mgmt directly, so it
// needs no OVS_RUNDIR.
func newOfctl(e execer, runDir, bridge string, timeout time.Duration) *ofctl {
	target := bridge
	if runDir != "" {
		target = "unix:" + filepath.Join(runDir, bridge+".mgmt")
	}
	return &ofctl{exec: e, target: target, timeout: timeout}
}

func (o *ofctl) timeoutSeconds() int {
	s := int(o.timeout / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}

// dumpFlows returns every flow of the bridge.
func (o *ofctl) dumpFlows(ctx context.Context) ([]openflow.Flow, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	out, err := o.exec.Run(ctx, nil, "ovs-ofctl", "-O", goovs.ProtocolOpenFlow13,
		"--timeout="+strconv.Itoa(o.timeoutSeconds()), "--no-stats", "--no-names", "dump-flows", o.target)
	if err != nil {
		return nil, err
	}
	return parseDump(out)
}

// flowCount returns the number of flows of the bridge (one small OpenFlow request, whatever the count).
func (o *ofctl) flowCount(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	out, err := o.exec.Run(ctx, nil, "ovs-ofctl", "-O", goovs.ProtocolOpenFlow13,
		"--timeout="+strconv.Itoa(o.timeoutSeconds()), "dump-aggregate", o.target)
	if err != nil {
		return 0, err
	}
	_, v, ok := strings.Cut(string(out), "flow_count=")
	if !ok {
		return 0, fmt.Errorf("no flow_count in %q", strings.TrimSpace(string(out)))
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.Fields(v)[0]))
	if err != nil {
		return 0, fmt.Errorf("bad flow_count in %q: %w", strings.TrimSpace(string(out)), err)
	}
	return n, nil
}

// bundle sends the deletes (strict) and then the adds as one atomic OpenFlow bundle: the switch applies all
// of them or, when one fails, none.
func (o *ofctl) bundle(ctx context.Context, deletes, adds []openflow.Flow) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	var runErr error
	pipe := func(stdin io.Reader, cmd string, args ...string) ([]byte, error) {
		in, err := io.ReadAll(stdin)
		if err != nil {
			runErr = fmt.Errorf("failed to read the bundle: %w", err)
			return nil, runErr
		}
		// --no-names: otherwise ovs-ofctl first fetches every table's features and the port list to
		// resolve names our flows never use (two more connections, ~1 MB, 8 ms of a one-flow bundle).
		out, err := o.exec.Run(ctx, strictDeletes(in), cmd, append([]string{"--no-names"}, args...)...)
		runErr = err
		return out, err
	}
	c := goovs.New(
		goovs.Protocols([]string{goovs.ProtocolOpenFlow13}),
		goovs.Timeout(o.timeoutSeconds()),
		goovs.Pipe(pipe),
	)
	err := c.OpenFlow.AddFlowBundle(o.target, func(tx *goovs.FlowTransaction) error {
		for _, f := range deletes {
			tx.Delete(strictDeleteFlow(f))
		}
		for _, f := range adds {
			tx.Add(addFlow(f))
		}
		return tx.Commit()
	})
	if runErr != nil {
		return runErr // ours carries stderr unquoted and unwraps to the exec error
	}
	return err
}
