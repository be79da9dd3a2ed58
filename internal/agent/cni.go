package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/vxflow/vxflow/internal/cni"
	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/openflow"
)

// CNINetwork is the agent's side of the CNI server: pods are recorded in the pod store and their flows
// come from the same render and apply as everything else; a request returns once its sync has applied.
type CNINetwork struct {
	Agent *Agent
	Pods  *PodStore
}

var _ cni.PodNetwork = CNINetwork{}

// NodeConfig is part of cni.PodNetwork.
func (n CNINetwork) NodeConfig() (cni.NodeNetConfig, error) {
	view := n.Agent.View()
	if view == nil {
		err := n.Agent.Healthy()
		if err == nil {
			err = errors.New("the agent has not synced yet")
		}
		return cni.NodeNetConfig{}, fmt.Errorf("node %s's network is not ready: %w", n.Agent.cfg.NodeName, err)
	}
	return cni.NodeNetConfigFromView(view), nil
}

// PodAttached is part of cni.PodNetwork.
func (n CNINetwork) PodAttached(ctx context.Context, pod model.LocalPod) error {
	return n.Pods.Wait(ctx, n.Pods.Put(pod))
}

// PodDetached is part of cni.PodNetwork.
func (n CNINetwork) PodDetached(ctx context.Context, sandboxID string) error {
	gen, ok := n.Pods.Delete(sandboxID)
	if !ok {
		return nil
	}
	return n.Pods.Wait(ctx, gen)
}

// PodFlowsPresent is part of cni.PodNetwork: every flow the renderer owns for the pod must be on br0,
// with the same actions.
func (n CNINetwork) PodFlowsPresent(ctx context.Context, pod model.LocalPod) (bool, error) {
	view := n.Agent.View()
	if view == nil {
		return false, errors.New("the node has not been programmed yet")
	}
	desired, err := openflow.Render(view)
	if err != nil {
		return false, err
	}
	actual, err := n.Agent.ovs.Dump(ctx)
	if err != nil {
		return false, fmt.Errorf("failed to dump br0's flows: %w", err)
	}
	have := make(map[string]string, len(actual))
	for _, f := range actual {
		have[f.Key()] = f.Actions
	}
	cookie, found := openflow.PodCookie(pod.IP), false
	for _, f := range desired {
		if f.Cookie != cookie {
			continue
		}
		found = true
		if acts, ok := have[f.Key()]; !ok || acts != f.Actions {
			return false, nil
		}
	}
	return found, nil
}
