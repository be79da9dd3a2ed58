package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Streams are a command's input and outputs; tests run commands against buffers.
type Streams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
}

// Output formats of -o.
const (
	OutputText = "text"
	OutputJSON = "json"
)

// ExitError ends vxflowctl with a specific exit status, such as 1 from `render --diff` when the node changes
// (as diff(1) and kubectl diff do), with an optional message.
type ExitError struct {
	Code int
	Msg  string
}

// Error is part of the error interface.
func (e *ExitError) Error() string {
	if e.Msg == "" {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Msg
}

// ExitCode returns the exit status for an error returned by the root command: 0 for nil, the code of an
// ExitError, 2 for anything else (bad input, unreachable cluster…), so that 1 always means "found a
// difference or a problem".
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return 2
}

// globalOptions are the flags every command shares.
type globalOptions struct {
	output     string
	kubeconfig string
	context    string
}

// NewRootCommand returns the vxflowctl command tree.
func NewRootCommand(s Streams) *cobra.Command {
	if s.In == nil {
		s.In = os.Stdin
	}
	g := &globalOptions{}
	root := &cobra.Command{
		Use:   "vxflowctl",
		Short: "Render, inspect and trace the vxflow overlay",
		Long: `vxflowctl makes vxflow explain itself.

  render   the flows and nftables ruleset the agent would program on a node, offline, from manifests,
           with the agent's own renderers; --diff shows what a change of manifests does to that node
  status   the ClusterNetwork and every HostSubnet, and whether each node's agent programmed it, problems first
  trace    a packet's walk through the live cluster, hop by hop: OVS tables with the flows that matched,
           nftables Service NAT and masquerade, routes, VXLAN, and where and why it would be dropped

Exit status: 0 success; 1 render --diff found a change, or status found a problem with --exit-code,
or trace found the packet dropped; 2 an error.`,
		Example: `  # What node1 should run, from manifests
  vxflowctl render --node node1 -f manifests/

  # Which nodes are not programmed
  vxflowctl status

  # Where a packet from a pod to a Service goes, hop by hop
  vxflowctl trace --from demo/client --to svc/web:http -n demo

  # Shell completion (bash; also zsh and fish)
  source <(vxflowctl completion bash)`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(s.In)
	root.SetOut(s.Out)
	root.SetErr(s.ErrOut)
	pf := root.PersistentFlags()
	pf.StringVarP(&g.output, "output", "o", OutputText, "output format: text or json")
	pf.StringVar(&g.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster config)")
	pf.StringVar(&g.context, "context", "", "kubeconfig context to use (default: the current context)")
	_ = root.RegisterFlagCompletionFunc("output", fixedCompletion(OutputText, OutputJSON))
	_ = root.MarkPersistentFlagFilename("kubeconfig")

	root.AddCommand(newRenderCommand(s, g), newStatusCommand(s, g), newTraceCommand(s, g))
	return root
}

// checkOutput validates -o.
func (g *globalOptions) checkOutput() error {
	if g.output != OutputText && g.output != OutputJSON {
		return fmt.Errorf("failed to parse -o %q: use text or json", g.output)
	}
	return nil
}

// fixedCompletion completes a flag from a fixed list of values.
func fixedCompletion(values ...string) func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}
