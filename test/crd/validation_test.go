package crd

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

const validClusterNetwork = `
apiVersion: network.vxflow.io/v1alpha1
kind: ClusterNetwork
metadata: {name: default}
spec:
  clusterNetworks:
  - {cidr: 10.128.0.0/14, hostPrefix: 23}
  serviceNetwork: 172.30.0.0/16
`

const validHostSubnet = `
apiVersion: network.vxflow.io/v1alpha1
kind: HostSubnet
metadata: {name: node1}
spec: {host: node1, hostIP: 192.168.100.11, subnet: 10.128.2.0/23}
`

func parse(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatalf("failed to parse test object: %v\n%s", err, doc)
	}
	return u
}

// mutate returns a copy of doc with fn applied to its object, so each case states only what it breaks.
func mutate(t *testing.T, doc string, fn func(obj map[string]any)) *unstructured.Unstructured {
	t.Helper()
	u := parse(t, doc)
	fn(u.Object)
	return u
}

func spec(obj map[string]any) map[string]any { return obj["spec"].(map[string]any) }

func clusterNetworks(entries ...map[string]any) []any {
	out := make([]any, 0, len(entries))
	for _, e := range entries {
		out = append(out, e)
	}
	return out
}

func entry(cidr string, hostPrefix int64) map[string]any {
	return map[string]any{"cidr": cidr, "hostPrefix": hostPrefix}
}

func TestInvalidObjectsOnCreate(t *testing.T) {
	cases := []struct {
		name string
		obj  func(t *testing.T) *unstructured.Unstructured
		want []string
	}{
		{"overlapping cluster CIDRs", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validClusterNetwork, func(o map[string]any) {
				spec(o)["clusterNetworks"] = clusterNetworks(entry("10.128.0.0/14", 23), entry("10.130.0.0/16", 24))
			})
		}, []string{"clusterNetworks must not overlap each other"}},
		{"non-canonical cluster CIDR", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validClusterNetwork, func(o map[string]any) {
				spec(o)["clusterNetworks"] = clusterNetworks(entry("10.128.0.1/14", 23))
			})
		}, []string{"cidr 10.128.0.1/14 is not canonical", "the bits after the prefix length must be zero"}},
		{"cluster CIDR is not a CIDR", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validClusterNetwork, func(o map[string]any) {
				spec(o)["clusterNetworks"] = clusterNetworks(entry("10.128.0.0-14", 23))
			})
		}, []string{"cidr 10.128.0.0-14 is not a CIDR"}},
		{"IPv6 cluster CIDR", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validClusterNetwork, func(o map[string]any) {
				spec(o)["clusterNetworks"] = clusterNetworks(entry("fd00:10::/48", 64))
			})
		}, []string{"cidr fd00:10::/48 is not IPv4"}},
		{"hostPrefix equal to the CIDR prefix", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validClusterNetwork, func(o map[string]any) {
				spec(o)["clusterNetworks"] = clusterNetworks(entry("10.128.0.0/14", 14))
			})
		}, []string{"hostPrefix must be longer than the prefix length of 10.128.0.0/14"}},
		{"hostPrefix shorter than the CIDR prefix", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validClusterNetwork, func(o map[string]any) {
				spec(o)["clusterNetworks"] = clusterNetworks(entry("10.128.0.0/14", 12))
			})
		}, []string{"hostPrefix must be longer than the prefix length of 10.128.0.0/14"}},
		{"hostPrefix 31", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validClusterNetwork, func(o map[string]any) {
				spec(o)["clusterNetworks"] = clusterNetworks(entry("10.128.0.0/14", 31))
			})
		}, []string{"hostPrefix", "less than or equal to 30"}},
		{"no cluster networks", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validClusterNetwork, func(o map[string]any) { spec(o)["clusterNetworks"] = []any{} })
		}, []string{"clusterNetworks", "at least 1 items"}},
		{"duplicate cluster CIDR", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validClusterNetwork, func(o map[string]any) {
				spec(o)["clusterNetworks"] = clusterNetworks(entry("10.128.0.0/14", 23), entry("10.128.0.0/14", 24))
			})
		}, []string{"Duplicate value", "10.128.0.0/14"}},
		{"service network inside a cluster CIDR", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validClusterNetwork, func(o map[string]any) { spec(o)["serviceNetwork"] = "10.129.0.0/16" })
		}, []string{"serviceNetwork 10.129.0.0/16 overlaps a cluster network"}},
		{"service network containing a cluster CIDR", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validClusterNetwork, func(o map[string]any) { spec(o)["serviceNetwork"] = "10.0.0.0/8" })
		}, []string{"serviceNetwork 10.0.0.0/8 overlaps a cluster network"}},
		{"non-canonical service network", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validClusterNetwork, func(o map[string]any) { spec(o)["serviceNetwork"] = "172.30.0.1/16" })
		}, []string{"serviceNetwork 172.30.0.1/16 is not canonical", "the bits after the prefix length must be zero"}},
		{"service network is not a CIDR", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validClusterNetwork, func(o map[string]any) { spec(o)["serviceNetwork"] = "172.30.0.0" })
		}, []string{"serviceNetwork 172.30.0.0 is not a CIDR"}},
		{"service network missing", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validClusterNetwork, func(o map[string]any) { delete(spec(o), "serviceNetwork") })
		}, []string{"spec.serviceNetwork", "Required value"}},
		{"vxlanPort 0", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validClusterNetwork, func(o map[string]any) { spec(o)["vxlanPort"] = int64(0) })
		}, []string{"spec.vxlanPort", "greater than or equal to 1"}},
		{"vxlanPort 65536", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validClusterNetwork, func(o map[string]any) { spec(o)["vxlanPort"] = int64(65536) })
		}, []string{"spec.vxlanPort", "less than or equal to 65535"}},
		{"MTU 100", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validClusterNetwork, func(o map[string]any) { spec(o)["mtu"] = int64(100) })
		}, []string{"spec.mtu", "greater than or equal to 576"}},
		{"MTU 70000", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validClusterNetwork, func(o map[string]any) { spec(o)["mtu"] = int64(70000) })
		}, []string{"spec.mtu", "less than or equal to 65000"}},
		{"unsupported mode", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validClusterNetwork, func(o map[string]any) { spec(o)["mode"] = "Multitenant" })
		}, []string{"spec.mode", `Unsupported value: "Multitenant"`, `"Subnet"`}},
		{"ClusterNetwork not named default", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validClusterNetwork, func(o map[string]any) { o["metadata"] = map[string]any{"name": "prod"} })
		}, []string{"ClusterNetwork must be named default, not prod"}},
		{"hostIP is IPv6", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validHostSubnet, func(o map[string]any) { spec(o)["hostIP"] = "fd00::11" })
		}, []string{"hostIP fd00::11 is not an IPv4 address"}},
		{"hostIP is not an address", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validHostSubnet, func(o map[string]any) { spec(o)["hostIP"] = "300.1.2.3" })
		}, []string{"hostIP 300.1.2.3 is not an IPv4 address"}},
		{"hostIP is loopback", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validHostSubnet, func(o map[string]any) { spec(o)["hostIP"] = "127.0.0.1" })
		}, []string{"hostIP 127.0.0.1 cannot carry VXLAN"}},
		{"hostIP is multicast", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validHostSubnet, func(o map[string]any) { spec(o)["hostIP"] = "224.0.0.5" })
		}, []string{"hostIP 224.0.0.5 cannot carry VXLAN"}},
		{"non-canonical subnet", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validHostSubnet, func(o map[string]any) { spec(o)["subnet"] = "10.128.2.1/23" })
		}, []string{"subnet 10.128.2.1/23 is not canonical", "the bits after the prefix length must be zero"}},
		{"subnet too small", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validHostSubnet, func(o map[string]any) { spec(o)["subnet"] = "10.128.2.0/31" })
		}, []string{"subnet 10.128.2.0/31 is too small"}},
		{"subnet is not a CIDR", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validHostSubnet, func(o map[string]any) { spec(o)["subnet"] = "10.128.2.0" })
		}, []string{"subnet 10.128.2.0 is not a CIDR"}},
		{"host differs from name", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validHostSubnet, func(o map[string]any) { spec(o)["host"] = "node2" })
		}, []string{"spec.host node2 must equal the HostSubnet name node1"}},
		{"hostIP missing", func(t *testing.T) *unstructured.Unstructured {
			return mutate(t, validHostSubnet, func(o map[string]any) { delete(spec(o), "hostIP") })
		}, []string{"spec.hostIP", "Required value"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := tc.obj(t)
			err := k8sClient.Create(context.Background(), obj)
			if err == nil {
				_ = k8sClient.Delete(context.Background(), obj)
				t.Fatalf("the API server accepted an invalid object; want an error containing %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestInvalidUpdates(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		create string
		update func(obj map[string]any)
		want   []string
	}{
		{"hostPrefix of an existing cluster network changed", validClusterNetwork, func(o map[string]any) {
			spec(o)["clusterNetworks"] = clusterNetworks(entry("10.128.0.0/14", 24))
		}, []string{"the hostPrefix of an existing cluster network cannot change"}},
		{"mode changed after creation", validClusterNetwork, func(o map[string]any) {
			spec(o)["mode"] = "Multitenant"
		}, []string{"spec.mode", `Unsupported value: "Multitenant"`}},
		{"subnet changed", validHostSubnet, func(o map[string]any) {
			spec(o)["subnet"] = "10.128.4.0/23"
		}, []string{"subnet cannot change"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := parse(t, tc.create)
			if err := k8sClient.Create(ctx, obj); err != nil {
				t.Fatalf("failed to create the valid object: %v", err)
			}
			t.Cleanup(func() { _ = k8sClient.Delete(ctx, obj) })
			tc.update(obj.Object)
			err := k8sClient.Update(ctx, obj)
			if err == nil {
				t.Fatalf("the API server accepted an invalid update; want an error containing %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestValidObjectsAreDefaulted(t *testing.T) {
	ctx := context.Background()
	obj := parse(t, validClusterNetwork)
	if err := k8sClient.Create(ctx, obj); err != nil {
		t.Fatalf("failed to create a valid ClusterNetwork: %v", err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(ctx, obj) })
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(obj.GroupVersionKind())
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), got); err != nil {
		t.Fatalf("failed to read the ClusterNetwork back: %v", err)
	}
	if port, _, _ := unstructured.NestedInt64(got.Object, "spec", "vxlanPort"); port != 4789 {
		t.Errorf("spec.vxlanPort defaulted to %d, want 4789", port)
	}
	if mode, _, _ := unstructured.NestedString(got.Object, "spec", "mode"); mode != "Subnet" {
		t.Errorf("spec.mode defaulted to %q, want Subnet", mode)
	}
	if _, found, _ := unstructured.NestedFieldNoCopy(got.Object, "spec", "mtu"); found {
		t.Errorf("spec.mtu was defaulted; it must stay unset so each node derives it from its underlay")
	}
	// Adding a range is allowed: it only adds capacity.
	if err := unstructured.SetNestedSlice(got.Object, clusterNetworks(entry("10.128.0.0/14", 23), entry("10.200.0.0/16", 24)), "spec", "clusterNetworks"); err != nil {
		t.Fatal(err)
	}
	if err := k8sClient.Update(ctx, got); err != nil {
		t.Errorf("adding a cluster network was refused: %v", err)
	}
}
