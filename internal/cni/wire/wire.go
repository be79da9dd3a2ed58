package wire

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// Defaults shared by the plugin, the server and the conflist writer.
const (
	// DefaultSocketPath is where the agent's CNI server listens unless the network configuration says
	// otherwise; its directory is 0700 and the socket 0600, so only root can attach pods.
	DefaultSocketPath = "/var/run/vxflow/cni.sock"
	// PluginType is the plugin's binary name, the "type" of its entry in the conflist.
	PluginType = "vxflow-cni"
	// NetworkName is the default name of the network in the conflist.
	NetworkName = "vxflow"
	// CNIVersion is the CNI specification version vxflow speaks and writes into the conflist.
	CNIVersion = "1.1.0"
	// Path is the HTTP path of the server's single endpoint.
	Path = "/cni"
)

// CNI commands, as in CNI_COMMAND.
const (
	CommandAdd    = "ADD"
	CommandDel    = "DEL"
	CommandCheck  = "CHECK"
	CommandGC     = "GC"
	CommandStatus = "STATUS"
)

// Error codes vxflow returns; 1–99 are the specification's, 100 and up are vxflow's own.
const (
	// CodeTryAgainLater (11, the specification's) says the agent is not running, not ready or shutting down;
	// the runtime retries.
	CodeTryAgainLater = types.ErrTryAgainLater
	// CodePluginNotAvailable (50, the specification's) is STATUS's answer when pods cannot be added yet.
	CodePluginNotAvailable = types.ErrPluginNotAvailable
	// CodePoolExhausted says every address of the node's subnet is in use.
	CodePoolExhausted uint = 100
	// CodeCheckFailed says CHECK found the pod's interface, address, routes, port or flows broken.
	CodeCheckFailed uint = 101
	// CodeSetupFailed says the agent failed to set the pod's network up (or tear it down).
	CodeSetupFailed uint = 102
	// CodeInvalidNetNS is the specification's code for a CNI_NETNS that is not a network namespace.
	CodeInvalidNetNS = types.ErrInvalidNetNS
)

// NetConf is vxflow's entry in the conflist as the plugin receives it on stdin.
type NetConf struct {
	types.PluginConf
	// Socket is the agent's CNI socket; empty means DefaultSocketPath.
	Socket string `json:"socket,omitempty"`
	// TimeoutSeconds bounds one request to the agent; zero means DefaultTimeoutSeconds.
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
	// ValidAttachments is what the runtime still uses, injected by GC ("cni.dev/valid-attachments"); nil
	// when the runtime sent no list, which GC takes as "collect nothing".
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments,omitempty"`
	// Attachments is the same list under the key libcni also sends for plugins that read the specification's
	// first, misspelt name (containernetworking/cni#1101).
	Attachments []types.GCAttachment `json:"cni.dev/attachments,omitempty"`
}

// DefaultTimeoutSeconds bounds a request when the configuration does not: long enough for an agent that
// waits for its flows under load, shorter than the runtime's own CNI timeout.
const DefaultTimeoutSeconds = 60

// ParseNetConf decodes and checks the network configuration.
func ParseNetConf(stdin []byte) (*NetConf, error) {
	var c NetConf
	if err := json.Unmarshal(stdin, &c); err != nil {
		return nil, fmt.Errorf("failed to parse the network configuration: %w", err)
	}
	if c.Socket == "" {
		c.Socket = DefaultSocketPath
	}
	if c.TimeoutSeconds < 0 {
		return nil, fmt.Errorf("failed to parse the network configuration: timeoutSeconds %d is negative", c.TimeoutSeconds)
	}
	if c.TimeoutSeconds == 0 {
		c.TimeoutSeconds = DefaultTimeoutSeconds
	}
	if c.ValidAttachments == nil && c.Attachments != nil {
		c.ValidAttachments = c.Attachments
	}
	return &c, nil
}

// Request is one CNI invocation, forwarded verbatim: the server needs what the runtime gave the plugin.
type Request struct {
	// Command is CNI_COMMAND.
	Command string `json:"command"`
	// ContainerID is CNI_CONTAINERID, the sandbox ID.
	ContainerID string `json:"containerID,omitempty"`
	// Netns is CNI_NETNS, the path of the pod's network namespace.
	Netns string `json:"netns,omitempty"`
	// IfName is CNI_IFNAME, the interface to create inside the pod.
	IfName string `json:"ifName,omitempty"`
	// Args is CNI_ARGS ("K8S_POD_NAMESPACE=a;K8S_POD_NAME=b;...").
	Args string `json:"args,omitempty"`
	// Config is the network configuration from stdin (with prevResult for CHECK and the valid attachments
	// for GC).
	Config json.RawMessage `json:"config"`
}

// Response is the server's answer: a CNI result (types/100 at CNIVersion, converted by the plugin to the
// version the runtime asked for) or a CNI error.
type Response struct {
	// Result is the ADD result, absent for the other commands.
	Result json.RawMessage `json:"result,omitempty"`
	// Error is set when the command failed.
	Error *types.Error `json:"error,omitempty"`
}

// PodArgs are the Kubernetes arguments of CNI_ARGS.
type PodArgs struct {
	// Namespace and Name are K8S_POD_NAMESPACE and K8S_POD_NAME; empty when the runtime did not send them.
	Namespace, Name string
}

// ParsePodArgs reads K8S_POD_NAMESPACE and K8S_POD_NAME out of CNI_ARGS and ignores the other keys (the
// runtime sends IgnoreUnknown, K8S_POD_INFRA_CONTAINER_ID, K8S_POD_UID, ...).
func ParsePodArgs(args string) (PodArgs, error) {
	var p PodArgs
	if args == "" {
		return p, nil
	}
	for _, kv := range strings.Split(args, ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return PodArgs{}, fmt.Errorf("failed to parse CNI_ARGS: %q is not KEY=VALUE", kv)
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			p.Namespace = v
		case "K8S_POD_NAME":
			p.Name = v
		}
	}
	return p, nil
}
