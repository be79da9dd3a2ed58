package cli

import (
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vxflow/vxflow/internal/cli/nodeaccess"
)

// Node access modes of --access.
const (
	AccessExec  = "exec"
	AccessAgent = "agent"
)

// DefaultAgentPort is the port of the agent's metrics and debug endpoint (vxflow-agent
// --metrics-bind-address).
const DefaultAgentPort = 9443

// AccessFileEnv names the node access file when --access-file is not given.
const AccessFileEnv = "VXFLOWCTL_ACCESS_FILE"

type traceOptions struct {
	req        TraceRequest
	access     string
	accessFile string
	netns      map[string]string
	rundirs    map[string]string
	prefixes   map[string]string
	agentPort  int
	agentHTTPS bool
	raw        bool
}

func newTraceCommand(s Streams, g *globalOptions) *cobra.Command {
	o := &traceOptions{}
	cmd := &cobra.Command{
		Use:   "trace --from POD|IP --to SERVICE|POD|IP:PORT",
		Short: "Trace a packet through the live cluster, hop by hop",
		Long: `trace walks the first packet of a connection through the live cluster and prints every hop:

  - the sender: a pod with its br0 port (or a node, or a client outside the cluster reaching --node);
  - each node's br0: the OVS tables crossed and the flow that matched in each, with the object that owns
    it (from the flow cookie), by running ovs-appctl ofproto/trace on that node's bridge;
  - each node's host network: the nftables rules of table ip vxflow that act on it, the Service map
    element and chains that DNAT it, the endpoint candidates, the masquerade decision; the route
    (ip route get) back into br0 through tun0 or out of the node;
  - VXLAN: tun_dst, VNI, UDP port, outer header and MTU;
  - delivery to the destination pod's port, or where and why the packet is dropped (the table or rule,
    and what it means), and a summary of the reply's way back (where conntrack undoes the NAT).

Objects (Pods, Services, EndpointSlices, HostSubnets) come from the API server (kubeconfig as kubectl).
Node state is read where it lives, through --access:
  exec   run ovs-appctl, ovs-ofctl, nft and ip here, with a per-node prefix and environment from
         --access-file (or $VXFLOWCTL_ACCESS_FILE), --netns and --ovs-rundir; a node without settings
         runs the commands here as they are (vxflowctl on the node itself)
  agent  ask each node's vxflow-agent: POST /debug/trace, GET /debug/flows, GET /debug/nftables and
         POST /debug/route on http://HOSTIP:--agent-port (docs/cli.md has the exact requests)

The nftables walk follows the node's live table (nft list table ip vxflow) and falls back to the table
rendered from the API objects, saying so. Load balancing is not random in a trace: --endpoint picks the
endpoint to follow, else the first candidate; every candidate is listed with its probability.
The exit status is 1 when the packet is dropped, or when a node on the way could not be read (the walk
is then incomplete and says where it stopped).`,
		Example: `  # Pod to pod across nodes (the lab: node state in network namespaces)
  vxflowctl trace --access-file /tmp/vxflow-lab/access.yaml --from demo/client --to demo/web-0:8080

  # Pod to a Service's ClusterIP, by name and port name; follow a given endpoint
  vxflowctl trace --from demo/client --to svc/almighty5:web -n almighty --endpoint 10.128.2.151:8080

  # The seed's walk: an external client to the LoadBalancer IP, entering at node1
  vxflowctl trace --from 192.168.100.200 --to 10.10.12.208:8080 --node node1

  # A spoofed packet, dropped by the pod anti-spoofing table
  vxflowctl trace --from demo/client --src-ip 10.128.9.9 --to demo/web-0:8080

  # Against a real cluster, through each node's agent, as JSON
  vxflowctl trace --access agent --from default/client --to default/web:80 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runTrace(cmd, s, g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.req.From, "from", "", "sender: pod/NAME, NAMESPACE/NAME, node/NAME or an IP (required)")
	f.StringVar(&o.req.To, "to", "", "destination: svc/NAME[:PORT], pod/NAME:PORT, NAMESPACE/NAME[:PORT] or IP:PORT (required)")
	f.StringVarP(&o.req.Namespace, "namespace", "n", "default", "namespace of names given without one")
	f.StringVar(&o.req.Proto, "proto", "tcp", "transport protocol: tcp or udp")
	f.Uint16Var(&o.req.SrcPort, "src-port", DefaultTraceSrcPort, "source port")
	f.StringVar(&o.req.SrcIP, "src-ip", "", "send from this address instead of the sender's own (a spoofed packet)")
	f.StringVar(&o.req.Node, "node", "", "for a sender outside the cluster: the node its packet reaches")
	f.StringVar(&o.req.Endpoint, "endpoint", "", "for a Service: the endpoint IP:PORT to follow when it is a candidate")
	f.StringVar(&o.req.Bridge, "bridge", "br0", "the integration bridge")
	f.StringVar(&o.access, "access", AccessExec, "how to reach node state: exec or agent")
	f.StringVar(&o.accessFile, "access-file", "", "exec: YAML/JSON file with each node's command prefix and environment (default $"+AccessFileEnv+")")
	f.StringToStringVar(&o.netns, "netns", nil, "exec: NODE=NETNS runs that node's commands in a network namespace (repeatable)")
	f.StringToStringVar(&o.rundirs, "ovs-rundir", nil, "exec: NODE=DIR sets that node's OVS_RUNDIR (repeatable)")
	f.StringToStringVar(&o.prefixes, "exec-prefix", nil, `exec: NODE="CMD ARGS" runs that node's commands behind this prefix, e.g. "kubectl exec -n vxflow-system POD --" (repeatable)`)
	f.IntVar(&o.agentPort, "agent-port", DefaultAgentPort, "agent: the port of each agent's debug endpoint")
	f.BoolVar(&o.agentHTTPS, "agent-https", false, "agent: use https")
	f.BoolVar(&o.raw, "raw", false, "text output: print the raw ofproto/trace and ip route output under each step")
	_ = cmd.MarkFlagRequired("from")
	_ = cmd.MarkFlagRequired("to")
	_ = cmd.MarkFlagFilename("access-file", "yaml", "yml", "json")
	_ = cmd.RegisterFlagCompletionFunc("proto", fixedCompletion("tcp", "udp"))
	_ = cmd.RegisterFlagCompletionFunc("access", fixedCompletion(AccessExec, AccessAgent))
	return cmd
}

func runTrace(cmd *cobra.Command, s Streams, g *globalOptions, o *traceOptions) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	cfg, err := RESTConfig(g.kubeconfig, g.context)
	if err != nil {
		return err
	}
	c, err := NewClient(cfg)
	if err != nil {
		return err
	}
	st, err := LoadLiveState(cmd.Context(), c, LiveOptions{Workloads: true})
	if err != nil {
		return err
	}
	access, err := o.nodeAccess(st)
	if err != nil {
		return err
	}
	res, err := Trace(cmd.Context(), o.req, st, access)
	if err != nil {
		return err
	}
	if g.output == OutputJSON {
		err = writeJSON(s.Out, res)
	} else {
		WriteTrace(s.Out, res, o.raw)
	}
	if err == nil && (res.Verdict == VerdictDropped || res.Verdict == VerdictIncomplete) {
		return &ExitError{Code: 1}
	}
	return err
}

// nodeAccess builds the node access the flags describe.
func (o *traceOptions) nodeAccess(st *ClusterState) (nodeaccess.Interface, error) {
	switch o.access {
	case AccessAgent:
		scheme := "http"
		if o.agentHTTPS {
			scheme = "https"
		}
		h := &nodeaccess.HTTP{Addresses: map[string]string{}, Client: &http.Client{Timeout: nodeaccess.DefaultTimeout}}
		for _, hs := range st.HostSubnets {
			h.Addresses[hs.Name] = fmt.Sprintf("%s://%s:%d", scheme, hs.Spec.HostIP, o.agentPort)
		}
		return h, nil
	case AccessExec:
		return o.execAccess()
	}
	return nil, fmt.Errorf("failed to parse --access %q: use exec or agent", o.access)
}

// execAccess merges the access file and the per-node flags (flags win).
func (o *traceOptions) execAccess() (*nodeaccess.Exec, error) {
	e := &nodeaccess.Exec{Nodes: map[string]nodeaccess.ExecNode{}}
	path := o.accessFile
	if path == "" {
		path = os.Getenv(AccessFileEnv)
	}
	if path != "" {
		f, err := nodeaccess.LoadExecFile(path)
		if err != nil {
			return nil, err
		}
		e = f
		if e.Nodes == nil {
			e.Nodes = map[string]nodeaccess.ExecNode{}
		}
	}
	edit := func(node string, fn func(*nodeaccess.ExecNode)) {
		n := e.Nodes[node]
		fn(&n)
		e.Nodes[node] = n
	}
	for node, ns := range o.netns {
		edit(node, func(n *nodeaccess.ExecNode) { n.Prefix = []string{"ip", "netns", "exec", ns} })
	}
	for node, p := range o.prefixes {
		edit(node, func(n *nodeaccess.ExecNode) { n.Prefix = strings.Fields(p) })
	}
	for node, dir := range o.rundirs {
		edit(node, func(n *nodeaccess.ExecNode) {
			if n.Env == nil {
				n.Env = map[string]string{}
			}
			n.Env["OVS_RUNDIR"] = dir
		})
	}
	return e, nil
}
