package cli

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vxflow/vxflow/internal/model"
)

// manifestSets collects -f arguments in command-line order: those given before --diff describe the node as
// it is, those after it the change.
type manifestSets struct {
	before, after []string
	diff          bool
}

// filenameValue is -f: it appends to the set that is current at its place on the command line.
type filenameValue struct{ m *manifestSets }

func (v filenameValue) String() string { return strings.Join(append(v.m.before, v.m.after...), ",") }
func (v filenameValue) Type() string   { return "FILE|DIR" }
func (v filenameValue) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p == "" {
			continue
		}
		if v.m.diff {
			v.m.after = append(v.m.after, p)
		} else {
			v.m.before = append(v.m.before, p)
		}
	}
	return nil
}

// diffValue is --diff: a boolean flag that makes the -f flags after it the changed manifests.
type diffValue struct{ m *manifestSets }

func (v diffValue) String() string { return fmt.Sprint(v.m.diff) }
func (v diffValue) Type() string   { return "bool" }
func (v diffValue) IsBoolFlag() bool {
	return true
}
func (v diffValue) Set(s string) error {
	switch s {
	case "true", "":
		v.m.diff = true
	case "false":
		v.m.diff = false
	default:
		return fmt.Errorf("%q is not a boolean", s)
	}
	return nil
}

type renderOptions struct {
	files       manifestSets
	against     []string
	node        string
	underlayMTU int
	datapath    string
	only        string
}

func newRenderCommand(s Streams, g *globalOptions) *cobra.Command {
	o := &renderOptions{}
	cmd := &cobra.Command{
		Use:   "render --node NAME -f FILE|DIR...",
		Short: "Print the flows and nftables ruleset the agent would program on a node, from manifests",
		Long: `render computes, offline, exactly what vxflow-agent would program on one node: the OpenFlow flows of
br0 and the nftables table "ip vxflow". It runs the agent's own model and renderers on manifests, so no
cluster is needed: review a GitOps change, or check a node against what it should run (the summary's state
hash is what the agent reports in its HostSubnet's status.agent.stateHash).

Manifests are YAML or JSON files or directories (read recursively: *.yaml, *.yml, *.json), "-" for
standard input; a file may hold several documents and List objects (kubectl get -o yaml output works).
render reads ClusterNetwork and HostSubnet (network.vxflow.io/v1alpha1), Service, EndpointSlice, Pod and
Node; other kinds are ignored. Unknown fields are errors, reported with file, line and document.

Node facts that are not in the API come from flags, else from the node's HostSubnet status (what its agent
reported), else from defaults:
  --underlay-mtu  default: status.agent.mtu + 50 when the ClusterNetwork leaves mtu unset, else 1500
  --datapath      default: status.agent.datapathType, else system (the agent's default)
  node IP         the HostSubnet's spec.hostIP
  local pods      Pods with spec.nodeName = NAME and a status.podIP (not hostNetwork, not finished); their
                  br0 ofports come from the annotation network.vxflow.io/ofport, else are assigned
                  3, 4, ... in namespace/name order, skipping annotated ports (on a live node Open vSwitch
                  assigns them, so pod flows can differ in their in_port and output port only)

--diff compares two sets of manifests for the node: -f before --diff names the current manifests, -f after
it the changed ones (or: -f CHANGED --against CURRENT). The output is a unified diff of each section, and
the exit status is 1 when the node changes, 0 when it does not.`,
		Example: `  # The seed's scenario: what node1 runs
  vxflowctl render --node node1 -f internal/cli/testdata/seed/

  # Only the flows, ready for ovs-ofctl -O OpenFlow13 add-flows
  vxflowctl render --node node1 -f manifests/ --only openflow > node1.flows

  # What a pull request does to node2 (exit status 1 if anything changes)
  vxflowctl render --node node2 -f main/ --diff -f pr/
  vxflowctl render --node node2 -f pr/ --against main/

  # A node's live objects, dumped with kubectl, rendered for the userspace datapath
  kubectl get clusternetworks,hostsubnets,services,endpointslices,pods -A -o yaml > cluster.yaml
  vxflowctl render --node node1 -f cluster.yaml --datapath netdev -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRender(cmd, s, g, o)
		},
	}
	f := cmd.Flags()
	f.VarP(filenameValue{&o.files}, "filename", "f", "manifest file or directory (repeatable; - is standard input)")
	f.Var(diffValue{&o.files}, "diff", "show what the -f manifests after this flag change on the node, against those before it")
	f.Lookup("diff").NoOptDefVal = "true"
	f.StringSliceVar(&o.against, "against", nil, "diff the -f manifests against these (the current state); implies --diff")
	f.StringVar(&o.node, "node", "", "node (HostSubnet) to render for (required)")
	f.IntVar(&o.underlayMTU, "underlay-mtu", 0, "MTU of the node's underlay interface (default: from the HostSubnet status, else 1500)")
	f.StringVar(&o.datapath, "datapath", "", "br0's datapath type, netdev or system (default: from the HostSubnet status, else system)")
	f.StringVar(&o.only, "only", SectionAll, "sections to print: all, openflow or nftables")
	_ = cmd.MarkFlagRequired("node")
	_ = cmd.MarkFlagFilename("filename", "yaml", "yml", "json")
	_ = cmd.MarkFlagFilename("against", "yaml", "yml", "json")
	_ = cmd.RegisterFlagCompletionFunc("datapath", fixedCompletion(string(model.DatapathNetdev), string(model.DatapathSystem)))
	_ = cmd.RegisterFlagCompletionFunc("only", fixedCompletion(SectionAll, SectionOpenFlow, SectionNFTables))
	_ = cmd.RegisterFlagCompletionFunc("node", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		// Cobra parses the flags twice before completing, so every -f was recorded twice.
		var paths []string
		for _, p := range append(o.files.before, o.files.after...) {
			if !slices.Contains(paths, p) {
				paths = append(paths, p)
			}
		}
		st, err := LoadManifests(paths, nil)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []cobra.Completion
		for _, hs := range st.HostSubnets {
			names = append(names, cobra.CompletionWithDesc(hs.Name, hs.Spec.HostIP+" "+hs.Spec.Subnet))
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

func runRender(cmd *cobra.Command, s Streams, g *globalOptions, o *renderOptions) error {
	if err := g.checkOutput(); err != nil {
		return err
	}
	switch o.only {
	case SectionAll, SectionOpenFlow, SectionNFTables:
	default:
		return fmt.Errorf("failed to parse --only %q: use all, openflow or nftables", o.only)
	}
	switch model.DatapathType(o.datapath) {
	case "", model.DatapathNetdev, model.DatapathSystem:
	default:
		return fmt.Errorf("failed to parse --datapath %q: use netdev or system", o.datapath)
	}
	if o.underlayMTU < 0 {
		return fmt.Errorf("failed to parse --underlay-mtu %d: must be positive", o.underlayMTU)
	}
	opts := RenderOptions{Node: o.node, UnderlayMTU: o.underlayMTU, Datapath: model.DatapathType(o.datapath)}

	current, changed := o.files.before, o.files.after
	diff := o.files.diff
	switch {
	case len(o.against) > 0 && diff:
		return errors.New("failed to parse flags: use either -f CURRENT --diff -f CHANGED or -f CHANGED --against CURRENT")
	case len(o.against) > 0:
		current, changed, diff = o.against, o.files.before, true
	case diff && len(changed) == 0:
		return errors.New("failed to parse flags: --diff needs the changed manifests after it: -f CURRENT --diff -f CHANGED")
	}
	if len(current) == 0 {
		return errors.New("failed to parse flags: no manifests: give -f FILE|DIR (- for standard input)")
	}

	before, err := loadAndRender(current, s, opts)
	if err != nil {
		return err
	}
	if !diff {
		if g.output == OutputJSON {
			return WriteNodeStateJSON(s.Out, before, o.only)
		}
		WriteNodeState(s.Out, before, o.only)
		return nil
	}
	after, err := loadAndRender(changed, s, opts)
	if err != nil {
		return err
	}
	d, err := DiffNodeStates(before, after, strings.Join(current, ","), strings.Join(changed, ","))
	if err != nil {
		return err
	}
	if g.output == OutputJSON {
		err = WriteNodeDiffJSON(s.Out, d, o.only)
	} else {
		WriteNodeDiff(s.Out, d, o.only)
	}
	if err == nil && d.Changed(o.only) {
		return &ExitError{Code: 1}
	}
	return err
}

// loadAndRender reads one set of manifests and renders the node, noting ignored kinds on standard error.
func loadAndRender(paths []string, s Streams, opts RenderOptions) (*NodeState, error) {
	st, err := LoadManifests(paths, s.In)
	if err != nil {
		return nil, err
	}
	if len(st.Ignored) > 0 && s.ErrOut != nil {
		kinds := make([]string, 0, len(st.Ignored))
		for k, n := range st.Ignored {
			kinds = append(kinds, fmt.Sprintf("%s (%d)", k, n))
		}
		slices.Sort(kinds)
		fmt.Fprintf(s.ErrOut, "vxflowctl: ignored objects of kinds render does not read: %s\n", strings.Join(kinds, ", "))
	}
	return RenderNode(st, opts)
}
