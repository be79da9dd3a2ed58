// Command vxflow-controller is vxflow's cluster side: it gives every Node a HostSubnet from ClusterNetwork
// default and reports the pool's state on it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/textlogger"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	vxflowv1alpha1 "github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/controllers"
)

// defaultNamespace is where the Deployment in config/manager runs, and so where its Leases live.
const defaultNamespace = "vxflow-system"

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "vxflow-controller: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		leaderElect   bool
		namespace     string
		metricsAddr   string
		probeAddr     string
		lockDuration  time.Duration
		workers       int
		leaseDuration time.Duration
		renewDeadline time.Duration
		retryPeriod   time.Duration
	)
	fs := flag.CommandLine
	fs.BoolVar(&leaderElect, "leader-elect", true,
		"Elect a leader through the Lease vxflow-controller in --leader-election-namespace, so that of several replicas only one reconciles and allocates. Allocation stays safe without it (see --allocation-lock-duration).")
	fs.StringVar(&namespace, "leader-election-namespace", defaultNamespace,
		"Namespace of the leader election Lease and of the allocation lock Lease vxflow-subnet-allocator.")
	fs.DurationVar(&leaseDuration, "leader-election-lease-duration", 15*time.Second,
		"How long a non-leader waits before it may take over leadership from a leader that stopped renewing.")
	fs.DurationVar(&renewDeadline, "leader-election-renew-deadline", 10*time.Second,
		"How long the leader keeps retrying to renew before it gives up leadership and exits.")
	fs.DurationVar(&retryPeriod, "leader-election-retry-period", 2*time.Second,
		"How often candidates try to acquire or renew leadership.")
	fs.DurationVar(&lockDuration, "allocation-lock-duration", 15*time.Second,
		"How long a crashed controller blocks allocation: the Lease vxflow-subnet-allocator, held for one allocation round at a time, is taken over after this.")
	fs.StringVar(&metricsAddr, "metrics-bind-address", ":8080",
		"Address of the plain-HTTP /metrics endpoint (controller-runtime and vxflow_controller_* metrics); 0 disables it.")
	fs.StringVar(&probeAddr, "health-probe-bind-address", ":8081",
		"Address of the /healthz and /readyz endpoints; 0 disables them.")
	fs.IntVar(&workers, "workers", 4, "Concurrent reconciles of the Node and HostSubnet controllers.")
	logConfig := textlogger.NewConfig()
	logConfig.AddFlags(fs)
	fs.Lookup("v").Usage = "Log verbosity: 0 logs every change the controller makes (HostSubnets created, updated, deleted; conditions set), 2 adds each allocation round."
	fs.Lookup("vmodule").Usage = "Per-file log verbosity, as a comma-separated list of pattern=N."
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: vxflow-controller [flags]\n\n"+
			"Gives every Node a HostSubnet from ClusterNetwork default, keeps its hostIP equal to the Node's\n"+
			"InternalIP, deletes it with the Node, and reports capacity and conflicts in status, events and\n"+
			"/metrics. The API server comes from --kubeconfig, $KUBECONFIG, the in-cluster service account or\n"+
			"~/.kube/config, in that order.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	flag.Parse()
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; see --help", fs.Args())
	}
	logger := textlogger.NewLogger(logConfig)
	ctrl.SetLogger(logger)
	klog.SetLoggerWithOptions(logger)
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(vxflowv1alpha1.AddToScheme(scheme))

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("failed to load the API server configuration: %w", err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:        probeAddr,
		LeaderElection:                leaderElect,
		LeaderElectionID:              "vxflow-controller",
		LeaderElectionNamespace:       namespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &leaseDuration,
		RenewDeadline:                 &renewDeadline,
		RetryPeriod:                   &retryPeriod,
	})
	if err != nil {
		return fmt.Errorf("failed to create the manager: %w", err)
	}
	ctx := ctrl.SetupSignalHandler()
	pool, err := controllers.SetupWithManager(ctx, mgr, controllers.Options{
		LockNamespace: namespace,
		LockDuration:  lockDuration,
		Workers:       workers,
	})
	if err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("failed to add the health check: %w", err)
	}
	// Ready once the pool has seen every HostSubnet and the ClusterNetwork: before that, verdicts could be
	// wrong. Non-leaders sync their caches too, so a standby replica is ready as well.
	if err := mgr.AddReadyzCheck("pool-synced", func(*http.Request) error {
		if !pool.Synced() {
			return errors.New("the HostSubnet pool has not synced yet")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("failed to add the readiness check: %w", err)
	}
	log.Info("Set up the controllers", "leaderElection", leaderElect, "namespace", namespace)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("failed to run the manager: %w", err)
	}
	return nil
}
