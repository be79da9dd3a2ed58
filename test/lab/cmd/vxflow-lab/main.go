// Command vxflow-lab brings up, explores and removes vxflow's multi-node lab on this machine (network
// namespaces, Open vSwitch per node, a real kube-apiserver and etcd); `make demo` and `make e2e` use it.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/vxflow/vxflow/test/lab"
	"github.com/vxflow/vxflow/test/lab/controlplane"
	"github.com/vxflow/vxflow/test/lab/demo"
	"github.com/vxflow/vxflow/test/lab/serve"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			os.Exit(ee.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	var cfg lab.Config
	root := &cobra.Command{
		Use:   "vxflow-lab",
		Short: "The vxflow lab: a control plane, nodes and an external client as network namespaces on one machine",
		Long: `vxflow-lab manages the lab that make demo and make e2e use (docs/lab.md).

  underlay 192.168.100.0/24 on bridge sw0 in namespace <lab>-ul
    .10   <lab>-cp     kube-apiserver (:6443) + etcd, vxflow-controller
    .1N   <lab>-nodeN  ovsdb-server + ovs-vswitchd (netdev), br-ex holds ul0 and the node IP, vxflow-agent
    .100  <lab>-ext    the external client
  pods: <lab>-pod-<namespace>-<name>, attached by the CNI plugin through the node's agent

The lab's name (default vxl, or $LAB) prefixes every namespace; its state is in .lab/<name>/.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	defName := os.Getenv("LAB")
	if defName == "" {
		defName = lab.DefaultLabName
	}
	root.PersistentFlags().StringVar(&cfg.Name, "name", defName, "lab name ($LAB): prefixes every namespace")
	root.PersistentFlags().StringVar(&cfg.StateDir, "state-dir", os.Getenv("LAB_STATE_DIR"), "state directory (default <repo>/.lab/<name>)")
	root.PersistentFlags().StringVar(&cfg.BinDir, "bin-dir", "", "directory with vxflow-controller, vxflow-agent and vxflow-cni ($VXFLOW_BIN_DIR, default <repo>/bin)")
	open := func() (*lab.Lab, error) { return lab.Open(cfg) }

	up := &cobra.Command{
		Use:   "up",
		Short: "Bring up the lab (control plane, nodes with OVS, external client, controller and agents when built)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := lab.Up(cmd.Context(), cfg)
			return err
		},
	}
	up.Flags().IntVar(&cfg.Nodes, "nodes", 3, "number of nodes")
	up.Flags().BoolVar(&cfg.NoAgents, "no-agents", false, "do not start the agents")
	up.Flags().BoolVar(&cfg.NoController, "no-controller", false, "do not start vxflow-controller")

	down := &cobra.Command{
		Use:   "down",
		Short: "Remove everything the lab made (its processes by PID, its namespaces, its state directory)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			start := time.Now()
			if err := lab.Down(cmd.Context(), cfg); err != nil {
				return err
			}
			fmt.Printf("Lab %s is down in %s\n", cfg.Defaults().Name, time.Since(start).Round(10*time.Millisecond))
			return nil
		},
	}

	status := &cobra.Command{
		Use: "status", Short: "Show the lab's namespaces, processes and API objects", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			return l.WriteStatus(cmd.Context(), os.Stdout)
		},
	}

	execCmd := &cobra.Command{
		Use:   "exec TARGET -- COMMAND [ARGS...]",
		Short: "Run a command in a lab namespace: cp, ext, ul, nodeN (with its OVS_RUNDIR) or a pod",
		Example: `  vxflow-lab exec node1 -- ovs-ofctl -O OpenFlow13 dump-flows br0
  vxflow-lab exec node2 -- nft list ruleset
  vxflow-lab exec ext -- curl -s http://10.10.12.208:8080/
  vxflow-lab exec node1 -- bash`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			netns, env, err := l.ExecTarget(args[0])
			if err != nil {
				return err
			}
			return runInteractive(netns, append(env, l.ExecEnv()...), args[1:])
		},
	}

	kubectl := &cobra.Command{
		Use:                "kubectl [ARGS...]",
		Short:              "Run kubectl as the lab's admin (from the control plane's namespace, over TLS to 192.168.100.10:6443)",
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			return runInteractive(l.ControlPlaneNetNS(), l.ExecEnv(), append([]string{filepath.Join(l.K8sBinDir, "kubectl")}, args...))
		},
	}

	ctl := &cobra.Command{
		Use:   "ctl [ARGS...]",
		Short: "Run vxflowctl against the lab (admin kubeconfig, node access through the namespaces)",
		Example: `  vxflow-lab ctl status
  vxflow-lab ctl trace --from 192.168.100.100 --to 10.10.12.208:8080 --node node1
  vxflow-lab ctl trace --from default/client --to svc/almighty5:web -n almighty`,
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			return runInteractive(l.ControlPlaneNetNS(), l.ExecEnv(), append([]string{filepath.Join(l.BinDir, "vxflowctl")}, args...))
		},
	}

	nodeCmd := &cobra.Command{Use: "node", Short: "Add or remove nodes"}
	nodeCmd.AddCommand(&cobra.Command{
		Use: "add", Short: "Add the next node (namespace, OVS, Node object, agent)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			_, err = l.AddNode(cmd.Context())
			return err
		},
	}, &cobra.Command{
		Use: "remove NODE", Short: "Remove a node (its pods, agent, Node object, OVS and namespace)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			return l.RemoveNode(cmd.Context(), args[0])
		},
	})

	agentCmd := &cobra.Command{Use: "agent", Short: "Start, stop or kill -9 a node's vxflow-agent"}
	agentCmd.AddCommand(&cobra.Command{
		Use: "start NODE", Short: "(Re)start the agent from bin/vxflow-agent", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			return l.StartAgent(cmd.Context(), args[0])
		},
	}, &cobra.Command{
		Use: "stop NODE", Short: "Stop the agent (SIGTERM)", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			return l.StopAgent(args[0])
		},
	}, &cobra.Command{
		Use: "kill NODE", Short: "Kill the agent (SIGKILL, a crash)", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			return l.KillAgent(args[0], syscall.SIGKILL)
		},
	})

	controllerCmd := &cobra.Command{Use: "controller", Short: "Start or stop vxflow-controller"}
	controllerCmd.AddCommand(&cobra.Command{
		Use: "start", Short: "(Re)start vxflow-controller from bin/", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			return l.StartController(cmd.Context())
		},
	}, &cobra.Command{
		Use: "stop", Short: "Stop vxflow-controller", Args: cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			return l.StopController()
		},
	})

	var podNode, podNS string
	var podLabels []string
	podCmd := &cobra.Command{Use: "pod", Short: "Create or delete pods through the CNI plugin, as a kubelet would"}
	podAdd := &cobra.Command{
		Use: "add NAME --node NODE", Short: "Create a pod running the lab's HTTP server on 8080", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			labels := map[string]string{}
			for _, kv := range podLabels {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("label %q is not key=value", kv)
				}
				labels[k] = v
			}
			if _, err := l.CreatePod(cmd.Context(), lab.PodSpec{Namespace: podNS, Name: args[0], Node: podNode, Labels: labels,
				Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}}); err != nil {
				return err
			}
			return l.SyncEndpointSlices(cmd.Context())
		},
	}
	podAdd.Flags().StringVar(&podNode, "node", "node1", "node to run on")
	podAdd.Flags().StringVarP(&podNS, "namespace", "n", "default", "namespace")
	podAdd.Flags().StringSliceVarP(&podLabels, "label", "l", nil, "labels key=value")
	podDel := &cobra.Command{
		Use: "delete NAME", Short: "Delete a pod (CNI DEL, namespace, Pod object)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			if err := l.DeletePod(cmd.Context(), podNS, args[0]); err != nil {
				return err
			}
			return l.SyncEndpointSlices(cmd.Context())
		},
	}
	podDel.Flags().StringVarP(&podNS, "namespace", "n", "default", "namespace")
	podCmd.AddCommand(podAdd, podDel)

	endpoints := &cobra.Command{
		Use: "endpoints", Short: "Write the EndpointSlices of every Service (the lab has no kube-controller-manager)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			return l.SyncEndpointSlices(cmd.Context())
		},
	}

	vswitchd := &cobra.Command{
		Use: "restart-vswitchd NODE", Short: "Restart a node's ovs-vswitchd (all OpenFlow flows are lost)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			d, err := l.RestartVSwitchd(cmd.Context(), args[0])
			if err == nil {
				fmt.Printf("Restarted ovs-vswitchd on %s (down for %s)\n", args[0], d.Round(time.Millisecond))
			}
			return err
		},
	}

	demoCmd := &cobra.Command{
		Use: "demo", Short: "Reproduce the seed on a running lab and print each hop of its packet", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			return demo.Run(cmd.Context(), l, os.Stdout)
		},
	}

	var cpo controlplane.Options
	cpCmd := &cobra.Command{
		Use: "controlplane", Short: "Run the control plane (started by up inside the control plane's namespace)", Hidden: true, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cpo.StateDir = cfg.StateDir
			return controlplane.Run(cmd.Context(), cpo)
		},
	}
	cpCmd.Flags().StringVar(&cpo.RepoRoot, "repo-root", lab.RepoRoot(), "repository root (config/)")
	cpCmd.Flags().StringVar(&cpo.Assets, "assets", "", "directory with kube-apiserver and etcd")
	cpCmd.Flags().StringVar(&cpo.Address, "address", lab.ControlPlaneIP.String(), "address to listen on and advertise")
	cpCmd.Flags().IntVar(&cpo.Port, "port", lab.APIServerPort, "secure port")
	cpCmd.Flags().StringVar(&cpo.ServiceCIDR, "service-cidr", lab.ServiceCIDR, "service network")

	var serveName string
	var serveListen []string
	serveCmd := &cobra.Command{
		Use: "serve", Short: "Run the lab's HTTP server (name, /client, /bytes?n=N)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve.Run(cmd.Context(), serveName, serveListen)
		},
	}
	serveCmd.Flags().StringVar(&serveName, "name", "", "name to answer")
	serveCmd.Flags().StringSliceVar(&serveListen, "listen", []string{":8080"}, "addresses to listen on")

	root.AddCommand(up, down, status, execCmd, kubectl, ctl, nodeCmd, agentCmd, controllerCmd, podCmd, endpoints, vswitchd, demoCmd, cpCmd, serveCmd)
	return root
}

// runInteractive runs argv inside netns with the terminal attached.
func runInteractive(netns string, env []string, argv []string) error {
	cmd := exec.Command("ip", append([]string{"netns", "exec", netns}, argv...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	return cmd.Run()
}
