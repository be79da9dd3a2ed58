package lab

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func makeTestPod(name, ip string, mutate ...func(*corev1.Pod)) corev1.Pod {
	p := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: "node2", Containers: []corev1.Container{{Name: "server",
			Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: 8080}}}}},
		Status: corev1.PodStatus{PodIP: ip, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	for _, m := range mutate {
		m(&p)
	}
	return p
}

func TestDesiredSlice(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "svc", UID: "u1"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{
				{Name: "named", Port: 80, TargetPort: intstr.FromString("web")},
				{Name: "number", Port: 81, TargetPort: intstr.FromInt32(9090)},
				{Name: "unset", Port: 82},
				{Name: "unknown-name", Port: 83, TargetPort: intstr.FromString("nope")},
			},
		},
	}
	pods := []corev1.Pod{
		makeTestPod("b", "10.128.2.3"),
		makeTestPod("a", "10.128.2.2"),
		makeTestPod("not-ready", "10.128.2.4", func(p *corev1.Pod) { p.Status.Conditions[0].Status = corev1.ConditionFalse }),
		makeTestPod("no-ip", ""),
		makeTestPod("other-app", "10.128.2.5", func(p *corev1.Pod) { p.Labels["app"] = "db" }),
		makeTestPod("other-ns", "10.128.2.6", func(p *corev1.Pod) { p.Namespace = "other" }),
	}
	got := desiredSlice(svc, pods)

	if got.Name != "svc-lab" || got.Labels["kubernetes.io/service-name"] != "svc" || got.OwnerReferences[0].UID != "u1" {
		t.Errorf("slice metadata %+v, want svc-lab owned by the Service with its service-name label", got.ObjectMeta)
	}
	wantPorts := map[string]int32{"named": 8080, "number": 9090, "unset": 82}
	if len(got.Ports) != len(wantPorts) {
		t.Errorf("got %d ports, want %d (a name no pod has is left out)", len(got.Ports), len(wantPorts))
	}
	for _, p := range got.Ports {
		if want, ok := wantPorts[*p.Name]; !ok || *p.Port != want || *p.Protocol != corev1.ProtocolTCP {
			t.Errorf("port %s = %d/%s, want %d/TCP", *p.Name, *p.Port, *p.Protocol, want)
		}
	}
	var names []string
	for _, e := range got.Endpoints {
		names = append(names, e.TargetRef.Name+"="+e.Addresses[0]+"/"+map[bool]string{true: "ready", false: "unready"}[*e.Conditions.Ready])
		if *e.NodeName != "node2" {
			t.Errorf("endpoint %s on node %q, want node2", e.TargetRef.Name, *e.NodeName)
		}
	}
	want := []string{"a=10.128.2.2/ready", "b=10.128.2.3/ready", "not-ready=10.128.2.4/unready"}
	if len(names) != len(want) {
		t.Fatalf("endpoints %v, want %v", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Errorf("endpoints %v, want %v (sorted by pod name)", names, want)
			break
		}
	}
}

func TestDesiredSliceNoPods(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "svc"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Name: "p", Port: 80}}},
	}
	got := desiredSlice(svc, nil)
	if got.Endpoints == nil || len(got.Endpoints) != 0 {
		t.Errorf("endpoints %v, want an empty, non-nil list (the API requires the field)", got.Endpoints)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"defaults", Config{}, false},
		{"digits", Config{Name: "e2e123"}, false},
		{"dash would make prefixes ambiguous", Config{Name: "vx-1"}, true},
		{"upper case", Config{Name: "Lab"}, true},
		{"too long", Config{Name: "abcdefghijklm"}, true},
		{"too many nodes", Config{Nodes: MaxNodes + 1}, true},
		{"relative state dir", Config{StateDir: "rel/dir"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Defaults().Validate()
			if (err != nil) != tt.wantErr {
				t.Errorf("Validate() = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestAddresses(t *testing.T) {
	if got := NodeIP(1).String(); got != "192.168.100.11" {
		t.Errorf("NodeIP(1) = %s", got)
	}
	if got := NodeIP(MaxNodes).String(); got != "192.168.100.99" || !UnderlayPrefix.Contains(NodeIP(MaxNodes)) {
		t.Errorf("NodeIP(MaxNodes) = %s, want the last address before the external client", got)
	}
	c := Config{Name: "vxl"}
	if got := c.PodNetNS("default", "a1"); got != "vxl-pod-default-a1" {
		t.Errorf("PodNetNS = %s", got)
	}
}
