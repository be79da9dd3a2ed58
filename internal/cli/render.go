package cli

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/vxflow/vxflow/api/v1alpha1"
	"github.com/vxflow/vxflow/internal/model"
	"github.com/vxflow/vxflow/internal/render/nftables"
	"github.com/vxflow/vxflow/internal/render/openflow"
)

// OFPortAnnotation gives a Pod's br0 ofport to `vxflowctl render`; the agent never reads it (on a live node
// Open vSwitch assigns ofports), it only lets a manifest reproduce a node exactly.
const OFPortAnnotation = "network.vxflow.io/ofport"

// Defaults of the node facts `render` cannot read from the API.
const (
	// DefaultUnderlayMTU is the underlay MTU assumed when neither a flag nor the HostSubnet's status gives it.
	DefaultUnderlayMTU = 1500
	// DefaultDatapath is the agent's own default datapath type.
	DefaultDatapath = model.DatapathSystem
)

// RenderOptions are the node facts the API does not hold; zero values take the documented defaults.
type RenderOptions struct {
	// Node is the node (and HostSubnet) name.
	Node string
	// UnderlayMTU is the MTU of the interface carrying VXLAN; 0: the HostSubnet's status.agent.mtu + 50 when
	// the ClusterNetwork leaves mtu unset and the status has it, else DefaultUnderlayMTU.
	UnderlayMTU int
	// Datapath is br0's datapath type; "": the HostSubnet's status.agent.datapathType, else DefaultDatapath.
	Datapath model.DatapathType
}

// NodeState is everything the agent would program on one node, computed by the agent's own model and
// renderers.
type NodeState struct {
	// Node is the node name.
	Node string
	// View is the validated node view the flows are rendered from.
	View *model.NodeView
	// Flows are br0's flows.
	Flows openflow.FlowSet
	// Services is the validated Service set the nftables table is rendered from.
	Services *model.ServiceSet
	// Ruleset is table ip vxflow.
	Ruleset *nftables.Ruleset
	// StateHash identifies Flows exactly as the agent's status.agent.stateHash does.
	StateHash string
	// Facts says which node facts were used and where each came from.
	Facts RenderedFacts
	// Pods are the local pods with the ofports used and where each came from.
	Pods []RenderedPod
	// Skipped are the objects left out of the node's state, located in the manifests when possible.
	Skipped []SkippedObject
}

// RenderedFacts are the node facts of a render, each with its origin ("flag", "status", "default").
type RenderedFacts struct {
	NodeIP            netip.Addr
	UnderlayMTU       int
	UnderlayMTUOrigin string
	Datapath          model.DatapathType
	DatapathOrigin    string
	// NFTLayout is the agent's nftables endpoint layout from status.agent.nftLayout; empty when it reports
	// none, which renders the default (EndpointMap).
	NFTLayout string `json:",omitempty"`
}

// RenderedPod is a local pod of a render and the origin of its ofport ("annotation" or "assigned").
type RenderedPod struct {
	Key        string
	IP         netip.Addr
	OFPort     int32
	PortOrigin string
}

// SkippedObject is a problem that left an object out of the node's state while the rest was rendered.
type SkippedObject struct {
	Path   string
	Detail string
	Source *Source
}

// String prints the problem with its position.
func (s SkippedObject) String() string {
	if s.Source != nil {
		return fmt.Sprintf("%s: %s: %s", s.Source, s.Path, s.Detail)
	}
	return s.Path + ": " + s.Detail
}

// RenderNode computes the flows and nftables ruleset the agent would program on opts.Node from the objects
// in st, with the same model and renderers as the agent.
func RenderNode(st *ClusterState, opts RenderOptions) (*NodeState, error) {
	if opts.Node == "" {
		return nil, errors.New("failed to render: --node is required")
	}
	if st.ClusterNetwork == nil {
		return nil, errors.New("failed to render: the manifests hold no ClusterNetwork named default")
	}
	hs := findHostSubnet(st.HostSubnets, opts.Node)
	if hs == nil {
		names := make([]string, 0, len(st.HostSubnets))
		for _, h := range st.HostSubnets {
			names = append(names, h.Name)
		}
		return nil, fmt.Errorf("failed to render: no HostSubnet named %q in the manifests (HostSubnets: %s)",
			opts.Node, orNone(strings.Join(names, ", ")))
	}
	nodeIP, err := netip.ParseAddr(hs.Spec.HostIP)
	if err != nil {
		return nil, st.located(fmt.Sprintf("hostSubnets[%s].spec.hostIP", hs.Name), fmt.Sprintf("%q is not an IP address", hs.Spec.HostIP))
	}
	facts := nodeFacts(st.ClusterNetwork, hs, opts)
	facts.NodeIP = nodeIP

	pods, rendered, skipped := localPods(st, opts.Node)
	view, err := model.BuildNodeView(model.NodeInput{
		ClusterNetwork: st.ClusterNetwork,
		HostSubnets:    st.HostSubnets,
		NodeName:       opts.Node,
		Facts:          model.NodeFacts{NodeIP: nodeIP, UnderlayMTU: facts.UnderlayMTU, Datapath: facts.Datapath},
		Pods:           pods,
	})
	if err != nil {
		var ie *model.InvalidInputError
		if errors.As(err, &ie) {
			msgs := make([]string, 0, len(ie.Errors))
			for _, fe := range ie.Errors {
				msgs = append(msgs, st.skipped(fe).String())
			}
			return nil, fmt.Errorf("failed to render node %s: %s", opts.Node, strings.Join(msgs, "; "))
		}
		return nil, fmt.Errorf("failed to render node %s: %w", opts.Node, err)
	}
	flows, err := openflow.Render(view)
	if err != nil {
		return nil, fmt.Errorf("failed to render the flows of node %s: %w", opts.Node, err)
	}
	services, err := model.BuildServices(model.NewServiceInput(model.ServiceNodeFromView(view), st.Services, st.EndpointSlices))
	if err != nil {
		return nil, fmt.Errorf("failed to build the Services of node %s: %w", opts.Node, err)
	}
	ns := &NodeState{
		Node: opts.Node, View: view, Flows: flows, Services: services,
		Ruleset:   nftables.NewRenderer(nftLayoutOptions(facts.NFTLayout)).Render(services),
		StateHash: StateHash(flows), Facts: facts, Skipped: skipped,
	}
	for _, fe := range view.Skipped {
		ns.Skipped = append(ns.Skipped, st.skipped(fe))
	}
	for _, fe := range services.Skipped {
		ns.Skipped = append(ns.Skipped, st.skipped(fe))
	}
	for _, p := range view.LocalPods {
		if r, ok := rendered[p.Key()]; ok {
			ns.Pods = append(ns.Pods, r)
		}
	}
	return ns, nil
}

// StateHash is the agent's identification of a rendered flow set (HostSubnet status.agent.stateHash): the
// first 16 hex digits of the SHA-256 of the flows' add-flow lines, each followed by a newline.
func StateHash(flows openflow.FlowSet) string {
	h := sha256.New()
	for _, f := range flows {
		h.Write([]byte(f.String()))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// nodeFacts picks the underlay MTU and datapath: flag, else the node's own report in its HostSubnet
// status, else the default.
func nodeFacts(cn *v1alpha1.ClusterNetwork, hs *v1alpha1.HostSubnet, opts RenderOptions) RenderedFacts {
	f := RenderedFacts{UnderlayMTU: DefaultUnderlayMTU, UnderlayMTUOrigin: "default", Datapath: DefaultDatapath, DatapathOrigin: "default"}
	agent := hs.Status.Agent
	switch {
	case opts.UnderlayMTU > 0:
		f.UnderlayMTU, f.UnderlayMTUOrigin = opts.UnderlayMTU, "flag"
	case agent != nil && agent.MTU > 0 && cn.Spec.MTU == nil:
		f.UnderlayMTU, f.UnderlayMTUOrigin = int(agent.MTU)+model.VXLANOverhead, "status.agent.mtu + 50"
	}
	switch {
	case opts.Datapath != "":
		f.Datapath, f.DatapathOrigin = opts.Datapath, "flag"
	case agent != nil && agent.DatapathType != "":
		f.Datapath, f.DatapathOrigin = model.DatapathType(agent.DatapathType), "status.agent.datapathType"
	}
	if agent != nil {
		f.NFTLayout = agent.NFTLayout
	}
	return f
}

// nftLayoutOptions are the renderer options of the agent's reported nftables layout; an agent that reports
// none runs the default, EndpointMap.
func nftLayoutOptions(layout string) nftables.Options {
	switch layout {
	case v1alpha1.NFTLayoutInlineEndpoints:
		return nftables.Options{InlineEndpoints: true}
	case v1alpha1.NFTLayoutEndpointChains:
		return nftables.Options{}
	}
	return nftables.Options{EndpointMap: true}
}

// localPods turns the Pods scheduled on node that have an IP into the model's local pods: ofports from the
// OFPortAnnotation, the others assigned 3, 4, … in namespace/name order, skipping the annotated ones.
func localPods(st *ClusterState, node string) ([]model.LocalPod, map[string]RenderedPod, []SkippedObject) {
	var onNode []*corev1.Pod
	for i := range st.Pods {
		p := &st.Pods[i]
		if p.Spec.NodeName != node || p.Spec.HostNetwork || p.Status.PodIP == "" ||
			p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		onNode = append(onNode, p)
	}
	slices.SortFunc(onNode, func(a, b *corev1.Pod) int {
		return cmp.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	var skipped []SkippedObject
	ports := make(map[string]int32, len(onNode))
	used := map[int32]bool{}
	for _, p := range onNode {
		v, ok := p.Annotations[OFPortAnnotation]
		if !ok {
			continue
		}
		key := p.Namespace + "/" + p.Name
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < model.FirstPodOFPort || n > model.MaxOFPort {
			skipped = append(skipped, st.skipped(&model.FieldError{Path: "pods[" + key + "].metadata.annotations[" + OFPortAnnotation + "]",
				Detail: fmt.Sprintf("%q is not a pod ofport (%d-%d); assigned one instead", v, model.FirstPodOFPort, model.MaxOFPort)}))
			continue
		}
		ports[key] = int32(n)
		used[int32(n)] = true
	}
	next := int32(model.FirstPodOFPort)
	var pods []model.LocalPod
	rendered := make(map[string]RenderedPod, len(onNode))
	for _, p := range onNode {
		key := p.Namespace + "/" + p.Name
		origin := "annotation"
		port, ok := ports[key]
		if !ok {
			for used[next] {
				next++
			}
			port, origin = next, "assigned"
			used[next] = true
		}
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil {
			skipped = append(skipped, st.skipped(&model.FieldError{Path: "pods[" + key + "].status.podIP",
				Detail: fmt.Sprintf("%q is not an IP address", p.Status.PodIP)}))
			continue
		}
		pods = append(pods, model.LocalPod{Namespace: p.Namespace, Name: p.Name, SandboxID: string(p.UID), IP: ip, OFPort: port})
		rendered[key] = RenderedPod{Key: key, IP: ip, OFPort: port, PortOrigin: origin}
	}
	return pods, rendered, skipped
}

// skipped locates a model field error in the manifests.
func (st *ClusterState) skipped(fe *model.FieldError) SkippedObject {
	s := SkippedObject{Path: fe.Path, Detail: fe.Detail}
	if src, ok := st.fieldPathSource(fe.Path); ok {
		s.Source = &src
	}
	return s
}

// located returns an error for a field path, with its position when known.
func (st *ClusterState) located(path, detail string) error {
	return errors.New(st.skipped(&model.FieldError{Path: path, Detail: detail}).String())
}

func findHostSubnet(all []v1alpha1.HostSubnet, name string) *v1alpha1.HostSubnet {
	for i := range all {
		if all[i].Name == name {
			return &all[i]
		}
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
