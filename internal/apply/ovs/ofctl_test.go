package ovs

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vxflow/vxflow/internal/render/openflow"
)

// Unit tests of the go-openvswitch adaptation (no OVS needed).

func TestParseDump(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []openflow.Flow
	}{
		{
			name: "no-stats dump with defaults omitted",
			in: `OFPST_FLOW reply (OF1.3) (xid=0x2):
 cookie=0x2, arp actions=drop
 cookie=0x1, priority=100,ip,in_port=1,nw_src=10.128.0.0/14 actions=move:NXM_NX_TUN_ID[0..31]->NXM_NX_REG0[],goto_table:10
 table=5, actions=drop
 cookie=0x3, table=90, priority=100,ip,nw_dst=10.128.2.0/23 actions=move:NXM_NX_REG0[]->NXM_NX_TUN_ID[0..31],set_field:192.168.100.2->tun_dst,output:1
 table=253, priority=0 actions=note:01.0d.00.00.00.00
OFPST_FLOW reply (OF1.3) (xid=0x2):
 actions=drop
`,
			want: []openflow.Flow{
				{Cookie: 2, Priority: 32768, Match: "arp", Actions: "drop"},
				{Cookie: 1, Priority: 100, Match: "ip,in_port=1,nw_src=10.128.0.0/14", Actions: "move:NXM_NX_TUN_ID[0..31]->NXM_NX_REG0[],goto_table:10"},
				{Table: 5, Priority: 32768, Actions: "drop"},
				{Cookie: 3, Table: 90, Priority: 100, Match: "ip,nw_dst=10.128.2.0/23", Actions: "move:NXM_NX_REG0[]->NXM_NX_TUN_ID[0..31],set_field:192.168.100.2->tun_dst,output:1"},
				{Table: 253, Priority: 0, Actions: "note:01.0d.00.00.00.00"},
				{Priority: 32768, Actions: "drop"},
			},
		},
		{
			name: "statistics and timeouts are dropped",
			in:   ` cookie=0x1, duration=12.007s, table=30, n_packets=4, n_bytes=392, idle_age=3, priority=200,ip,nw_dst=10.128.0.0/23 actions=goto_table:70`,
			want: []openflow.Flow{{Cookie: 1, Table: 30, Priority: 200, Match: "ip,nw_dst=10.128.0.0/23", Actions: "goto_table:70"}},
		},
		{
			name: "commas inside parentheses stay in one field",
			in:   ` table=1, priority=5,packet_type=(0,0x800),nw_dst=1.2.3.4 actions=ct(commit,table=2)`,
			want: []openflow.Flow{{Table: 1, Priority: 5, Match: "packet_type=(0,0x800),nw_dst=1.2.3.4", Actions: "ct(commit,table=2)"}},
		},
		{name: "empty", in: "OFPST_FLOW reply (OF1.3) (xid=0x2):\n", want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseDump([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parseDump =\n%#v\nwant\n%#v", got, tc.want)
			}
		})
	}
}

func TestParseDumpErrors(t *testing.T) {
	for _, in := range []string{
		" cookie=0x1, table=0, priority=1,ip",     // no actions
		" cookie=zz, priority=1 actions=drop",     // bad cookie
		" table=300, priority=1 actions=drop",     // table out of range
		" table=1, priority=99999 actions=drop",   // priority out of range
		" table=1, priority=-1,ip actions=output", // negative priority
	} {
		if _, err := parseDump([]byte(in)); err == nil {
			t.Errorf("parseDump(%q) succeeded, want an error", in)
		}
	}
}

func TestValidateFlow(t *testing.T) {
	for _, tc := range []struct {
		flow    openflow.Flow
		wantErr string
	}{
		{openflow.Flow{Table: 1, Priority: 2, Match: "ip", Actions: "drop"}, ""},
		{openflow.Flow{Table: 1, Priority: 2, Actions: "drop"}, ""},
		{openflow.Flow{Table: 1, Priority: 2, Match: "ip"}, "no actions"},
		{openflow.Flow{Match: "ip\nadd table=0 actions=drop", Actions: "drop"}, "line break"},
		{openflow.Flow{Match: "ip,priority=5", Actions: "drop"}, `"priority" in its match`},
		{openflow.Flow{Match: "table=3,ip", Actions: "drop"}, `"table" in its match`},
		{openflow.Flow{Match: "ip, nw_dst=1.2.3.4", Actions: "drop"}, "white space"},
	} {
		err := validateFlow(tc.flow)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("validateFlow(%+v) = %v, want %q", tc.flow, err, tc.wantErr)
		}
	}
}

func TestDiffFlows(t *testing.T) {
	f := func(table uint8, prio uint16, cookie uint64, match, actions string) openflow.Flow {
		return openflow.Flow{Table: table, Priority: prio, Cookie: cookie, Match: match, Actions: actions}
	}
	actual := []openflow.Flow{
		f(0, 100, 1, "ip", "goto_table:10"),
		f(10, 100, 1, "ip,nw_dst=10.0.0.0/24", "output:1"), // actions change
		f(10, 100, 1, "ip,nw_dst=10.0.1.0/24", "output:1"), // cookie change
		f(10, 100, 1, "ip,nw_dst=10.0.2.0/24", "output:1"), // not desired
		f(10, 0, 1, "ip", "drop"),                          // not desired
	}
	desired := []openflow.Flow{
		f(0, 100, 1, "ip", "goto_table:10"),
		f(10, 100, 1, "ip,nw_dst=10.0.0.0/24", "output:2"),
		f(10, 100, 2, "ip,nw_dst=10.0.1.0/24", "output:1"),
		f(10, 50, 1, "ip,nw_dst=10.0.2.0/24", "output:1"), // same match, other priority: a new key
	}
	d, err := diffFlows(desired, actual)
	if err != nil {
		t.Fatal(err)
	}
	want := flowDiff{
		adds:    []openflow.Flow{desired[3]},
		mods:    []openflow.Flow{desired[1], desired[2]},
		deletes: []openflow.Flow{actual[3], actual[4]},
	}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("diffFlows =\n%+v\nwant\n%+v", d, want)
	}
	if d, err := diffFlows(actual, actual); err != nil || len(d.adds)+len(d.mods)+len(d.deletes) != 0 {
		t.Errorf("diff of a set with itself = %+v, %v", d, err)
	}
	if _, err := diffFlows(append(desired, desired[0]), actual); err == nil {
		t.Errorf("duplicate desired key accepted")
	}
}

// recordingExecer records every run and answers from a stateful in-memory switch when it has one.
type recordingExecer struct {
	inner execer // nil: answer dumps from flows and apply bundles to them
	mu    sync.Mutex
	runs  []recordedRun
	flows []openflow.Flow
	fail  error
}

type recordedRun struct {
	args  []string
	stdin string
}

func (r *recordingExecer) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	r.mu.Lock()
	r.runs = append(r.runs, recordedRun{args: append([]string{name}, args...), stdin: string(stdin)})
	r.mu.Unlock()
	if r.inner != nil {
		return r.inner.Run(ctx, stdin, name, args...)
	}
	if r.fail != nil {
		return nil, r.fail
	}
	var b strings.Builder
	for _, f := range r.flows {
		b.WriteString(" " + f.String() + "\n") // Flow.String parses like a dump line
	}
	return []byte(b.String()), nil
}

// bundles returns the stdin of every bundle run, line by line.
func (r *recordingExecer) bundles() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]string
	for _, run := range r.runs {
		if strings.Contains(strings.Join(run.args, " "), "--bundle") {
			out = append(out, strings.Split(strings.TrimSpace(run.stdin), "\n"))
		}
	}
	return out
}

func (r *recordingExecer) reset() {
	r.mu.Lock()
	r.runs = nil
	r.mu.Unlock()
}

func TestBundleText(t *testing.T) {
	rec := &recordingExecer{flows: []openflow.Flow{
		{Table: 30, Priority: 0, Cookie: 1, Match: "ip", Actions: "output:2"},
		{Table: 30, Priority: 100, Cookie: 1, Match: "ip,nw_dst=10.0.0.0/8", Actions: "goto_table:90"},
	}}
	a := newFlowApplier("br0", newOfctl(rec, "/run/ovs", "br0", 5*time.Second))
	res, err := a.Sync(context.Background(), []openflow.Flow{
		{Table: 30, Priority: 100, Cookie: 1, Match: "ip,nw_dst=10.0.0.0/8", Actions: "goto_table:91"},
		{Table: 253, Priority: 0, Cookie: 0, Actions: "note:01.0d.00.00.00.00"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Added != 1 || res.Modified != 1 || res.Deleted != 1 || res.Total != 2 {
		t.Errorf("SyncResult = %+v", res)
	}
	runs := rec.runs
	if len(runs) != 2 {
		t.Fatalf("ran %d commands, want a dump and a bundle: %+v", len(runs), runs)
	}
	wantDump := "ovs-ofctl -O OpenFlow13 --timeout=5 --no-stats --no-names dump-flows unix:/run/ovs/br0.mgmt"
	if got := strings.Join(runs[0].args, " "); got != wantDump {
		t.Errorf("dump command = %q, want %q", got, wantDump)
	}
	wantBundle := "ovs-ofctl --no-names --timeout=5 --bundle add-flow --protocols=OpenFlow13 unix:/run/ovs/br0.mgmt -"
	if got := strings.Join(runs[1].args, " "); got != wantBundle {
		t.Errorf("bundle command = %q, want %q", got, wantBundle)
	}
	// Deletes come first and are strict with the priority; adds and modifications are plain adds.
	got := rec.bundles()[0]
	want := []string{
		"delete_strict priority=0,ip,table=30",
		"add priority=0,table=253,idle_timeout=0,actions=note:01.0d.00.00.00.00",
		"add priority=100,ip,nw_dst=10.0.0.0/8,table=30,idle_timeout=0,cookie=0x0000000000000001,actions=goto_table:91",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("bundle =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestSyncErrors(t *testing.T) {
	boom := &CommandError{Command: "ovs-ofctl dump-flows", Stderr: "br0 is not a bridge", Err: errors.New("exit status 1")}
	a := newFlowApplier("br0", newOfctl(&recordingExecer{fail: boom}, "", "br0", time.Second))
	_, err := a.Sync(context.Background(), []openflow.Flow{{Actions: "drop"}})
	var ce *CommandError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "br0 is not a bridge") {
		t.Errorf("Sync error = %v, want the CommandError with stderr", err)
	}
	if _, err := a.Sync(context.Background(), []openflow.Flow{{Match: "ip"}}); err == nil || !strings.Contains(err.Error(), "no actions") {
		t.Errorf("Sync of an invalid flow = %v", err)
	}
}

func TestStrictDeletes(t *testing.T) {
	in := "delete priority=1,ip,table=0\nadd priority=1,table=0,idle_timeout=0,actions=note:64.65.6c.65.74.65\ndelete priority=0,table=3\n"
	want := "delete_strict priority=1,ip,table=0\nadd priority=1,table=0,idle_timeout=0,actions=note:64.65.6c.65.74.65\ndelete_strict priority=0,table=3\n"
	if got := string(strictDeletes([]byte(in))); got != want {
		t.Errorf("strictDeletes =\n%s\nwant\n%s", got, want)
	}
}
