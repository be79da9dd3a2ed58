package cni

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/vxflow/vxflow/internal/cni/wire"
)

// Default directories of a node's CNI setup.
const (
	// DefaultConfDir is where container runtimes read network configurations.
	DefaultConfDir = "/etc/cni/net.d"
	// DefaultBinDir is where container runtimes look for plugin binaries.
	DefaultBinDir = "/opt/cni/bin"
)

// Options are the agent's CNI settings, bound to its command-line flags by AddFlags.
type Options struct {
	// SocketPath is the server's unix socket (--cni-socket).
	SocketPath string
	// StateDir holds the attachment records (--cni-state-dir).
	StateDir string
	// ConfDir receives the conflist once the node network is ready (--cni-conf-dir).
	ConfDir string
	// BinDir receives the plugin binary at install time (--cni-bin-dir).
	BinDir string
	// PodTxChecksum is the checksum-offload workaround (--pod-tx-checksum-offload).
	PodTxChecksum string
}

// DefaultOptions returns the defaults of a packaged install.
func DefaultOptions() Options {
	return Options{
		SocketPath:    wire.DefaultSocketPath,
		StateDir:      DefaultStateDir,
		ConfDir:       DefaultConfDir,
		BinDir:        DefaultBinDir,
		PodTxChecksum: string(ChecksumOffloadAuto),
	}
}

// AddFlags binds o to fs, so every binary that runs the server spells the flags the same way.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.SocketPath, "cni-socket", o.SocketPath, "Unix socket of the CNI server (its directory is made 0700, the socket 0600); written into the conflist for the plugin")
	fs.StringVar(&o.StateDir, "cni-state-dir", o.StateDir, "Directory of the pod address allocations, kept across agent restarts")
	fs.StringVar(&o.ConfDir, "cni-conf-dir", o.ConfDir, "CNI configuration directory; the conflist is written there once the node network is ready")
	fs.StringVar(&o.BinDir, "cni-bin-dir", o.BinDir, "CNI binary directory the plugin is installed into (install-cni)")
	fs.StringVar(&o.PodTxChecksum, "pod-tx-checksum-offload", o.PodTxChecksum, "Transmit checksum offload in pods: auto (off with the userspace datapath, which needs it off), off, or on")
}

// ServerConfig returns the server configuration of o, checking the offload mode.
func (o Options) ServerConfig() (ServerConfig, error) {
	mode := ChecksumOffload(o.PodTxChecksum)
	switch mode {
	case ChecksumOffloadAuto, ChecksumOffloadOff, ChecksumOffloadOn:
	default:
		return ServerConfig{}, fmt.Errorf("failed to parse --pod-tx-checksum-offload=%q: want auto, off or on", o.PodTxChecksum)
	}
	return ServerConfig{SocketPath: o.SocketPath, StateDir: o.StateDir, PodTxChecksum: mode}, nil
}
