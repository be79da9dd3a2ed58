package cli

import (
	"time"

	"github.com/spf13/cobra"
)

type statusOptions struct {
	staleAfter time.Duration
	exitCode   bool
}

func newStatusCommand(s Streams, g *globalOptions) *cobra.Command {
	o := &statusOptions{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the ClusterNetwork and each HostSubnet, and whether each node's agent programmed it",
		Long: `status reads the ClusterNetwork, the HostSubnets and the Nodes from the API server and shows:

  - the ClusterNetwork: its ranges, capacity (node subnets allocated of total), mode, VXLAN port, MTU and
    conditions (Ready, Degraded);
  - every problem, errors first: a missing or not-Ready ClusterNetwork, a HostSubnet the controller did not
    allocate, a node whose agent never reported, failed (Programmed=False, with the agent's reason and
    message) or left objects out, an agent behind the spec's generation or silent for longer than
    --stale-after, nodes with different pod MTUs, a Node without a HostSubnet;
  - a table of HostSubnets, those with problems first: host IP, subnet, Allocated, Programmed and since
    when, and the agent's report (flows, nftables rules and elements, MTU, datapath, last sync, state hash).

The kubeconfig is found as kubectl finds it: --kubeconfig, $KUBECONFIG, ~/.kube/config, or the in-cluster
service account. With --exit-code the exit status is 1 when there is an error-level problem.`,
		Example: `  # The overlay at a glance
  vxflowctl status

  # In a script: fail when a node is not programmed
  vxflowctl status --exit-code -o json > status.json

  # Compare a node's state hash with what render says it should run
  vxflowctl status -o json | jq -r '.hostSubnets[] | select(.name=="node1") | .agent.stateHash'
  vxflowctl render --node node1 -f cluster.yaml -o json | jq -r .stateHash`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
			st, err := LoadLiveState(cmd.Context(), c, LiveOptions{Nodes: true})
			if err != nil {
				return err
			}
			r := BuildStatus(st, time.Now(), o.staleAfter)
			if g.output == OutputJSON {
				if err := writeJSON(s.Out, r); err != nil {
					return err
				}
			} else {
				WriteStatus(s.Out, r)
			}
			if o.exitCode && !r.Healthy {
				return &ExitError{Code: 1}
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&o.staleAfter, "stale-after", DefaultStaleAfter, "warn when a node's last sync is older than this (0 disables)")
	cmd.Flags().BoolVar(&o.exitCode, "exit-code", false, "exit with status 1 when an error-level problem is found")
	return cmd
}
