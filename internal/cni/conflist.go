package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/vxflow/vxflow/internal/cni/wire"
)

// ConfListFile is the name of the conflist in the CNI configuration directory; "10-" sorts it before the
// defaults runtimes ship (which use larger numbers), so it is the network the runtime picks.
const ConfListFile = "10-vxflow.conflist"

// ConfListOptions are the settings written into the conflist.
type ConfListOptions struct {
	// Name is the network name; empty means wire.NetworkName.
	Name string
	// SocketPath is the agent's CNI socket; empty means wire.DefaultSocketPath.
	SocketPath string
	// TimeoutSeconds bounds one plugin request; zero leaves the plugin's default.
	TimeoutSeconds int
	// DNS is passed through to pods' results, when set.
	DNS types.DNS
}

// confList is the JSON of the conflist (CNI spec 1.1 "network configuration list").
type confList struct {
	CNIVersion string       `json:"cniVersion"`
	Name       string       `json:"name"`
	Plugins    []pluginConf `json:"plugins"`
}

type pluginConf struct {
	Type           string     `json:"type"`
	Socket         string     `json:"socket"`
	TimeoutSeconds int        `json:"timeoutSeconds,omitempty"`
	DNS            *types.DNS `json:"dns,omitempty"`
}

// ConfList returns the conflist's content for opts.
func ConfList(opts ConfListOptions) ([]byte, error) {
	if opts.Name == "" {
		opts.Name = wire.NetworkName
	}
	if opts.SocketPath == "" {
		opts.SocketPath = wire.DefaultSocketPath
	}
	pc := pluginConf{Type: wire.PluginType, Socket: opts.SocketPath, TimeoutSeconds: opts.TimeoutSeconds}
	if !opts.DNS.IsEmpty() {
		pc.DNS = &opts.DNS
	}
	b, err := json.MarshalIndent(confList{CNIVersion: wire.CNIVersion, Name: opts.Name, Plugins: []pluginConf{pc}}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("failed to encode the conflist: %w", err)
	}
	return append(b, '\n'), nil
}

// WriteConfList writes the conflist into the CNI configuration directory dir (created if needed), atomically,
// and returns its path. The agent calls it only once its node network is ready: a runtime that sees the file
// starts sending ADDs, and kubelet reports the node NetworkReady from it. Rewriting identical content is a
// no-op, so the agent may call it on every sync.
func WriteConfList(dir string, opts ConfListOptions) (string, error) {
	b, err := ConfList(opts)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, ConfListFile)
	if cur, err := os.ReadFile(path); err == nil && string(cur) == string(b) {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("failed to create the CNI configuration directory %s: %w", dir, err)
	}
	if err := writeFileAtomic(dir, ConfListFile, b, 0o644, true); err != nil {
		return "", fmt.Errorf("failed to write %s: %w", path, err)
	}
	return path, nil
}

// RemoveConfList removes the conflist from dir, so the runtime stops scheduling pods to a node whose network
// is gone; a missing file is not an error.
func RemoveConfList(dir string) error {
	path := filepath.Join(dir, ConfListFile)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("failed to remove %s: %w", path, err)
	}
	return nil
}

// InstallPlugin copies the plugin binary srcBinary into cniBinDir as wire.PluginType (mode 0755), through a
// temporary file and a rename, so a runtime executing the old binary at that moment never sees a partial
// file (and "text file busy" cannot happen). It is the DaemonSet's init step (`vxflow-agent install-cni`);
// it returns the installed path.
func InstallPlugin(srcBinary, cniBinDir string) (string, error) {
	src, err := os.Open(srcBinary)
	if err != nil {
		return "", fmt.Errorf("failed to open the plugin binary: %w", err)
	}
	defer src.Close()
	if fi, err := src.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("failed to install the plugin: %s is not a regular file (%v)", srcBinary, err)
	}
	if err := os.MkdirAll(cniBinDir, 0o755); err != nil {
		return "", fmt.Errorf("failed to create the CNI binary directory %s: %w", cniBinDir, err)
	}
	dst := filepath.Join(cniBinDir, wire.PluginType)
	tmp, err := os.CreateTemp(cniBinDir, ".tmp-"+wire.PluginType+"-")
	if err != nil {
		return "", fmt.Errorf("failed to create a temporary file in %s: %w", cniBinDir, err)
	}
	done := false
	defer func() {
		if !done {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err := io.Copy(tmp, src); err != nil {
		return "", fmt.Errorf("failed to copy the plugin to %s: %w", cniBinDir, err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		return "", fmt.Errorf("failed to make the plugin executable: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return "", fmt.Errorf("failed to sync the plugin: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("failed to close the plugin copy: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("failed to install the plugin as %s: %w", dst, err)
	}
	done = true
	return dst, nil
}
