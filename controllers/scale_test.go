package controllers

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	vxflowv1alpha1 "github.com/vxflow/vxflow/api/v1alpha1"
)

// TestScale measures how long it takes until N new Nodes all have a HostSubnet, and until all are
// Allocated, against envtest. It prints the figures and asserts only that every Node got a distinct,
// disjoint subnet. Run it with
//
//	VXFLOW_SCALE=1 go test ./controllers -run TestScale -v            (1,000 and 5,000 Nodes)
//	VXFLOW_SCALE=200,2000 go test ./controllers -run TestScale -v     (any list of sizes)
func TestScale(t *testing.T) {
	env := os.Getenv("VXFLOW_SCALE")
	if env == "" {
		t.Skip("set VXFLOW_SCALE=1 (or a comma-separated list of Node counts) to measure allocation at scale")
	}
	sizes := []int{1000, 5000}
	if env != "1" {
		sizes = nil
		for _, f := range strings.Split(env, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				t.Fatalf("VXFLOW_SCALE=%q: want 1 or a list of positive counts", env)
			}
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		t.Run(strconv.Itoa(n), func(t *testing.T) { measureScale(t, n) })
	}
}

func measureScale(t *testing.T, n int) {
	resetCluster(t)
	createClusterNetwork(t, "10.0.0.0/8", 24) // 65,536 subnets
	var start time.Time
	var mu sync.Mutex
	allocated := map[string]bool{}
	var allCreated, allAllocated time.Duration
	created := 0
	finished := make(chan struct{})
	w, err := startHostSubnetWatch(t, func(typ watch.EventType, hs *vxflowv1alpha1.HostSubnet) {
		mu.Lock()
		defer mu.Unlock()
		if typ == watch.Added {
			if created++; created == n {
				allCreated = time.Since(start)
			}
		}
		if typ != watch.Deleted && allocatedCondition(hs).Status == metav1.ConditionTrue && !allocated[hs.Name] {
			if allocated[hs.Name] = true; len(allocated) == n {
				allAllocated = time.Since(start)
				close(finished)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	workers, _ := strconv.Atoi(os.Getenv("VXFLOW_SCALE_WORKERS")) // 0: the default
	stop := startController(t, controllerOpts{identity: fmt.Sprintf("scale-%d", n), workers: workers})
	defer stop()

	mu.Lock()
	start = time.Now()
	mu.Unlock()
	createNodes(t, "scale", n)
	nodesDone := time.Since(start)
	select {
	case <-finished:
	case <-time.After(10 * time.Minute):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("after 10 minutes: %d of %d HostSubnets created, %d Allocated", created, n, len(allocated))
	}
	added, deleted, err := w.stop()
	g := NewWithT(t)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(added).To(HaveLen(n))
	g.Expect(deleted).To(BeEmpty())
	expectNoOverlap(g, w.subnets, "10.0.0.0/8")
	rounds, roundSeconds := histogramTotals(t, "vxflow_controller_allocation_round_duration_seconds")
	msg := fmt.Sprintf("scale: %d Nodes: all created by the test in %.1fs; all HostSubnets created %.1fs after the first Node; all Allocated=True after %.1fs (%.0f Nodes/s)",
		n, nodesDone.Seconds(), allCreated.Seconds(), allAllocated.Seconds(), float64(n)/allAllocated.Seconds())
	msg += fmt.Sprintf("; %d allocation rounds so far in this process, %.1fs in rounds", rounds, roundSeconds)
	t.Log(msg)
	fmt.Println(msg)
}

// histogramTotals reads a histogram's sample count and sum from the controller-runtime registry.
func histogramTotals(t *testing.T, name string) (uint64, float64) {
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) > 0 {
			h := f.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	return 0, 0
}
