package lab

import (
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"github.com/vxflow/vxflow/internal/cli/nodeaccess"
)

// AccessFile returns the path of the lab's node access file for `vxflowctl trace --access-file` (also set as
// $VXFLOWCTL_ACCESS_FILE by `vxflow-lab exec` and `vxflow-lab ctl`): how to run ovs-appctl, ovs-ofctl, nft
// and ip on each node, i.e. `ip netns exec <lab>-nodeN` with the node's OVS_RUNDIR.
func (l *Lab) AccessFile() string { return filepath.Join(l.StateDir, "access.yaml") }

// NodeAccess returns the node access vxflowctl's trace uses, for the lab's nodes.
func (l *Lab) NodeAccess() (*nodeaccess.Exec, error) {
	st, err := loadState(l.StateDir)
	if err != nil {
		return nil, err
	}
	e := &nodeaccess.Exec{Nodes: map[string]nodeaccess.ExecNode{}}
	for _, n := range st.Nodes {
		e.Nodes[n.Name] = nodeaccess.ExecNode{
			Prefix: []string{"ip", "netns", "exec", n.NetNS},
			Env:    map[string]string{"OVS_RUNDIR": l.NodeOVS(n.Name).RunDir},
		}
	}
	return e, nil
}

// writeAccessFile rewrites the access file from the recorded nodes.
func (l *Lab) writeAccessFile() error {
	e, err := l.NodeAccess()
	if err != nil {
		return err
	}
	b, err := yaml.Marshal(e)
	if err != nil {
		return fmt.Errorf("failed to encode the node access file: %w", err)
	}
	b = append([]byte("# How vxflowctl reaches the nodes of lab "+l.Name+" (vxflowctl trace --access-file).\n"), b...)
	if err := os.WriteFile(l.AccessFile()+".tmp", b, 0o640); err != nil {
		return fmt.Errorf("failed to write the node access file: %w", err)
	}
	if err := os.Rename(l.AccessFile()+".tmp", l.AccessFile()); err != nil {
		return fmt.Errorf("failed to write the node access file: %w", err)
	}
	return nil
}
