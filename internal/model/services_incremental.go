package model

import (
	"cmp"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// ServiceSource hands a ServiceBuilder the current objects of one Service, so that Update reads only the
// Services that changed (an informer's store and an index of EndpointSlices by Service are one).
type ServiceSource interface {
	// ServiceKeys returns the namespace/name of every Service, for a full build.
	ServiceKeys() []string
	// Service returns the Service namespace/name, nil when it does not exist.
	Service(key string) *corev1.Service
	// EndpointSlices returns the EndpointSlices labelled for the Service namespace/name, in any order.
	EndpointSlices(key string) []*discoveryv1.EndpointSlice
}

// ServiceChanges says what one Update changed in the set.
type ServiceChanges struct {
	// Full is true when every Service was rebuilt: the first Update, or new node facts.
	Full bool
	// Keys are the namespace/names of the Services whose model was added, changed or removed; with Full,
	// every Service.
	Keys []string
}

// Update builds the ServiceSet incrementally: only the Services named in changed (those whose Service or
// EndpointSlices were added, modified or deleted since the previous Update) are read from src and rebuilt,
// in O(len(changed) log n). The first Update, an Update with node facts different from the previous one, and
// an Update after Build rebuild everything from src.ServiceKeys(). The result equals BuildServices on the
// same objects, with Skipped ordered by Service. The returned set shares the builder's sorted Service slice:
// it is valid until the next call, and must not be modified.
func (b *ServiceBuilder) Update(node ServiceNode, src ServiceSource, changed []string) (*ServiceSet, ServiceChanges, error) {
	n, errs := validateServiceNode(node)
	if len(errs) > 0 {
		return nil, ServiceChanges{}, &InvalidInputError{Errors: errs}
	}
	var ch ServiceChanges
	if !b.incremental || !b.node.Equal(&n) {
		b.cache, b.node, b.sorted, b.withSkips = make(map[string]*builtService), n, nil, make(map[string]bool)
		b.incremental = true
		ch.Full = true
		if src != nil {
			changed = src.ServiceKeys()
		} else {
			changed = nil
		}
	}
	// A full build appends and sorts once: inserting each Service in place would be quadratic.
	b.bulk = ch.Full
	seen := make(map[string]bool, len(changed))
	for _, key := range changed {
		if seen[key] {
			continue
		}
		seen[key] = true
		if b.refresh(key, src) {
			ch.Keys = append(ch.Keys, key)
		}
	}
	if b.bulk {
		slices.SortFunc(b.sorted, func(x, y Service) int { return CompareServices(&x, &y) })
		b.bulk = false
	}
	set := &ServiceSet{Node: b.node, Services: b.sorted}
	if len(b.withSkips) > 0 {
		for _, key := range slices.Sorted(maps.Keys(b.withSkips)) {
			set.Skipped = append(set.Skipped, b.cache[key].skipped...)
		}
	}
	return set, ch, nil
}

// refresh rebuilds one Service from src and puts it into the sorted list; it returns whether its model
// changed.
func (b *ServiceBuilder) refresh(key string, src ServiceSource) bool {
	var svc *corev1.Service
	if src != nil {
		svc = src.Service(key)
	}
	old := b.cache[key]
	if svc == nil || svc.Namespace+"/"+svc.Name != key {
		if old == nil {
			return false
		}
		delete(b.cache, key)
		delete(b.withSkips, key)
		if old.ok {
			b.remove(key)
		}
		return true
	}
	var es []*discoveryv1.EndpointSlice
	for _, s := range src.EndpointSlices(key) {
		if s != nil && s.AddressType == discoveryv1.AddressTypeIPv4 {
			es = append(es, s)
		}
	}
	sortSlicesByName(es)
	if old != nil && sameObject(old.svc, svc) && slices.EqualFunc(old.slices, es, sameObject) {
		return false
	}
	bs := newBuiltService(svc, es, key)
	b.cache[key] = bs
	if len(bs.skipped) > 0 {
		b.withSkips[key] = true
	} else {
		delete(b.withSkips, key)
	}
	switch {
	case bs.ok:
		b.put(bs.out)
	case old != nil && old.ok:
		b.remove(key)
	}
	return old == nil || old.ok != bs.ok || !old.out.Equal(&bs.out)
}

// find returns the position of namespace/name in the sorted list and whether it is there.
func (b *ServiceBuilder) find(namespace, name string) (int, bool) {
	return slices.BinarySearchFunc(b.sorted, [2]string{namespace, name}, func(s Service, k [2]string) int {
		return cmp.Or(cmp.Compare(s.Namespace, k[0]), cmp.Compare(s.Name, k[1]))
	})
}

// put inserts or replaces a Service in the sorted list (appends it during a full build).
func (b *ServiceBuilder) put(s Service) {
	if b.bulk {
		b.sorted = append(b.sorted, s)
		return
	}
	i, found := b.find(s.Namespace, s.Name)
	if found {
		b.sorted[i] = s
		return
	}
	b.sorted = slices.Insert(b.sorted, i, s)
}

// remove deletes a Service from the sorted list.
func (b *ServiceBuilder) remove(key string) {
	ns, name, _ := strings.Cut(key, "/")
	if i, found := b.find(ns, name); found {
		b.sorted = slices.Delete(b.sorted, i, i+1)
	}
}
