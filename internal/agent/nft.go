package agent

import (
	"context"
	"time"

	"github.com/go-logr/logr"

	"github.com/vxflow/vxflow/internal/apply/nft"
	"github.com/vxflow/vxflow/internal/render/nftables"
)

// NFTables adapts internal/apply/nft to the agent and logs why a sync had to rewrite the whole table
// (the first sync, a failed one before it, or the table deleted or edited by hand).
type NFTables struct {
	nft.Interface
	Log     logr.Logger
	Metrics *Metrics
	synced  bool
}

var _ RulesetApplier = (*NFTables)(nil)

// Sync is part of RulesetApplier.
func (n *NFTables) Sync(ctx context.Context, desired *nftables.Ruleset, triggerTimes ...time.Time) (nft.Result, int, error) {
	res, err := n.Interface.Sync(ctx, desired, triggerTimes...)
	if err != nil {
		return res, 0, err
	}
	if res.Full && n.synced {
		n.Log.Info("Rewrote table ip vxflow", "reason", res.Reason, "messages", res.Messages)
		if n.Metrics != nil {
			n.Metrics.DriftRepairs.WithLabelValues("nftables").Inc()
		}
	} else if res.Messages > 0 {
		n.Log.V(2).Info("Updated table ip vxflow", "messages", res.Messages, "chains", res.ChainsWritten,
			"elementsAdded", res.ElementsAdded, "elementsDeleted", res.ElementsDeleted, "duration", res.Duration)
	}
	n.synced = true
	_, _, rules, elements := desired.Counts()
	return res, rules + elements, nil
}
