package agent

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/vxflow/vxflow/internal/model"
)

// indexByService indexes EndpointSlices by their Service's namespace/name.
const indexByService = "service"

// serviceSelector is kube-proxy's: no Services of another proxy, no headless Services' slices.
func serviceSelector() (string, error) {
	noProxyName, err := labels.NewRequirement(model.LabelServiceProxyName, selection.DoesNotExist, nil)
	if err != nil {
		return "", err
	}
	noHeadless, err := labels.NewRequirement(corev1.IsHeadlessService, selection.DoesNotExist, nil)
	if err != nil {
		return "", err
	}
	return labels.NewSelector().Add(*noProxyName, *noHeadless).String(), nil
}

// StartServiceWatches starts the Service and EndpointSlice informers that feed p (protobuf, kube-proxy's
// label selector, objects trimmed to what the model reads), waits for them to sync and connects p to
// their stores. Every event marks its Service dirty in p.
func StartServiceWatches(ctx context.Context, cfg *rest.Config, p *ServiceProxy) error {
	cfg = rest.CopyConfig(cfg)
	// Protobuf, as kube-proxy uses: about half of JSON's decoding time and garbage for these lists.
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("failed to create the Service watch client: %w", err)
	}
	sel, err := serviceSelector()
	if err != nil {
		return fmt.Errorf("failed to build the Service label selector: %w", err)
	}
	// Informers of their own rather than a factory's: no namespace index (nothing here lists by
	// namespace), only the EndpointSlices' index by Service; and one plain list per type rather than a
	// streamed watch-list (2.5x slower for 20,000 objects in test/bench/kubeproxy) or pages of 500 (a
	// further third): the apiserver serves it from its watch cache, and every object is kept anyway.
	svcAPI, sliceAPI := cs.CoreV1().Services(metav1.NamespaceAll), cs.DiscoveryV1().EndpointSlices(metav1.NamespaceAll)
	svcInf := toolscache.NewSharedIndexInformer(selectedListWatch(sel, svcAPI.List, svcAPI.Watch),
		&corev1.Service{}, 0, toolscache.Indexers{})
	esInf := toolscache.NewSharedIndexInformer(selectedListWatch(sel, sliceAPI.List, sliceAPI.Watch),
		&discoveryv1.EndpointSlice{}, 0, toolscache.Indexers{
			indexByService: func(obj any) ([]string, error) {
				if key := sliceServiceKey(obj); key != "" {
					return []string{key}, nil
				}
				return nil, nil
			}})
	for _, inf := range []toolscache.SharedIndexInformer{svcInf, esInf} {
		if err := inf.SetTransform(trimForServiceModel); err != nil {
			return fmt.Errorf("failed to set the informers' transform: %w", err)
		}
	}
	if _, err := svcInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { p.Changed(objectKey(obj)) },
		UpdateFunc: func(_, obj any) {
			p.Changed(objectKey(obj))
		},
		DeleteFunc: func(obj any) { p.Changed(objectKey(obj)) },
	}); err != nil {
		return fmt.Errorf("failed to watch Services: %w", err)
	}
	if _, err := esInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { p.Changed(sliceServiceKey(obj)) },
		UpdateFunc: func(oldObj, obj any) {
			// A slice relabelled to another Service changes both.
			if o, n := sliceServiceKey(oldObj), sliceServiceKey(obj); o != n {
				p.Changed(o, n)
			} else {
				p.Changed(n)
			}
		},
		DeleteFunc: func(obj any) { p.Changed(sliceServiceKey(obj)) },
	}); err != nil {
		return fmt.Errorf("failed to watch EndpointSlices: %w", err)
	}
	go svcInf.Run(ctx.Done())
	go esInf.Run(ctx.Done())
	// Polled every few milliseconds rather than WaitForCacheSync's 100: the first sync starts as soon as
	// the lists are in.
	for !svcInf.HasSynced() || !esInf.HasSynced() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("failed to sync the Service and EndpointSlice informers: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	src := &informerSource{services: svcInf.GetIndexer(), slices: esInf.GetIndexer()}
	p.SetSource(src, src.triggerTimes)
	return nil
}

// listThenWatch makes a reflector list and then watch instead of streaming the initial state through a
// watch (client-go's WatchListClient).
type listThenWatch struct{ *toolscache.ListWatch }

// selectedListWatch lists one type in a single unpaginated request and watches it, both with the label
// selector sel.
func selectedListWatch[L runtime.Object](sel string, list func(context.Context, metav1.ListOptions) (L, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)) toolscache.ListerWatcher {
	return listThenWatch{&toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector, o.Limit = sel, 0
			return list(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = sel
			return watchFn(ctx, o)
		},
	}}
}

// IsWatchListSemanticsUnSupported is what client-go's reflector asks.
func (listThenWatch) IsWatchListSemanticsUnSupported() bool { return true }

// informerSource is the model.ServiceSource over the informers' stores: no copies, no lists.
type informerSource struct {
	services, slices toolscache.Indexer
}

var _ model.ServiceSource = (*informerSource)(nil)

func (s *informerSource) ServiceKeys() []string { return s.services.ListKeys() }

func (s *informerSource) Service(key string) *corev1.Service {
	obj, ok, err := s.services.GetByKey(key)
	if err != nil || !ok {
		return nil
	}
	svc, _ := obj.(*corev1.Service)
	return svc
}

func (s *informerSource) EndpointSlices(key string) []*discoveryv1.EndpointSlice {
	objs, err := s.slices.ByIndex(indexByService, key)
	if err != nil {
		return nil
	}
	out := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if es, ok := o.(*discoveryv1.EndpointSlice); ok {
			out = append(out, es)
		}
	}
	return out
}

// triggerTimes returns the last-change-trigger-times of a Service's EndpointSlices.
func (s *informerSource) triggerTimes(key string) []time.Time {
	var out []time.Time
	for _, es := range s.EndpointSlices(key) {
		if at, ok := model.LastChangeTriggerTime(es); ok {
			out = append(out, at)
		}
	}
	return out
}

// objectKey is the namespace/name of an object or of a deleted object's tombstone.
func objectKey(obj any) string {
	key, err := toolscache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return ""
	}
	return key
}

// sliceServiceKey is the namespace/name of an EndpointSlice's Service (also for a tombstone), empty when
// it has none.
func sliceServiceKey(obj any) string {
	if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return ""
	}
	name := es.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return ""
	}
	return es.Namespace + "/" + name
}

// trimForServiceModel drops, before an object is stored, every field the Service model never reads
// (managed fields, annotations but the trigger time, labels but the Service name, selectors, endpoint
// target references, hints, zones, addresses after the first), which is most of an EndpointSlice's size.
func trimForServiceModel(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Service:
		trimMeta(&o.ObjectMeta)
		o.Labels, o.Annotations = nil, nil
		o.Spec.Selector = nil
		o.Status.Conditions = nil
		for i := range o.Spec.Ports {
			o.Spec.Ports[i].AppProtocol = nil
		}
	case *discoveryv1.EndpointSlice:
		trimMeta(&o.ObjectMeta)
		if svc, ok := o.Labels[discoveryv1.LabelServiceName]; ok && len(o.Labels) > 1 {
			o.Labels = map[string]string{discoveryv1.LabelServiceName: svc}
		}
		if at, ok := o.Annotations[corev1.EndpointsLastChangeTriggerTime]; ok {
			if len(o.Annotations) > 1 {
				o.Annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: at}
			}
		} else {
			o.Annotations = nil
		}
		for i := range o.Ports {
			o.Ports[i].AppProtocol = nil
		}
		// The decoder grows the endpoint list by appending (capacity 16 for 10); an exact copy is what stays.
		if cap(o.Endpoints) > len(o.Endpoints) {
			o.Endpoints = slices.Clone(o.Endpoints)
		}
		for i := range o.Endpoints {
			e := &o.Endpoints[i]
			e.TargetRef, e.Hints, e.Zone, e.Hostname, e.DeprecatedTopology = nil, nil, nil, nil, nil
			if len(e.Addresses) > 1 {
				e.Addresses = e.Addresses[:1:1]
			}
			// Pointers shared by every endpoint: the conditions' two values and one string per node.
			c := &e.Conditions
			c.Ready, c.Serving, c.Terminating = sharedBool(c.Ready), sharedBool(c.Serving), sharedBool(c.Terminating)
			e.NodeName = nodeNames.intern(e.NodeName)
		}
	}
	return obj, nil
}

// trueValue and falseValue are what sharedBool points to.
var trueValue, falseValue = true, false

// sharedBool returns a pointer to a shared true or false (store objects are never modified).
func sharedBool(b *bool) *bool {
	switch {
	case b == nil:
		return nil
	case *b:
		return &trueValue
	}
	return &falseValue
}

// stringInterner hands out one *string per distinct value, for fields that repeat across objects.
type stringInterner struct {
	mu sync.Mutex
	m  map[string]*string
}

// nodeNames interns EndpointSlice endpoints' node names: a cluster has far fewer nodes than endpoints.
var nodeNames = &stringInterner{m: map[string]*string{}}

func (in *stringInterner) intern(s *string) *string {
	if s == nil {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if p, ok := in.m[*s]; ok {
		return p
	}
	if len(in.m) >= 100000 {
		return s // not node names after all: do not grow without bound
	}
	in.m[*s] = s
	return s
}

// trimMeta drops the metadata nothing in the agent reads; name, namespace, UID and resourceVersion stay.
func trimMeta(m *metav1.ObjectMeta) {
	m.ManagedFields, m.OwnerReferences, m.Finalizers, m.GenerateName = nil, nil, nil, ""
}
