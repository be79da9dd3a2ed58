package wire

import (
	"reflect"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// TestParsePodArgs is a unit test of CNI_ARGS parsing.
func TestParsePodArgs(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    PodArgs
		wantErr bool
	}{
		{in: "", want: PodArgs{}},
		{in: "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u",
			want: PodArgs{Namespace: "ns1", Name: "web-0"}},
		{in: "K8S_POD_NAME=a;", want: PodArgs{Name: "a"}},
		{in: "K8S_POD_NAME", wantErr: true},
	} {
		got, err := ParsePodArgs(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParsePodArgs(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

// TestParseNetConf is a unit test of the configuration defaults and of both GC attachment keys.
func TestParseNetConf(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    NetConf
		wantErr bool
	}{{
		name: "defaults",
		in:   `{"cniVersion":"1.1.0","name":"vxflow","type":"vxflow-cni"}`,
		want: NetConf{PluginConf: types.PluginConf{CNIVersion: "1.1.0", Name: "vxflow", Type: "vxflow-cni"},
			Socket: DefaultSocketPath, TimeoutSeconds: DefaultTimeoutSeconds},
	}, {
		name: "explicit",
		in:   `{"cniVersion":"1.1.0","name":"n","type":"vxflow-cni","socket":"/s","timeoutSeconds":5,"cni.dev/valid-attachments":[{"containerID":"c","ifname":"eth0"}]}`,
		want: NetConf{PluginConf: types.PluginConf{CNIVersion: "1.1.0", Name: "n", Type: "vxflow-cni"}, Socket: "/s",
			TimeoutSeconds: 5, ValidAttachments: []types.GCAttachment{{ContainerID: "c", IfName: "eth0"}}},
	}, {
		name: "old GC key",
		in:   `{"cniVersion":"1.1.0","name":"n","type":"vxflow-cni","cni.dev/attachments":[]}`,
		want: NetConf{PluginConf: types.PluginConf{CNIVersion: "1.1.0", Name: "n", Type: "vxflow-cni"}, Socket: DefaultSocketPath,
			TimeoutSeconds: DefaultTimeoutSeconds, ValidAttachments: []types.GCAttachment{}, Attachments: []types.GCAttachment{}},
	}, {
		name: "negative timeout", in: `{"cniVersion":"1.1.0","timeoutSeconds":-1}`, wantErr: true,
	}, {
		name: "not json", in: `{`, wantErr: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseNetConf([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error %v", err, tc.wantErr)
			}
			if err == nil && !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("got %+v\nwant %+v", *got, tc.want)
			}
		})
	}
}
