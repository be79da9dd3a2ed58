package agent

import (
	"context"
	"net/netip"

	"github.com/vxflow/vxflow/internal/apply/link"
	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/openflow"
)

// Links adapts internal/apply/link to the agent: it turns a NodeView into tun0's configuration and the
// sysctls of the node's packet path.
type Links struct {
	*link.Manager
}

var _ LinkApplier = Links{}

// Apply is part of LinkApplier.
func (l Links) Apply(ctx context.Context, view *model.NodeView) ([]string, error) {
	changes, err := l.EnsureSysctls(ctx, link.SysctlOptions{
		Tun: openflow.TunPortName, UserspaceDatapath: view.Datapath == model.DatapathNetdev,
	})
	if err != nil {
		return changes, err
	}
	cidrs := make([]netip.Prefix, len(view.ClusterNetworks))
	for i, c := range view.ClusterNetworks {
		cidrs[i] = c.CIDR
	}
	more, err := l.EnsureTun(ctx, link.TunConfig{
		Name:         openflow.TunPortName,
		Gateway:      netip.PrefixFrom(view.Gateway, view.Subnet.Bits()),
		ClusterCIDRs: cidrs,
		ServiceCIDR:  view.ServiceNetwork,
		MTU:          view.MTU,
	})
	return append(changes, more...), err
}
