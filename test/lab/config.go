package lab

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
)

// The lab's fixed addressing. The underlay is one /24 on a Linux bridge; the addresses follow a pattern so a
// person exploring the lab can guess them: the control plane is .10, node N is .10+N, the external client .100.
var (
	// UnderlayPrefix is the underlay network all lab namespaces share.
	UnderlayPrefix = netip.MustParsePrefix("192.168.100.0/24")
	// ControlPlaneIP is where kube-apiserver listens (port APIServerPort) and what it advertises.
	ControlPlaneIP = netip.MustParseAddr("192.168.100.10")
	// ExternalIP is the external client's underlay address.
	ExternalIP = netip.MustParseAddr("192.168.100.100")
)

// The ClusterNetwork the demo and the end-to-end suite create (OpenShift SDN's defaults).
const (
	ClusterCIDR    = "10.128.0.0/14"
	HostPrefix     = 23
	ServiceCIDR    = "172.30.0.0/16"
	VXLANPort      = 4789
	APIServerPort  = 6443
	UnderlayMTU    = 1500
	MaxNodes       = 89
	DefaultLabName = "vxl"
)

// Namespace roles; every namespace is named <lab>-<role>, and pods <lab>-pod-<namespace>-<name>.
const (
	roleUnderlay     = "ul"
	roleControlPlane = "cp"
	roleExternal     = "ext"
)

// Config says where a lab lives and what it starts; Defaults fills what is empty.
type Config struct {
	// Name prefixes every network namespace of the lab and names its state directory: [a-z][a-z0-9]{0,11}.
	// The dash after it never appears inside it, so "<name>-" selects exactly this lab's namespaces.
	Name string
	// StateDir holds PIDs, logs, OVS databases, kubeconfigs and the CNI configuration; default
	// <RepoRoot>/.lab/<Name>.
	StateDir string
	// RepoRoot is the vxflow checkout (config/ and bin/).
	RepoRoot string
	// BinDir holds vxflow-controller, vxflow-agent, vxflow-cni and vxflowctl; default $VXFLOW_BIN_DIR, else
	// <RepoRoot>/bin.
	BinDir string
	// K8sBinDir holds kube-apiserver, etcd and kubectl; default <RepoRoot>/bin/k8s (also when BinDir is set).
	K8sBinDir string
	// LabBin is the vxflow-lab binary (it runs the control plane and the pods' HTTP servers); default this
	// program when it is vxflow-lab, else <RepoRoot>/bin/vxflow-lab.
	LabBin string
	// Nodes is how many nodes Up creates (node1..nodeN); default 3.
	Nodes int
	// NoAgents leaves the agents stopped (StartAgent starts them later).
	NoAgents bool
	// NoController leaves vxflow-controller stopped.
	NoController bool
	// AgentArgs are appended to every agent's command line.
	AgentArgs []string
	// ControllerArgs are appended to the controller's command line.
	ControllerArgs []string
	// Out receives one line per step; default os.Stdout.
	Out io.Writer
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,11}$`)

// Defaults returns c with every empty field set.
func (c Config) Defaults() Config {
	if c.Name == "" {
		c.Name = DefaultLabName
	}
	if c.RepoRoot == "" {
		c.RepoRoot = RepoRoot()
	}
	if c.StateDir == "" {
		c.StateDir = filepath.Join(c.RepoRoot, ".lab", c.Name)
	}
	if c.BinDir == "" {
		c.BinDir = os.Getenv("VXFLOW_BIN_DIR")
	}
	if c.BinDir == "" {
		c.BinDir = filepath.Join(c.RepoRoot, "bin")
	}
	if c.K8sBinDir == "" {
		c.K8sBinDir = filepath.Join(c.RepoRoot, "bin", "k8s")
	}
	if c.LabBin == "" {
		if self, err := os.Executable(); err == nil && filepath.Base(self) == "vxflow-lab" {
			c.LabBin = self
		} else {
			c.LabBin = filepath.Join(c.RepoRoot, "bin", "vxflow-lab")
		}
	}
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	return c
}

// Validate reports what makes c unusable.
func (c Config) Validate() error {
	var errs []error
	if !nameRE.MatchString(c.Name) {
		errs = append(errs, fmt.Errorf("lab name %q must match %s", c.Name, nameRE))
	}
	if c.Nodes < 1 || c.Nodes > MaxNodes {
		errs = append(errs, fmt.Errorf("nodes %d must be in [1, %d]", c.Nodes, MaxNodes))
	}
	if !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("state dir %q must be absolute", c.StateDir))
	}
	return errors.Join(errs...)
}

// RepoRoot returns the repository root: $VXFLOW_ROOT, else the directory of this source file's checkout
// (found at build time), else the working directory.
func RepoRoot() string {
	if r := os.Getenv("VXFLOW_ROOT"); r != "" {
		return r
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			return root
		}
	}
	wd, _ := os.Getwd()
	return wd
}

// NodeName returns the name of the i-th node (1-based).
func NodeName(i int) string { return fmt.Sprintf("node%d", i) }

// NodeIP returns the underlay address of the i-th node (1-based).
func NodeIP(i int) netip.Addr {
	b := ControlPlaneIP.As4()
	b[3] += byte(i)
	return netip.AddrFrom4(b)
}

// NetNS returns the name of one of the lab's namespaces (role "cp", "ext", "ul", a node name, ...).
func (c Config) NetNS(role string) string { return c.Name + "-" + role }

// PodNetNS returns the network namespace of a pod.
func (c Config) PodNetNS(namespace, name string) string {
	return c.Name + "-pod-" + namespace + "-" + name
}
