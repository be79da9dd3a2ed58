package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/vxflow/vxflow/internal/agent"
	"github.com/vxflow/vxflow/internal/apply/link"
	"github.com/vxflow/vxflow/internal/apply/nft"
	"github.com/vxflow/vxflow/internal/apply/ovs"
	"github.com/vxflow/vxflow/internal/cni"
)

// nodeDeps are the real appliers and the CNI server the agent drives on this node.
type nodeDeps struct {
	links  agent.Links
	nft    agent.RulesetApplier
	cni    *cni.Server
	o      *options
	log    logr.Logger
	closer []func()
}

func newNodeDeps(_ context.Context, o *options, metrics *agent.Metrics, reg prometheus.Registerer, log logr.Logger) (*nodeDeps, error) {
	m, err := link.New()
	if err != nil {
		return nil, fmt.Errorf("failed to open netlink: %w", err)
	}
	d := &nodeDeps{links: agent.Links{Manager: m}, o: o, log: log, closer: []func(){m.Close}}
	nftables, err := newRulesetApplier(metrics, reg, log)
	if err != nil {
		d.close()
		return nil, err
	}
	d.nft = nftables
	d.closer = append(d.closer, func() { _ = nftables.Close() })
	return d, nil
}

func (d *nodeDeps) close() {
	for i := len(d.closer) - 1; i >= 0; i-- {
		d.closer[i]()
	}
}

// startCNI reconciles the CNI attachments with br0, seeds the pod store with the pods that still run (so
// that the first sync keeps their flows), and serves the plugin; the conflist is written once the node has
// been programmed.
func (d *nodeDeps) startCNI(ctx context.Context, a *agent.Agent, pods *agent.PodStore, sw ovs.Interface, reg prometheus.Registerer) error {
	srv, err := cni.NewServer(cni.ServerConfig{
		SocketPath: d.o.cniSocket, StateDir: filepath.Join(d.o.stateDir, "cni"), Logger: d.log, Registerer: reg,
	}, agent.CNINetwork{Agent: a, Pods: pods}, sw)
	if err != nil {
		return err
	}
	rep, err := srv.Reconcile(ctx)
	if err != nil {
		// Leaks are collected again at the next start; the pods that were found are still served.
		d.log.Error(err, "Failed to collect every leaked CNI attachment")
	}
	d.log.Info("Reconciled CNI attachments", "kept", rep.Kept, "collected", len(rep.Collected), "portsDeleted", rep.PortsDeleted)
	pods.Seed(srv.Pods())
	if err := srv.Listen(); err != nil {
		return err
	}
	d.cni = srv
	go func() {
		if err := srv.Serve(ctx); err != nil {
			d.log.Error(err, "Stopped serving CNI requests")
		}
	}()
	return nil
}

// writeConfListWhenReady writes the CNI conflist after the first successful sync, so the container runtime
// starts pods only on a node whose network works, and removes it when the agent is stopped, so the runtime
// reports the network not ready instead of failing pods against a socket nobody serves (OpenShift SDN's
// preStop did the same). A crash leaves it: the restarted agent serves the socket again within a second.
func (d *nodeDeps) writeConfListWhenReady(ctx context.Context, a *agent.Agent) {
	for {
		if a.Healthy() == nil {
			path, err := cni.WriteConfList(d.o.cniConfDir, cni.ConfListOptions{SocketPath: d.o.cniSocket})
			if err == nil {
				d.log.Info("Wrote the CNI conflist: the node network is ready for pods", "path", path)
				break
			}
			d.log.Error(err, "Failed to write the CNI conflist; retrying", "dir", d.o.cniConfDir)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	<-ctx.Done()
	if err := cni.RemoveConfList(d.o.cniConfDir); err != nil {
		d.log.Error(err, "Failed to remove the CNI conflist", "dir", d.o.cniConfDir)
		return
	}
	d.log.Info("Removed the CNI conflist", "reason", "the agent is stopping")
}

func newInstallCNICommand() *cobra.Command {
	var binDir, src string
	cmd := &cobra.Command{
		Use:   "install-cni",
		Short: "Copy the vxflow-cni plugin into the CNI bin dir (the DaemonSet's init step)",
		Long: `install-cni copies the vxflow-cni binary that ships next to vxflow-agent into the container runtime's CNI
plugin directory, atomically, so that the runtime never executes a half-written plugin.`,
		Example:      "  vxflow-agent install-cni --cni-bin-dir /host/opt/cni/bin",
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if src == "" {
				self, err := os.Executable()
				if err != nil {
					return fmt.Errorf("failed to find vxflow-agent's own path: %w", err)
				}
				src = filepath.Join(filepath.Dir(self), "vxflow-cni")
			}
			path, err := cni.InstallPlugin(src, binDir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "installed %s\n", path)
			return nil
		},
	}
	cmd.Flags().StringVar(&binDir, "cni-bin-dir", "/opt/cni/bin", "the CNI plugin directory")
	cmd.Flags().StringVar(&src, "plugin", "", "the plugin binary to install (default: vxflow-cni next to this binary)")
	return cmd
}

// newRulesetApplier programs table ip vxflow in the agent's own network namespace.
func newRulesetApplier(metrics *agent.Metrics, reg prometheus.Registerer, log logr.Logger) (*agent.NFTables, error) {
	s, err := nft.NewSyncer(nft.Options{Logger: log, Metrics: nft.NewMetrics(reg)})
	if err != nil {
		return nil, fmt.Errorf("failed to open nf_tables: %w", err)
	}
	return &agent.NFTables{Interface: s, Log: log, Metrics: metrics}, nil
}
