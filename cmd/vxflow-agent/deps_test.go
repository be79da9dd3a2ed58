package main

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/agent"
	"github.com/vxflow/vxflow/internal/apply/nft"
	"github.com/vxflow/vxflow/internal/apply/ovs"
	"github.com/vxflow/vxflow/internal/model"
)

// stubLinks stands in for the kernel: a 1500-byte underlay, nothing to change.
type stubLinks struct{}

func (stubLinks) MoveAddresses(context.Context, string, string) ([]string, error) { return nil, nil }
func (stubLinks) UnderlayMTU(netip.Addr) (int, error)                             { return 1500, nil }
func (stubLinks) Apply(context.Context, *model.NodeView) ([]string, error)        { return nil, nil }

func TestConfListFollowsTheNodeNetwork(t *testing.T) {
	scheme, err := agent.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(&v1alpha1.HostSubnet{}).WithObjects(
		&v1alpha1.ClusterNetwork{
			ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.ClusterNetworkName},
			Spec: v1alpha1.ClusterNetworkSpec{
				ClusterNetworks: []v1alpha1.ClusterNetworkEntry{{CIDR: "10.128.0.0/14", HostPrefix: 23}},
				ServiceNetwork:  "172.30.0.0/16", VXLANPort: 4789, Mode: v1alpha1.NetworkModeSubnet,
			},
		},
		&v1alpha1.HostSubnet{
			ObjectMeta: metav1.ObjectMeta{Name: "node1"},
			Spec:       v1alpha1.HostSubnetSpec{Host: "node1", HostIP: "192.168.100.11", Subnet: "10.128.0.0/23"},
		}).Build()
	m := agent.NewMetrics(prometheus.NewRegistry())
	a, err := agent.New(agent.Config{NodeName: "node1", NodeIP: netip.MustParseAddr("192.168.100.11"), Datapath: model.DatapathNetdev},
		c, c, ovs.NewFake(), stubLinks{}, &agent.NFTables{Interface: nft.NewFake(), Log: logr.Discard()}, m, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	d := &nodeDeps{o: &options{cniConfDir: dir, cniSocket: filepath.Join(dir, "cni.sock")}, log: logr.Discard()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.writeConfListWhenReady(ctx, a)
	}()

	time.Sleep(300 * time.Millisecond)
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the conflist was written before the node was programmed: %v", entries)
	}
	if err := a.Sync(ctx); err != nil {
		t.Fatalf("Sync failed: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if entries, _ := os.ReadDir(dir); len(entries) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the conflist was not written after the node was programmed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("the conflist is still there after the agent stopped: %v", entries)
	}
}
