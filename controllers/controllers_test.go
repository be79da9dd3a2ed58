package controllers

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vxflowv1alpha1 "github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/conditions"
)

// Envtest tests: each is a user story against the real API server, with one or two full controllers.

func TestOneNode(t *testing.T) {
	resetCluster(t)
	createClusterNetwork(t, "10.128.0.0/14", 23)
	startController(t, controllerOpts{})
	node := createNode(t, "node-a", "192.168.100.11")

	hs := waitAllocated(t, "node-a")
	g := NewWithT(t)
	g.Expect(hs.Spec.Host).To(Equal("node-a"))
	g.Expect(hs.Spec.HostIP).To(Equal("192.168.100.11"))
	g.Expect(hs.Spec.Subnet).To(Equal("10.128.0.0/23"))
	g.Expect(hs.Annotations).To(HaveKeyWithValue(vxflowv1alpha1.NodeUIDAnnotation, string(node.UID)))
	g.Expect(hs.OwnerReferences).To(ConsistOf(HaveField("UID", node.UID)))
	g.Expect(allocatedCondition(hs).Reason).To(Equal(conditions.ReasonAllocated))
	g.Expect(hs.Status.ObservedGeneration).To(Equal(hs.Generation))
	g.Eventually(func(g Gomega) {
		g.Expect(getHostSubnet(g, "node-a").Status.GatewayIP).To(Equal("10.128.0.1"))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	g.Eventually(func(g Gomega) {
		cn := getClusterNetwork(g)
		g.Expect(cn.Status.SubnetsAllocated).To(Equal(int64(1)))
		g.Expect(cn.Status.SubnetsTotal).To(Equal(int64(512)))
		g.Expect(cn.Status.ObservedGeneration).To(Equal(cn.Generation))
		g.Expect(condition(cn.Status.Conditions, vxflowv1alpha1.ConditionReady)).To(And(
			HaveField("Status", metav1.ConditionTrue), HaveField("Message", "1 of 512 subnets allocated")))
		g.Expect(condition(cn.Status.Conditions, vxflowv1alpha1.ConditionDegraded)).To(HaveField("Status", metav1.ConditionFalse))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}

func TestNodeWithoutUsableIP(t *testing.T) {
	resetCluster(t)
	createClusterNetwork(t, "10.128.0.0/14", 23)
	startController(t, controllerOpts{})
	g := NewWithT(t)

	node := createNode(t, "no-ip", "")
	g.Eventually(func(g Gomega) {
		g.Expect(eventsFor(g, string(node.UID))).To(ContainElement(And(
			HaveField("Reason", eventNoUsableNodeIP), HaveField("Note", ContainSubstring("no InternalIP")))))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	// An address inside the pod network is refused too.
	setNodeIP(t, node, "10.128.9.9")
	g.Eventually(func(g Gomega) {
		g.Expect(eventsFor(g, string(node.UID))).To(ContainElement(HaveField("Note", ContainSubstring("inside the cluster network"))))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	// The reconcile that wrote those events decided not to allocate.
	g.Expect(k8s.Get(context.Background(), client.ObjectKey{Name: "no-ip"}, &vxflowv1alpha1.HostSubnet{})).NotTo(Succeed())

	setNodeIP(t, node, "192.168.100.20")
	hs := waitAllocated(t, "no-ip")
	g.Expect(hs.Spec.HostIP).To(Equal("192.168.100.20"))
}

func TestHundredNodes(t *testing.T) {
	resetCluster(t)
	createClusterNetwork(t, "10.128.0.0/14", 23)
	startController(t, controllerOpts{})
	createNodes(t, "worker", 100)

	g := NewWithT(t)
	g.Eventually(func(g Gomega) {
		list := &vxflowv1alpha1.HostSubnetList{}
		g.Expect(k8s.List(context.Background(), list)).To(Succeed())
		g.Expect(list.Items).To(HaveLen(100))
		for _, hs := range list.Items {
			g.Expect(allocatedCondition(&hs).Status).To(Equal(metav1.ConditionTrue), "HostSubnet %s", hs.Name)
		}
		expectNoOverlap(g, list.Items, "10.128.0.0/14")
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(getClusterNetwork(g).Status.SubnetsAllocated).To(Equal(int64(100)))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}

func TestNodeDelete(t *testing.T) {
	resetCluster(t)
	createClusterNetwork(t, "10.128.0.0/14", 23)
	startController(t, controllerOpts{})
	createNode(t, "first", "192.168.100.1")
	second := createNode(t, "second", "192.168.100.2")
	waitAllocated(t, "first")
	hs := waitAllocated(t, "second")
	g := NewWithT(t)

	g.Expect(k8s.Delete(context.Background(), second)).To(Succeed())
	g.Eventually(func(g Gomega) {
		err := k8s.Get(context.Background(), client.ObjectKey{Name: "second"}, &vxflowv1alpha1.HostSubnet{})
		g.Expect(err).To(MatchError(ContainSubstring("not found")))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(getClusterNetwork(g).Status.SubnetsAllocated).To(Equal(int64(1)))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	// The freed subnet is the lowest free one, so the next Node gets it.
	createNode(t, "third", "192.168.100.3")
	g.Expect(waitAllocated(t, "third").Spec.Subnet).To(Equal(hs.Spec.Subnet))
}

func TestNodeRecreate(t *testing.T) {
	resetCluster(t)
	createClusterNetwork(t, "10.128.0.0/14", 23)
	stop := startController(t, controllerOpts{identity: "first"})
	old := createNode(t, "node-r", "192.168.100.1")
	oldHS := waitAllocated(t, "node-r")
	g := NewWithT(t)

	// Live: delete and re-create at once; whichever events the controller sees, the end state is a
	// HostSubnet for the new Node.
	g.Expect(k8s.Delete(context.Background(), old)).To(Succeed())
	renewed := createNode(t, "node-r", "192.168.100.2")
	g.Expect(renewed.UID).NotTo(Equal(old.UID))
	g.Eventually(func(g Gomega) {
		hs := getHostSubnet(g, "node-r")
		g.Expect(hs.UID).NotTo(Equal(oldHS.UID))
		g.Expect(hs.Annotations).To(HaveKeyWithValue(vxflowv1alpha1.NodeUIDAnnotation, string(renewed.UID)))
		g.Expect(hs.Spec.HostIP).To(Equal("192.168.100.2"))
		g.Expect(allocatedCondition(hs).Status).To(Equal(metav1.ConditionTrue))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	// While the controller is down: the next one finds a HostSubnet whose node-uid is stale and replaces it.
	staleHS := waitAllocated(t, "node-r")
	stop()
	g.Expect(k8s.Delete(context.Background(), renewed)).To(Succeed())
	third := createNode(t, "node-r", "192.168.100.3")
	startController(t, controllerOpts{identity: "second"})
	g.Eventually(func(g Gomega) {
		hs := getHostSubnet(g, "node-r")
		g.Expect(hs.UID).NotTo(Equal(staleHS.UID))
		g.Expect(hs.Annotations).To(HaveKeyWithValue(vxflowv1alpha1.NodeUIDAnnotation, string(third.UID)))
		g.Expect(allocatedCondition(hs).Status).To(Equal(metav1.ConditionTrue))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(eventsFor(g, string(third.UID))).To(ContainElement(HaveField("Reason", eventStaleHostSubnetDeleted)))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}

func TestNodeIPChange(t *testing.T) {
	resetCluster(t)
	createClusterNetwork(t, "10.128.0.0/14", 23)
	startController(t, controllerOpts{})
	node := createNode(t, "mover", "192.168.100.1")
	before := waitAllocated(t, "mover")

	setNodeIP(t, node, "192.168.100.77")
	g := NewWithT(t)
	g.Eventually(func(g Gomega) {
		hs := getHostSubnet(g, "mover")
		g.Expect(hs.Spec.HostIP).To(Equal("192.168.100.77"))
		g.Expect(hs.UID).To(Equal(before.UID))
		g.Expect(hs.Spec.Subnet).To(Equal(before.Spec.Subnet))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(eventsFor(g, string(node.UID))).To(ContainElement(HaveField("Reason", eventHostIPUpdated)))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}

func TestHandMadeHostSubnets(t *testing.T) {
	resetCluster(t)
	createClusterNetwork(t, "10.128.0.0/14", 23)
	// Hand-made objects exist before the controller starts, as after a GitOps sync; the names give the
	// order among objects created in the same second.
	for _, hs := range []struct{ name, subnet string }{
		{"vtep-a", "10.128.0.0/23"},   // valid and free
		{"vtep-b", "10.128.0.0/22"},   // overlaps vtep-a
		{"vtep-c", "10.0.0.0/24"},     // outside the cluster network
		{"vtep-d", "10.128.0.0/23"},   // duplicate of vtep-a
		{"vtep-e", "10.128.200.0/24"}, // valid, smaller than a node subnet
	} {
		obj := &vxflowv1alpha1.HostSubnet{
			ObjectMeta: metav1.ObjectMeta{Name: hs.name},
			Spec:       vxflowv1alpha1.HostSubnetSpec{Host: hs.name, HostIP: "192.168.200.1", Subnet: hs.subnet},
		}
		if err := k8s.Create(context.Background(), obj); err != nil {
			t.Fatalf("failed to create HostSubnet %s: %v", hs.name, err)
		}
	}
	startController(t, controllerOpts{})
	g := NewWithT(t)
	expectAllocated := func(name, status, reason, message string) {
		t.Helper()
		g.Eventually(func(g Gomega) {
			c := allocatedCondition(getHostSubnet(g, name))
			g.Expect(c.Status).To(Equal(metav1.ConditionStatus(status)), "HostSubnet %s: %+v", name, c)
			g.Expect(c.Reason).To(Equal(reason))
			g.Expect(c.Message).To(ContainSubstring(message))
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	}
	expectAllocated("vtep-a", "True", conditions.ReasonAllocated, "10.128.0.0/23")
	expectAllocated("vtep-b", "False", conditions.ReasonOverlap, "vtep-a")
	expectAllocated("vtep-c", "False", conditions.ReasonOutsideClusterNetwork, "10.0.0.0/24")
	expectAllocated("vtep-d", "False", conditions.ReasonDuplicate, "vtep-a")
	expectAllocated("vtep-e", "True", conditions.ReasonAllocated, "10.128.200.0/24")
	g.Expect(getHostSubnet(g, "vtep-b").Status.GatewayIP).To(BeEmpty())
	g.Expect(getHostSubnet(g, "vtep-e").Status.GatewayIP).To(Equal("10.128.200.1"))

	// A Node never gets a subnet overlapping any of them, refused ones included.
	createNodes(t, "n", 3)
	var nodes []vxflowv1alpha1.HostSubnet
	for i := range 3 {
		nodes = append(nodes, *waitAllocated(t, fmt.Sprintf("n-%d", i)))
	}
	all := append(nodes, *getHostSubnet(g, "vtep-b"), *getHostSubnet(g, "vtep-e"))
	expectNoOverlap(g, all, "10.128.0.0/14")

	g.Eventually(func(g Gomega) {
		d := condition(getClusterNetwork(g).Status.Conditions, vxflowv1alpha1.ConditionDegraded)
		g.Expect(d.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(d.Reason).To(Equal(conditions.ReasonRangeInUse))
		g.Expect(d.Message).To(And(ContainSubstring("vtep-c (10.0.0.0/24)"), ContainSubstring("vtep-b (Overlap)"), ContainSubstring("vtep-d (Duplicate)")))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	// The controller never deletes or rewrites hand-made objects.
	for _, name := range []string{"vtep-b", "vtep-c", "vtep-d"} {
		g.Expect(getHostSubnet(g, name).Annotations).NotTo(HaveKey(vxflowv1alpha1.NodeUIDAnnotation))
	}
	// Deleting vtep-a lets the oldest refused one, vtep-b, win; vtep-d now overlaps vtep-b.
	g.Expect(k8s.Delete(context.Background(), getHostSubnet(g, "vtep-a"))).To(Succeed())
	expectAllocated("vtep-b", "True", conditions.ReasonAllocated, "10.128.0.0/22")
	expectAllocated("vtep-d", "False", conditions.ReasonOverlap, "vtep-b")
	for _, hs := range nodes {
		expectAllocated(hs.Name, "True", conditions.ReasonAllocated, hs.Spec.Subnet)
	}
}

func TestExhaustionAndRecovery(t *testing.T) {
	resetCluster(t)
	createClusterNetwork(t, "10.128.0.0/22", 24) // four subnets
	startController(t, controllerOpts{})
	createNodes(t, "full", 6)
	g := NewWithT(t)

	var waiting []string
	g.Eventually(func(g Gomega) {
		list := &vxflowv1alpha1.HostSubnetList{}
		g.Expect(k8s.List(context.Background(), list)).To(Succeed())
		g.Expect(list.Items).To(HaveLen(4))
		has := map[string]bool{}
		for _, hs := range list.Items {
			has[hs.Name] = true
		}
		waiting = nil
		for i := range 6 {
			if n := fmt.Sprintf("full-%d", i); !has[n] {
				waiting = append(waiting, n)
			}
		}
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	g.Eventually(func(g Gomega) {
		cn := getClusterNetwork(g)
		d := condition(cn.Status.Conditions, vxflowv1alpha1.ConditionDegraded)
		g.Expect(d.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(d.Reason).To(Equal(conditions.ReasonPoolExhausted))
		g.Expect(d.Message).To(ContainSubstring("4 of 4 subnets allocated; 2 nodes wait"))
		g.Expect(condition(cn.Status.Conditions, vxflowv1alpha1.ConditionReady)).To(HaveField("Reason", conditions.ReasonPoolFull))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	for _, name := range waiting {
		node := &corev1.Node{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKey{Name: name}, node)).To(Succeed())
		g.Eventually(func(g Gomega) {
			g.Expect(eventsFor(g, string(node.UID))).To(ContainElement(And(
				HaveField("Reason", eventSubnetPoolExhausted), HaveField("Note", ContainSubstring("4 of 4 subnets allocated")))))
		}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	}

	// Recovery by freeing: a deleted Node's subnet goes to one of the waiting Nodes.
	owner := &corev1.Node{}
	for i := range 6 {
		if n := fmt.Sprintf("full-%d", i); !strings.Contains(strings.Join(waiting, ","), n) {
			g.Expect(k8s.Get(context.Background(), client.ObjectKey{Name: n}, owner)).To(Succeed())
			break
		}
	}
	freed := getHostSubnet(g, owner.Name).Spec.Subnet
	g.Expect(k8s.Delete(context.Background(), owner)).To(Succeed())
	g.Eventually(func(g Gomega) {
		got := 0
		for _, n := range waiting {
			hs := &vxflowv1alpha1.HostSubnet{}
			if k8s.Get(context.Background(), client.ObjectKey{Name: n}, hs) == nil {
				g.Expect(hs.Spec.Subnet).To(Equal(freed))
				got++
			}
		}
		g.Expect(got).To(Equal(1))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	// Recovery by growth: adding a range serves the last waiting Node and adds capacity.
	g.Expect(setClusterNetworks(t, "10.128.0.0/22", 24, "10.200.0.0/23", 24)).To(Succeed())
	g.Eventually(func(g Gomega) {
		for _, n := range waiting {
			hs := getHostSubnet(g, n)
			g.Expect(allocatedCondition(hs).Status).To(Equal(metav1.ConditionTrue))
		}
		cn := getClusterNetwork(g)
		g.Expect(cn.Status.SubnetsTotal).To(Equal(int64(6)))
		g.Expect(cn.Status.SubnetsAllocated).To(Equal(int64(5)))
		g.Expect(cn.Status.ObservedGeneration).To(Equal(cn.Generation))
		g.Expect(condition(cn.Status.Conditions, vxflowv1alpha1.ConditionDegraded)).To(HaveField("Status", metav1.ConditionFalse))
		g.Expect(condition(cn.Status.Conditions, vxflowv1alpha1.ConditionReady)).To(HaveField("Status", metav1.ConditionTrue))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	list := &vxflowv1alpha1.HostSubnetList{}
	g.Expect(k8s.List(context.Background(), list)).To(Succeed())
	expectNoOverlap(g, list.Items, "10.128.0.0/22", "10.200.0.0/23")
}

func TestClusterNetworkRangeRemoved(t *testing.T) {
	resetCluster(t)
	createClusterNetwork(t, "10.128.0.0/23", 24, "10.200.0.0/24", 25)
	startController(t, controllerOpts{})
	createNodes(t, "rr", 3)
	g := NewWithT(t)
	var inB string
	g.Eventually(func(g Gomega) {
		list := &vxflowv1alpha1.HostSubnetList{}
		g.Expect(k8s.List(context.Background(), list)).To(Succeed())
		g.Expect(list.Items).To(HaveLen(3))
		for _, hs := range list.Items {
			if hs.Spec.Subnet == "10.200.0.0/25" {
				inB = hs.Name
			}
		}
		g.Expect(inB).NotTo(BeEmpty())
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	// The schema refuses to change the hostPrefix of a range in use.
	err := setClusterNetworks(t, "10.128.0.0/23", 25, "10.200.0.0/24", 25)
	g.Expect(err).To(MatchError(ContainSubstring("hostPrefix of an existing cluster network cannot change")))

	// Removing a range that a live subnet uses is reported, and nothing is deleted.
	g.Expect(setClusterNetworks(t, "10.128.0.0/23", 24)).To(Succeed())
	g.Eventually(func(g Gomega) {
		cn := getClusterNetwork(g)
		d := condition(cn.Status.Conditions, vxflowv1alpha1.ConditionDegraded)
		g.Expect(d.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(d.Reason).To(Equal(conditions.ReasonRangeInUse))
		g.Expect(d.Message).To(ContainSubstring(inB + " (10.200.0.0/25)"))
		g.Expect(cn.Status.ObservedGeneration).To(Equal(cn.Generation))
		c := allocatedCondition(getHostSubnet(g, inB))
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(c.Reason).To(Equal(conditions.ReasonOutsideClusterNetwork))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())

	// Putting the range back heals it.
	g.Expect(setClusterNetworks(t, "10.128.0.0/23", 24, "10.200.0.0/24", 25)).To(Succeed())
	g.Eventually(func(g Gomega) {
		cn := getClusterNetwork(g)
		g.Expect(condition(cn.Status.Conditions, vxflowv1alpha1.ConditionDegraded)).To(HaveField("Status", metav1.ConditionFalse))
		g.Expect(allocatedCondition(getHostSubnet(g, inB)).Status).To(Equal(metav1.ConditionTrue))
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
}

func TestRestartReallocatesNothing(t *testing.T) {
	resetCluster(t)
	createClusterNetwork(t, "10.128.0.0/14", 23)
	stop := startController(t, controllerOpts{identity: "before"})
	createNodes(t, "keep", 20)
	before := map[string]vxflowv1alpha1.HostSubnet{}
	g := NewWithT(t)
	g.Eventually(func(g Gomega) {
		list := &vxflowv1alpha1.HostSubnetList{}
		g.Expect(k8s.List(context.Background(), list)).To(Succeed())
		g.Expect(list.Items).To(HaveLen(20))
		for _, hs := range list.Items {
			g.Expect(allocatedCondition(&hs).Status).To(Equal(metav1.ConditionTrue))
			before[hs.Name] = hs
		}
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	stop()

	// Watch from here: the new controller must create only the late Node's HostSubnet and delete nothing.
	w, err := watchHostSubnets(t)
	g.Expect(err).NotTo(HaveOccurred())
	startController(t, controllerOpts{identity: "after"})
	createNode(t, "late", "192.168.150.1")
	late := waitAllocated(t, "late")
	g.Expect(late.Spec.Subnet).To(Equal("10.128.40.0/23"), "the 21st subnet, after the 20 the first controller gave")
	list := &vxflowv1alpha1.HostSubnetList{}
	g.Expect(k8s.List(context.Background(), list)).To(Succeed())
	g.Expect(list.Items).To(HaveLen(21))
	for _, hs := range list.Items {
		if hs.Name == "late" {
			continue
		}
		g.Expect(hs.UID).To(Equal(before[hs.Name].UID), "HostSubnet %s was re-created", hs.Name)
		g.Expect(hs.Spec).To(Equal(before[hs.Name].Spec))
	}
	added, deleted, err := w.stop()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(added).To(ConsistOf("late"))
	g.Expect(deleted).To(BeEmpty())
}

// hostSubnetWatch records every HostSubnet added or deleted after it started, and every object it saw. The
// API server may close a watch (a busy one falls behind); it is resumed from the last resourceVersion seen.
type hostSubnetWatch struct {
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	err     error
	added   []string
	deleted []string
	subnets []vxflowv1alpha1.HostSubnet
	// onEvent, when set before start, sees every event in order.
	onEvent func(watch.EventType, *vxflowv1alpha1.HostSubnet)
}

func watchHostSubnets(t *testing.T) (*hostSubnetWatch, error) {
	return startHostSubnetWatch(t, nil)
}

func startHostSubnetWatch(t *testing.T, onEvent func(watch.EventType, *vxflowv1alpha1.HostSubnet)) (*hostSubnetWatch, error) {
	list := &vxflowv1alpha1.HostSubnetList{}
	if err := k8s.List(context.Background(), list); err != nil {
		return nil, err
	}
	wc, err := client.NewWithWatch(testCfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	hw := &hostSubnetWatch{cancel: cancel, done: make(chan struct{}), onEvent: onEvent}
	rv := list.ResourceVersion
	go func() {
		defer close(hw.done)
		for ctx.Err() == nil {
			w, err := wc.Watch(ctx, &vxflowv1alpha1.HostSubnetList{}, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv}})
			if err != nil {
				if ctx.Err() == nil {
					hw.fail(fmt.Errorf("failed to watch HostSubnets from %s: %w", rv, err))
				}
				return
			}
			for ev := range w.ResultChan() {
				if ev.Type == watch.Error {
					if st, ok := ev.Object.(*metav1.Status); ctx.Err() == nil && ok && st.Code == http.StatusGone {
						hw.fail(fmt.Errorf("watch expired before it could resume: %s", st.Message))
						w.Stop()
						return
					}
					break // Resume (or, when cancelled, end).
				}
				hs, ok := ev.Object.(*vxflowv1alpha1.HostSubnet)
				if !ok {
					continue
				}
				rv = hs.ResourceVersion
				hw.mu.Lock()
				switch ev.Type {
				case watch.Added:
					hw.added = append(hw.added, hs.Name)
					hw.subnets = append(hw.subnets, *hs)
				case watch.Deleted:
					hw.deleted = append(hw.deleted, hs.Name)
				}
				hw.mu.Unlock()
				if hw.onEvent != nil {
					hw.onEvent(ev.Type, hs)
				}
			}
			w.Stop()
		}
	}()
	t.Cleanup(func() { cancel(); <-hw.done })
	return hw, nil
}

func (hw *hostSubnetWatch) fail(err error) {
	hw.mu.Lock()
	defer hw.mu.Unlock()
	hw.err = err
}

// stop ends the watch and returns what it saw; a watch failure fails the caller.
func (hw *hostSubnetWatch) stop() (added, deleted []string, err error) {
	hw.cancel()
	<-hw.done
	hw.mu.Lock()
	defer hw.mu.Unlock()
	return hw.added, hw.deleted, hw.err
}

func TestTwoControllersNoOverlap(t *testing.T) {
	resetCluster(t)
	createClusterNetwork(t, "10.128.0.0/14", 23)
	// Leader election off: only the allocation lock and the uncached re-list keep them apart.
	w, err := watchHostSubnets(t)
	if err != nil {
		t.Fatal(err)
	}
	startController(t, controllerOpts{identity: "one"})
	startController(t, controllerOpts{identity: "two"})
	createNodes(t, "race", 200)
	g := NewWithT(t)
	g.Eventually(func(g Gomega) {
		list := &vxflowv1alpha1.HostSubnetList{}
		g.Expect(k8s.List(context.Background(), list)).To(Succeed())
		g.Expect(list.Items).To(HaveLen(200))
		for _, hs := range list.Items {
			g.Expect(allocatedCondition(&hs).Status).To(Equal(metav1.ConditionTrue), "HostSubnet %s", hs.Name)
		}
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	added, deleted, err := w.stop()
	g.Expect(err).NotTo(HaveOccurred())
	// Every HostSubnet ever created, not only the survivors, is distinct and disjoint.
	g.Expect(added).To(HaveLen(200))
	g.Expect(deleted).To(BeEmpty())
	expectNoOverlap(g, w.subnets, "10.128.0.0/14")
	lease := &coordinationv1.Lease{}
	g.Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: lockNamespace, Name: "vxflow-subnet-allocator"}, lease)).To(Succeed())
	t.Logf("allocation lock changed hands %d times", *lease.Spec.LeaseTransitions)
}

func TestTwoControllersLeaderElection(t *testing.T) {
	resetCluster(t)
	createClusterNetwork(t, "10.128.0.0/14", 23)
	g := NewWithT(t)
	// "one" starts first and becomes the leader before "two" starts.
	stopOne := startController(t, controllerOpts{identity: "one", leaderElection: true})
	lease := &coordinationv1.Lease{}
	g.Eventually(func(g Gomega) {
		g.Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: lockNamespace, Name: "vxflow-controller"}, lease)).To(Succeed())
		g.Expect(ptr.Deref(lease.Spec.HolderIdentity, "")).NotTo(BeEmpty())
	}).WithTimeout(timeout).WithPolling(poll).Should(Succeed())
	leader := *lease.Spec.HolderIdentity
	startController(t, controllerOpts{identity: "two", leaderElection: true})
	createNodes(t, "le", 20)
	for i := range 20 {
		waitAllocated(t, fmt.Sprintf("le-%d", i))
	}
	// The leader steps down; the other takes over and serves new Nodes.
	stopOne()
	createNode(t, "after-failover", "192.168.150.9")
	hs := waitAllocated(t, "after-failover")
	g.Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: lockNamespace, Name: "vxflow-controller"}, lease)).To(Succeed())
	g.Expect(*lease.Spec.HolderIdentity).NotTo(Equal(leader), "the second controller should lead now")
	list := &vxflowv1alpha1.HostSubnetList{}
	g.Expect(k8s.List(context.Background(), list)).To(Succeed())
	g.Expect(list.Items).To(HaveLen(21))
	expectNoOverlap(g, list.Items, "10.128.0.0/14")
	g.Expect(hs.Spec.Subnet).To(Equal("10.128.40.0/23"))
}

// TestClusterNetworkCreatedLast is the lab's order: Nodes and the controller exist before ClusterNetwork
// default. Every Node must get a subnet once it appears, even when a Node's reconcile runs before the pool
// has learnt the new ClusterNetwork (the reconcile asks again instead of dropping the Node).
func TestClusterNetworkCreatedLast(t *testing.T) {
	resetCluster(t)
	startController(t, controllerOpts{})
	names := []string{"late-1", "late-2", "late-3", "late-4", "late-5"}
	for i, name := range names {
		createNode(t, name, fmt.Sprintf("192.168.100.%d", 21+i))
	}
	createClusterNetwork(t, "10.128.0.0/14", 23)
	subnets := map[string]string{}
	for _, name := range names {
		hs := waitAllocated(t, name)
		if other, dup := subnets[hs.Spec.Subnet]; dup {
			t.Errorf("%s and %s share subnet %s", name, other, hs.Spec.Subnet)
		}
		subnets[hs.Spec.Subnet] = name
	}
}
