package nft

import (
	"testing"
	"time"

	"github.com/vxflow/vxflow/internal/render/nftables"
	"github.com/vxflow/vxflow/internal/render/nftables/rendertest"
	"github.com/vxflow/vxflow/internal/testutil/textdiff"
)

// TestIncrementalSyncsMatchFullSync applies random changes (rendertest.Churn: endpoints, Services added and
// deleted, keys two Services claim) through one Renderer's grouped Rulesets and partial syncs, checks the
// kernel's table against the rendered one along the way, and at the end against a fresh full sync of the
// same Ruleset into another namespace. Integration test: needs root and nft.
func TestIncrementalSyncsMatchFullSync(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts nftables.Options
	}{{"chains", nftables.Options{}}, {"endpoint-map", nftables.Options{EndpointMap: true}}} {
		t.Run(tc.name, func(t *testing.T) {
			s, ns := newTestSyncer(t, "nfti")
			s.opts.StaleChainDelay = time.Nanosecond
			churn := rendertest.NewChurn(42)
			set := churn.ChurnSet(15)
			rr := nftables.NewRenderer(tc.opts)
			want := rr.RenderGrouped(set)
			mustSync(t, s, want)
			partial := 0
			for step := range 80 {
				churn.Step(set)
				want = rr.RenderGrouped(set)
				res := mustSync(t, s, want)
				if !res.Full {
					partial++
				}
				if step%10 == 9 {
					requireSameTableWithStale(t, ns, want, s)
				}
			}
			if partial < 70 {
				t.Errorf("%d of 80 syncs were partial, want nearly all", partial)
			}
			time.Sleep(time.Millisecond)
			mustSync(t, s, want) // deletes the chains left stale
			requireSameTable(t, ns, want)

			fresh, freshNS := newTestSyncer(t, "nftf")
			if res := mustSync(t, fresh, want); !res.Full {
				t.Fatalf("first sync of a new Syncer: got %+v, want full", res)
			}
			if a, b := normalizeListing(listTable(t, ns)), normalizeListing(listTable(t, freshNS)); a != b {
				t.Fatalf("incremental and full syncs differ:\n--- full\n+++ incremental\n%s", textdiff.Lines(b, a))
			}
		})
	}
}

// TestGroupedAndFlatShapes syncs the same content in both shapes back and forth: a change of shape is a
// full sync, and the table is the same either way. A flat Ruleset made by Flat (Renderer.Render) is synced
// as the grouped one it came from: partially.
func TestGroupedAndFlatShapes(t *testing.T) {
	s, ns := newTestSyncer(t, "nfts")
	s.opts.StaleChainDelay = time.Nanosecond
	churn := rendertest.NewChurn(7)
	set := churn.ChurnSet(6)
	rr := nftables.NewRenderer(nftables.Options{EndpointMap: true})
	for i := range 6 {
		churn.Step(set)
		want := rr.RenderGrouped(set)
		if i%2 == 1 {
			flat := want.Flat()
			want = &nftables.Ruleset{Sets: flat.Sets, Chains: flat.Chains} // built by hand
		}
		res := mustSync(t, s, want)
		if i > 0 && !res.Full {
			t.Errorf("step %d: shape changed, got a partial sync %+v", i, res)
		}
		requireSameTableWithStale(t, ns, want, s)
		time.Sleep(time.Millisecond)
		mustSync(t, s, want) // deletes the chains left stale
		if res := mustSync(t, s, want); res.Messages != 0 {
			t.Errorf("step %d: third sync of the same state sent %d messages", i, res.Messages)
		}
		requireSameTable(t, ns, want)
	}
	churn.Step(set)
	want := rr.Render(set)
	if res := mustSync(t, s, rr.RenderGrouped(set)); !res.Full {
		t.Fatalf("back to grouped: got a partial sync %+v", res)
	}
	churn.Step(set)
	want = rr.Render(set)
	if res := mustSync(t, s, want); res.Full {
		t.Errorf("Renderer.Render's flat Ruleset: got a full sync %+v", res)
	}
	requireSameTableWithStale(t, ns, want, s)
}
