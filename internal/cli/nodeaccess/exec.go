package nodeaccess

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// DefaultTimeout bounds each command.
const DefaultTimeout = 15 * time.Second

// ExecNode says how to run a command on one node: a prefix put in front of it (for example
// ["ip", "netns", "exec", "lab-node1"], or ["kubectl", "exec", "-n", "vxflow-system", "POD", "--"]) and
// environment variables for it (for example OVS_RUNDIR, where ovs-appctl and ovs-ofctl find the node's
// daemons and bridges). The zero value runs commands here, as they are.
type ExecNode struct {
	Prefix []string          `json:"prefix,omitempty"`
	Env    map[string]string `json:"env,omitempty"`
}

// Exec is the Interface that runs the tools by exec: on this machine for a node that is here (the lab's
// network namespaces, or vxflowctl run on the node itself), or through a prefix that reaches the node.
type Exec struct {
	// Nodes holds the per-node settings.
	Nodes map[string]ExecNode `json:"nodes"`
	// Default is used for nodes not in Nodes.
	Default ExecNode `json:"default,omitempty"`
	// Timeout bounds each command; DefaultTimeout when zero.
	Timeout time.Duration `json:"-"`
}

var _ Interface = &Exec{}

// LoadExecFile reads an access file (YAML or JSON) describing how to reach each node:
//
//	nodes:
//	  node1:
//	    prefix: [ip, netns, exec, vxlab-node1]
//	    env: {OVS_RUNDIR: /tmp/vxlab/node1/ovs/run}
//	default: {}            # nodes not listed: run here as is
func LoadExecFile(path string) (*Exec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read the node access file: %w", err)
	}
	js, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("failed to parse the node access file %s: %w", path, err)
	}
	e := &Exec{}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(e); err != nil {
		return nil, fmt.Errorf("failed to parse the node access file %s: %w", path, err)
	}
	return e, nil
}

// node returns the settings of a node.
func (e *Exec) node(name string) ExecNode {
	if n, ok := e.Nodes[name]; ok {
		return n
	}
	return e.Default
}

// run runs argv on node and returns its standard output; the error carries standard error.
func (e *Exec) run(ctx context.Context, node string, argv ...string) (string, error) {
	n := e.node(node)
	timeout := e.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	full := slices.Concat(n.Prefix, argv)
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.Env = os.Environ()
	keys := make([]string, 0, len(n.Env))
	for k := range n.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+n.Env[k])
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("failed to run %s on node %s: %w: %s", strings.Join(argv, " "), node, err,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// OFProtoTrace is part of Interface.
func (e *Exec) OFProtoTrace(ctx context.Context, node string, req TraceRequest) (string, error) {
	if err := req.Validate(); err != nil {
		return "", fmt.Errorf("failed to trace on node %s: %w", node, err)
	}
	return e.run(ctx, node, append([]string{"ovs-appctl", "ofproto/trace"}, req.args()...)...)
}

// DumpFlows is part of Interface.
func (e *Exec) DumpFlows(ctx context.Context, node, bridge string) (string, error) {
	if err := ValidateBridge(bridge); err != nil {
		return "", fmt.Errorf("failed to dump flows on node %s: %w", node, err)
	}
	return e.run(ctx, node, "ovs-ofctl", "-O", "OpenFlow13", "--no-stats", "--no-names", "dump-flows", bridge)
}

// NFTTable is part of Interface.
func (e *Exec) NFTTable(ctx context.Context, node string) (string, error) {
	return e.run(ctx, node, "nft", "list", "table", "ip", NFTTableName)
}

// RouteGet is part of Interface.
func (e *Exec) RouteGet(ctx context.Context, node string, q RouteQuery) (string, error) {
	if err := q.Validate(); err != nil {
		return "", fmt.Errorf("failed to look up a route on node %s: %w", node, err)
	}
	return e.run(ctx, node, append([]string{"ip", "-o", "route", "get"}, q.args()...)...)
}
