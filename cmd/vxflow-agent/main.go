// Command vxflow-agent is vxflow's node agent: it programs its node's Open vSwitch bridge, nftables table and
// routes from the API, serves the CNI plugin, and reports to its HostSubnet.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/textlogger"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/vxflow/vxflow/internal/agent"
	"github.com/vxflow/vxflow/internal/apply/ovs"
	"github.com/vxflow/vxflow/internal/cli/nodeaccess"
	"github.com/vxflow/vxflow/internal/model"
)

// options are the agent's flags.
type options struct {
	nodeName, nodeIP, kubeconfig               string
	ovsDB, ovsRunDir, datapath                 string
	underlayBridge, underlayNIC                string
	cniSocket, cniConfDir, cniBinDir, stateDir string
	metricsAddr                                string
	minSyncInterval, syncPeriod, statusRefresh time.Duration
	verbosity                                  int
	debugEndpoints                             bool
	nftEndpoints                               string
}

func main() {
	if err := newRootCommand().Execute(); err != nil {
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	o := &options{}
	cmd := &cobra.Command{
		Use:   "vxflow-agent",
		Short: "Program this node's overlay: OVS br0 and its flows, Service NAT in nftables, tun0 and routes",
		Long: `vxflow-agent runs on every node (a DaemonSet with the host network). It watches the ClusterNetwork,
the HostSubnets, Services and EndpointSlices, renders the node's desired state (OpenFlow flows on br0, the
"ip vxflow" nftables table, tun0's address, routes and MTU) and applies only what differs, atomically. It repairs
drift every sync period, reprograms br0 after an ovs-vswitchd restart, serves the vxflow-cni plugin on a unix
socket, and reports Programmed on its HostSubnet. Metrics and /healthz are served on --metrics-bind-address.`,
		Example: `  # On a node whose OVS runs with the userspace datapath and the node IP on br-ex:
  vxflow-agent --node-name node1 --node-ip 192.168.100.11 --datapath netdev --underlay-bridge br-ex --underlay-nic ul0`,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name, also its HostSubnet's name (default $NODE_NAME)")
	f.StringVar(&o.nodeIP, "node-ip", "", "this node's underlay IPv4 address; its HostSubnet's hostIP must equal it")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty means in-cluster config or $KUBECONFIG")
	f.StringVar(&o.ovsDB, "ovs-db", ovs.DefaultDBEndpoint, "ovsdb-server endpoint")
	f.StringVar(&o.ovsRunDir, "ovs-rundir", "", "ovs-vswitchd's run directory (OVS_RUNDIR) where br0.mgmt lives; empty means OVS's default")
	f.StringVar(&o.datapath, "datapath", string(model.DatapathSystem), "br0's datapath type: system (OVS kernel module) or netdev (userspace)")
	f.StringVar(&o.underlayBridge, "underlay-bridge", "", "for the netdev datapath: the OVS bridge that holds the node IP (native tunneling), e.g. br-ex")
	f.StringVar(&o.underlayNIC, "underlay-nic", "", "with --underlay-bridge: the underlay interface to make a port of that bridge")
	f.StringVar(&o.cniSocket, "cni-socket", "/var/run/vxflow/cni.sock", "unix socket the vxflow-cni plugin talks to")
	f.StringVar(&o.cniConfDir, "cni-conf-dir", "/etc/cni/net.d", "where the CNI conflist is written once the node network is ready")
	f.StringVar(&o.cniBinDir, "cni-bin-dir", "/opt/cni/bin", "where the vxflow-cni binary is installed")
	f.StringVar(&o.stateDir, "state-dir", "/var/run/vxflow", "where pod IP allocations are kept across agent restarts; a tmpfs (as /var/run is on most nodes) keeps them exactly as long as the pods they describe, which do not survive a reboot either")
	f.StringVar(&o.metricsAddr, "metrics-bind-address", ":9443", "address of /metrics, /healthz and /debug endpoints; empty disables them")
	f.DurationVar(&o.minSyncInterval, "min-sync-interval", 20*time.Millisecond, "shortest time between the starts of two syncs (of the node, and of Service NAT, separately); changes inside it are applied together")
	f.DurationVar(&o.syncPeriod, "sync-period", 3*time.Second, "longest time between two syncs (of the node, and of Service NAT): how soon drift (a flow or rule changed by hand) is repaired")
	f.DurationVar(&o.statusRefresh, "status-refresh", time.Minute, "how often a steady node rewrites its HostSubnet status")
	f.BoolVar(&o.debugEndpoints, "debug-endpoints", true, "serve the read-only /debug/trace, /debug/flows, /debug/nftables and /debug/route endpoints that vxflowctl trace --access agent uses")
	f.StringVar(&o.nftEndpoints, "nft-endpoints", "map", "how Service endpoints are laid out in nftables where no per-endpoint chain is needed (userspace datapath, no session affinity): map (shared endpoint data maps: an endpoint replaced is a map element update, which the kernel commits without re-validating the table), inline (DNAT rules in each Service's chain) or chains (a chain per endpoint everywhere)")
	f.IntVarP(&o.verbosity, "v", "v", 0, "log verbosity")
	cmd.AddCommand(newInstallCNICommand())
	return cmd
}

func run(parent context.Context, o *options) error {
	logger := textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(o.verbosity)))
	klog.SetLogger(logger)
	ctx, stop := signal.NotifyContext(parent, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	nodeIP, err := netip.ParseAddr(o.nodeIP)
	if err != nil || !nodeIP.Is4() {
		return fmt.Errorf("failed to parse --node-ip %q: an IPv4 address is required", o.nodeIP)
	}
	dp := model.DatapathType(o.datapath)
	if dp != model.DatapathSystem && dp != model.DatapathNetdev {
		return fmt.Errorf("failed to parse --datapath %q: want system or netdev", o.datapath)
	}
	layout, err := agent.NFTEndpointsOptions(o.nftEndpoints)
	if err != nil {
		return err
	}
	if o.kubeconfig != "" {
		if err := os.Setenv("KUBECONFIG", o.kubeconfig); err != nil {
			return fmt.Errorf("failed to use --kubeconfig: %w", err)
		}
	}
	restCfg, err := config.GetConfig()
	if err != nil {
		return fmt.Errorf("failed to load the kubeconfig: %w", err)
	}
	scheme, err := agent.Scheme()
	if err != nil {
		return err
	}
	writer, err := client.New(restCfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("failed to create the API client: %w", err)
	}
	sw, err := ovs.New(ctx, ovs.Config{DBEndpoint: o.ovsDB, RunDir: o.ovsRunDir})
	if err != nil {
		return fmt.Errorf("failed to connect to Open vSwitch at %s: %w", o.ovsDB, err)
	}
	defer sw.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := agent.NewMetrics(reg)
	deps, err := newNodeDeps(ctx, o, metrics, reg, logger)
	if err != nil {
		return err
	}
	defer deps.close()

	var runner *agent.Runner
	cache, err := agent.StartWatches(ctx, restCfg, scheme, func() {
		if runner != nil {
			runner.Trigger()
		}
	})
	if err != nil {
		return err
	}
	a, err := agent.New(agent.Config{
		NodeName: o.nodeName, NodeIP: nodeIP, Datapath: dp, StatusRefresh: o.statusRefresh, InlineEndpoints: layout.InlineEndpoints, EndpointMap: layout.EndpointMap,
		Underlay:               ovs.UnderlaySpec{Bridge: o.underlayBridge, NIC: o.underlayNIC, DatapathType: string(dp)},
		ServiceMinSyncInterval: o.minSyncInterval, ServiceSyncPeriod: o.syncPeriod,
	}, cache, writer, sw, deps.links, deps.nft, metrics, logger)
	if err != nil {
		return err
	}
	// Service NAT runs in its own loop, fed by its own informers: a Service change never waits for (or
	// causes) an OVS sync.
	if err := agent.StartServiceWatches(ctx, restCfg, a.Services()); err != nil {
		return err
	}
	servicesDone := make(chan struct{})
	go func() {
		defer close(servicesDone)
		a.Services().Run(ctx)
	}()
	runner = agent.NewRunner(o.minSyncInterval, o.syncPeriod, time.Second, a.Sync)
	// CNI requests have their own loop: a pod's flows are one bundle diffed against the last sync, and the
	// requests that arrive while one is applied ride together on the next (no minimum interval).
	podRunner := agent.NewRunner(0, o.syncPeriod, time.Second, a.SyncPods)
	pods := agent.NewPodStore(podRunner.Trigger)
	a.SetPodStore(pods)
	podsDone := make(chan struct{})
	go func() {
		defer close(podsDone)
		podRunner.Run(ctx)
	}()
	if err := deps.startCNI(ctx, a, pods, sw, reg); err != nil {
		return err
	}
	seeded, _ := pods.Snapshot()
	logger.Info("Starting the node agent", "node", o.nodeName, "nodeIP", nodeIP, "datapath", dp, "podsOnBridge", len(seeded))
	confListDone := make(chan struct{})
	go func() {
		defer close(confListDone)
		deps.writeConfListWhenReady(ctx, a)
	}()
	if o.metricsAddr != "" {
		var extra []func(*http.ServeMux)
		if o.debugEndpoints {
			// Read-only: ofproto/trace, the flow dump, the nftables listing and route lookups of this node.
			extra = append(extra, func(mux *http.ServeMux) {
				nodeaccess.Register(mux, &nodeaccess.Exec{Default: nodeaccess.ExecNode{Env: map[string]string{"OVS_RUNDIR": o.ovsRunDir}}})
			})
		}
		srv := &http.Server{Addr: o.metricsAddr, Handler: agent.HTTPHandler(a, reg, extra...), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error(err, "Failed to serve metrics", "address", o.metricsAddr)
			}
		}()
		defer func() { _ = srv.Close() }()
	}
	runner.Run(ctx)
	<-podsDone
	<-servicesDone
	<-confListDone
	logger.Info("Stopped the node agent; the data plane stays as it is", "reason", ctx.Err())
	return nil
}
