package cni

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/apply/ovs"
	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/openflow"
)

// testAgent is the tests' PodNetwork: a miniature of the agent loop that keeps the local pods, builds the
// NodeView from a ClusterNetwork and this node's HostSubnet, renders br0's flows with the real renderer and
// applies them with the real OVS applier. Syncs are coalesced: requests that arrive while a sync runs are
// served by the next one, which is what lets 20 or 50 parallel ADDs finish quickly.
type testAgent struct {
	sw        *ovs.Switch
	subnet    string // this node's HostSubnet
	hostCIDR  int32  // the ClusterNetwork's hostPrefix
	notReady  error  // when set, NodeConfig fails with it
	syncCount int

	mu      sync.Mutex
	pods    map[string]model.LocalPod // by sandbox ID
	wanted  int                       // generation of the pods map
	applied int                       // generation the switch has
	recheck bool                      // the next sync dumps the switch (a repeated ADD)

	syncMu sync.Mutex // one Sync at a time
}

var _ PodNetwork = &testAgent{}

func newTestAgent(sw *ovs.Switch, subnet string, hostPrefix int32) *testAgent {
	return &testAgent{sw: sw, subnet: subnet, hostCIDR: hostPrefix, pods: map[string]model.LocalPod{}}
}

// view builds the NodeView of node1 with pods.
func (a *testAgent) view(pods []model.LocalPod) (*model.NodeView, error) {
	cn := &v1alpha1.ClusterNetwork{
		ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.ClusterNetworkName},
		Spec: v1alpha1.ClusterNetworkSpec{
			ClusterNetworks: []v1alpha1.ClusterNetworkEntry{{CIDR: "10.128.0.0/14", HostPrefix: a.hostCIDR}},
			ServiceNetwork:  "172.30.0.0/16",
			VXLANPort:       4789,
			Mode:            v1alpha1.NetworkModeSubnet,
		},
	}
	hs := v1alpha1.HostSubnet{
		ObjectMeta: metav1.ObjectMeta{Name: "node1", UID: "uid-node1", Generation: 1},
		Spec:       v1alpha1.HostSubnetSpec{Host: "node1", HostIP: "192.168.100.1", Subnet: a.subnet},
	}
	return model.BuildNodeView(model.NodeInput{
		ClusterNetwork: cn,
		HostSubnets:    []v1alpha1.HostSubnet{hs},
		NodeName:       "node1",
		Facts:          model.NodeFacts{NodeIP: netip.MustParseAddr("192.168.100.1"), UnderlayMTU: 1500, Datapath: model.DatapathNetdev},
		Pods:           pods,
	})
}

// NodeConfig is part of PodNetwork.
func (a *testAgent) NodeConfig() (NodeNetConfig, error) {
	a.mu.Lock()
	notReady := a.notReady
	a.mu.Unlock()
	if notReady != nil {
		return NodeNetConfig{}, notReady
	}
	v, err := a.view(nil)
	if err != nil {
		return NodeNetConfig{}, err
	}
	return NodeNetConfigFromView(v), nil
}

func (a *testAgent) setNotReady(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.notReady = err
}

// PodAttached is part of PodNetwork.
func (a *testAgent) PodAttached(ctx context.Context, pod model.LocalPod) error {
	a.mu.Lock()
	if old, ok := a.pods[pod.SandboxID]; ok && old.OFPort == pod.OFPort && old.IP == pod.IP {
		a.recheck = true // a repeated ADD: compare with the switch, as the agent does
	}
	a.pods[pod.SandboxID] = pod
	a.wanted++
	gen := a.wanted
	a.mu.Unlock()
	v, err := a.sync(ctx, gen)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(v.LocalPods, func(p model.LocalPod) bool { return p.SandboxID == pod.SandboxID }) {
		return fmt.Errorf("the pod %s was left out of the node view: %v", pod.Key(), v.Skipped)
	}
	return nil
}

// PodDetached is part of PodNetwork.
func (a *testAgent) PodDetached(ctx context.Context, sandboxID string) error {
	a.mu.Lock()
	if _, ok := a.pods[sandboxID]; !ok {
		a.mu.Unlock()
		return nil
	}
	delete(a.pods, sandboxID)
	a.wanted++
	gen := a.wanted
	a.mu.Unlock()
	_, err := a.sync(ctx, gen)
	return err
}

// PodFlowsPresent is part of PodNetwork: every flow the renderer gives the pod must be on br0, as rendered.
func (a *testAgent) PodFlowsPresent(ctx context.Context, pod model.LocalPod) (bool, error) {
	v, err := a.view([]model.LocalPod{pod})
	if err != nil {
		return false, err
	}
	fs, err := openflow.Render(v)
	if err != nil {
		return false, err
	}
	dump, err := a.sw.Dump(ctx)
	if err != nil {
		return false, err
	}
	have := map[string]string{}
	for _, f := range dump {
		have[f.Key()] = f.Actions
	}
	cookie := openflow.PodCookie(pod.IP)
	n := 0
	for _, f := range fs {
		if f.Cookie != cookie {
			continue
		}
		n++
		if acts, ok := have[f.Key()]; !ok || acts != f.Actions {
			return false, nil
		}
	}
	return n > 0, nil
}

// sync renders the current pods and applies them, unless a sync that covered generation gen already ran.
func (a *testAgent) sync(ctx context.Context, gen int) (*model.NodeView, error) {
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	a.mu.Lock()
	pods := make([]model.LocalPod, 0, len(a.pods))
	for _, p := range a.pods {
		pods = append(pods, p)
	}
	target, done, recheck := a.wanted, a.applied >= gen, a.recheck
	if !done {
		a.recheck = false
	}
	a.mu.Unlock()
	v, err := a.view(pods)
	if err != nil {
		return nil, err
	}
	if done {
		return v, nil
	}
	fs, err := openflow.Render(v)
	if err != nil {
		return nil, err
	}
	// As the agent's pod path does: diff against the last sync, no dump (its periodic full sync finds drift),
	// unless a repeated ADD asked for a comparison with the switch.
	apply := a.sw.SyncChanges
	if recheck {
		apply = a.sw.Sync
	}
	if _, err := apply(ctx, fs); err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.applied = target
	a.syncCount++
	a.mu.Unlock()
	return v, nil
}

// restore seeds the pods after a restart, as the agent does with Server.Pods before its first sync.
func (a *testAgent) restore(ctx context.Context, pods []model.LocalPod) error {
	a.mu.Lock()
	a.pods = map[string]model.LocalPod{}
	for _, p := range pods {
		a.pods[p.SandboxID] = p
	}
	a.wanted++
	gen := a.wanted
	a.mu.Unlock()
	_, err := a.sync(ctx, gen)
	return err
}
