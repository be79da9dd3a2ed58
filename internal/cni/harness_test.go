package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netns"
	"k8s.io/klog/v2/ktesting"

	"github.com/vxflow/vxflow/internal/apply/ovs"
	"github.com/vxflow/vxflow/internal/render/openflow"
	"github.com/vxflow/vxflow/internal/testutil/ovsnode"
)

// This file is the integration harness: a private Open vSwitch in a network namespace (the "node"), br0
// made by the real applier, the CNI server running in-process against it, the plugin binary built from
// cmd/vxflow-cni, and network namespaces as pods. Tests drive it with the upstream cnitool and with libcni.

var (
	buildOnce  sync.Once
	pluginDir  string // holds the vxflow-cni binary: the tests' CNI_PATH
	buildErr   error
	netCounter atomic.Int64
)

// TestMain removes the plugin build directory after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if pluginDir != "" {
		_ = os.RemoveAll(pluginDir)
	}
	os.Exit(code)
}

// repoRoot is the module root (two levels up from this package).
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// pluginPath builds cmd/vxflow-cni once per test binary and returns the directory to use as CNI_PATH.
func pluginPath(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		pluginDir, buildErr = os.MkdirTemp("", "vxflow-cni-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(pluginDir, "vxflow-cni"), "./cmd/vxflow-cni")
		cmd.Dir = repoRoot(t)
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("failed to build the plugin: %w: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return pluginDir
}

// cnitoolPath returns bin/cnitool-v1.3.1, building it the way `make cnitool` does when it is missing.
func cnitoolPath(t testing.TB) string {
	t.Helper()
	root := repoRoot(t)
	path := filepath.Join(root, "bin", "cnitool-v1.3.1")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	cmd := exec.Command("make", "cnitool")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("failed to build the upstream cnitool (run `make cnitool`; it needs the Go module proxy): %v: %s", err, out)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("`make cnitool` did not produce %s: %v", path, err)
	}
	return path
}

// testNode is one node: OVS, br0, the agent stand-in, the CNI server and the conflist.
type testNode struct {
	t        testing.TB
	ovs      *ovsnode.Node
	sw       *ovs.Switch
	agent    *testAgent
	dir      string // socket, state and conflist live here
	sockPath string
	stateDir string
	confDir  string
	netName  string

	// wrap, when set before startServer, decorates what the server gets (the benchmark times the steps).
	wrap func(Ports, PodNetwork) (Ports, PodNetwork)
	// txChecksum is the server's PodTxChecksum (empty: auto, which turns offload off on this netdev bridge).
	txChecksum ChecksumOffload

	srv    *Server
	cancel context.CancelFunc
	done   chan error
}

// newTestNode starts a private OVS with br0 (netdev, vxlan0, tun0) and a running CNI server whose node
// subnet is subnet (a /hostPrefix of 10.128.0.0/14).
func newTestNode(t testing.TB, subnet string, hostPrefix int32) *testNode {
	t.Helper()
	ovsnode.RequireRoot(t)
	o := ovsnode.Start(t, "cni")
	ctx := context.Background()
	sw, err := ovs.New(ctx, ovs.Config{DBEndpoint: o.DBEndpoint(), RunDir: o.RunDir, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatalf("failed to connect to OVS: %v", err)
	}
	t.Cleanup(sw.Close)
	if _, err := sw.EnsureBridge(ctx, ovs.BridgeSpec{DatapathType: ovs.DatapathNetdev, TunMTU: 1450}); err != nil {
		t.Fatalf("failed to create br0: %v", err)
	}
	o.WaitBridge(ovs.DefaultBridge, 10*time.Second)
	// Short paths: unix sockets are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "vxcni-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	n := &testNode{
		t:        t,
		ovs:      o,
		sw:       sw,
		agent:    newTestAgent(sw, subnet, hostPrefix),
		dir:      dir,
		sockPath: filepath.Join(dir, "run", "cni.sock"),
		stateDir: filepath.Join(dir, "state"),
		confDir:  filepath.Join(dir, "net.d"),
		netName:  fmt.Sprintf("vxflow-test-%d-%d", os.Getpid(), netCounter.Add(1)),
	}
	if err := n.agent.restore(ctx, nil); err != nil {
		t.Fatalf("failed to program the node flows: %v", err)
	}
	if _, err := WriteConfList(n.confDir, ConfListOptions{Name: n.netName, SocketPath: n.sockPath, TimeoutSeconds: 60}); err != nil {
		t.Fatal(err)
	}
	n.startServer()
	return n
}

// startServer creates the server over the node's state directory, reconciles and serves in the background;
// Cleanup (or stopServer) stops it.
func (n *testNode) startServer() ReconcileReport {
	n.t.Helper()
	logger := ktesting.NewLogger(n.t, ktesting.NewConfig(ktesting.Verbosity(0)))
	if _, bench := n.t.(*testing.B); bench && !testing.Verbose() {
		logger = logr.Discard() // the benchmark's output is its figures; -v shows the server's logs
	}
	var ports Ports = n.sw
	var network PodNetwork = n.agent
	if n.wrap != nil {
		ports, network = n.wrap(ports, network)
	}
	srv, err := NewServer(ServerConfig{
		SocketPath:    n.sockPath,
		StateDir:      n.stateDir,
		HostNetNS:     ovsnode.NetNSPath(n.ovs.NetNS),
		PodTxChecksum: n.txChecksum,
		Logger:        logger,
	}, network, ports)
	if err != nil {
		n.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rep, err := srv.Reconcile(ctx)
	if err != nil {
		cancel()
		n.t.Fatal(err)
	}
	if err := n.agent.restore(ctx, srv.Pods()); err != nil {
		cancel()
		n.t.Fatalf("failed to restore the pods' flows: %v", err)
	}
	if err := srv.Listen(); err != nil {
		cancel()
		n.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	n.srv, n.cancel, n.done = srv, cancel, done
	n.t.Cleanup(n.stopServer)
	return rep
}

// stopServer stops the server (idempotent) and waits for it.
func (n *testNode) stopServer() {
	if n.cancel == nil {
		return
	}
	n.cancel()
	if err := <-n.done; err != nil {
		n.t.Errorf("server stopped with: %v", err)
	}
	n.cancel, n.srv = nil, nil
}

// newPod creates a network namespace for a pod and returns its path.
func (n *testNode) newPod() string {
	n.t.Helper()
	return ovsnode.NetNSPath(ovsnode.NewNetNS(n.t, "pod"))
}

// cnitool runs the upstream cnitool against the node's conflist and plugin; it returns stdout and the error
// (with stderr and stdout, where the plugin's CNI error JSON lands).
func (n *testNode) cnitool(command, netnsPath, podNS, podName string) (string, error) {
	n.t.Helper()
	cmd := exec.Command(cnitoolPath(n.t), command, n.netName, netnsPath)
	cmd.Env = append(os.Environ(), "CNI_PATH="+pluginPath(n.t), "NETCONFPATH="+n.confDir, "CNI_IFNAME=eth0")
	if podNS != "" {
		cmd.Env = append(cmd.Env, fmt.Sprintf("CNI_ARGS=K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s", podNS, podName))
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("cnitool %s failed: %w: stderr: %s stdout: %s", command, err,
			strings.TrimSpace(stderr.String()), strings.TrimSpace(stdout.String()))
	}
	return stdout.String(), nil
}

// cnitoolAdd adds a pod with cnitool, registers its DEL in Cleanup and returns the parsed result.
func (n *testNode) cnitoolAdd(netnsPath, podNS, podName string) *types100.Result {
	n.t.Helper()
	out, err := n.cnitool("add", netnsPath, podNS, podName)
	n.t.Cleanup(func() { _, _ = n.cnitool("del", netnsPath, podNS, podName) }) // also drops cnitool's cache
	if err != nil {
		n.t.Fatal(err)
	}
	res, err := types100.NewResult([]byte(out))
	if err != nil {
		n.t.Fatalf("failed to parse cnitool's result %q: %v", out, err)
	}
	r, err := types100.GetResult(res)
	if err != nil {
		n.t.Fatal(err)
	}
	return r
}

// libcni returns a libcni client using the built plugin with a private cache directory.
func (n *testNode) libcni() (*libcni.CNIConfig, *libcni.NetworkConfigList) {
	n.t.Helper()
	// An explicit exec: libcni creates its default lazily, which races when the client is shared.
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	c := libcni.NewCNIConfigWithCacheDir([]string{pluginPath(n.t)}, filepath.Join(n.dir, "cache"), exec)
	list, err := libcni.LoadNetworkConf(n.confDir, n.netName)
	if err != nil {
		n.t.Fatal(err)
	}
	return c, list
}

// runtimeConf is the libcni runtime configuration of a pod.
func runtimeConf(containerID, netnsPath, podNS, podName string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: containerID,
		NetNS:       netnsPath,
		IfName:      "eth0",
		Args:        [][2]string{{"K8S_POD_NAMESPACE", podNS}, {"K8S_POD_NAME", podName}},
	}
}

// cniCode returns the CNI error code inside err, or 0.
func cniCode(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// hostVeths lists the veths in the node's namespace.
func (n *testNode) hostVeths() []string {
	n.t.Helper()
	out := n.ovs.MustRun("ip", "-o", "link", "show", "type", "veth")
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		names = append(names, name)
	}
	return names
}

// podFlowCount counts br0's flows owned by pods (cookie category of the renderer's pod flows).
func (n *testNode) podFlows() []string {
	n.t.Helper()
	flows, err := n.sw.Dump(context.Background())
	if err != nil {
		n.t.Fatal(err)
	}
	var out []string
	for _, f := range flows {
		if podCookie(f.Cookie) {
			out = append(out, f.String())
		}
	}
	return out
}

// records lists the state directory's attachment records.
func (n *testNode) records() []string {
	n.t.Helper()
	entries, err := os.ReadDir(n.stateDir)
	if err != nil {
		n.t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// assertClean fails unless no attachment record, pod port, pod flow or veth is left.
func (n *testNode) assertClean() {
	n.t.Helper()
	if r := n.records(); len(r) > 0 {
		n.t.Errorf("attachment records left: %v", r)
	}
	ports, err := n.sw.ListPodPorts(context.Background())
	if err != nil {
		n.t.Fatal(err)
	}
	if len(ports) > 0 {
		n.t.Errorf("pod ports left on br0: %v", ports)
	}
	if f := n.podFlows(); len(f) > 0 {
		n.t.Errorf("pod flows left on br0: %v", f)
	}
	if v := n.hostVeths(); len(v) > 0 {
		n.t.Errorf("veths left in the node: %v", v)
	}
	if pods := n.srv.Pods(); len(pods) > 0 {
		n.t.Errorf("server still lists pods: %v", pods)
	}
}

// inNetNS runs fn on a thread inside the network namespace at path; sockets fn opens stay in that
// namespace after it returns.
func inNetNS(path string, fn func() error) error {
	errCh := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errCh <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			errCh <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errCh <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errCh <- errors.Join(ferr, err) // the thread stays locked and is discarded
			return
		}
		runtime.UnlockOSThread()
		errCh <- ferr
	}()
	return <-errCh
}

// tcpRoundTrip listens on server's address inside serverNS, connects from clientNS, sends size bytes and
// expects them echoed back: it proves the path and the checksums (TCP needs them correct; ICMP does not).
func tcpRoundTrip(serverNS string, serverIP net.IP, clientNS string, size int) error {
	var l net.Listener
	if err := inNetNS(serverNS, func() (err error) {
		l, err = net.Listen("tcp4", net.JoinHostPort(serverIP.String(), "0"))
		return err
	}); err != nil {
		return fmt.Errorf("failed to listen in the server pod: %w", err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	var c net.Conn
	d := net.Dialer{Timeout: 5 * time.Second}
	if err := inNetNS(clientNS, func() (err error) {
		c, err = d.Dial("tcp4", l.Addr().String())
		return err
	}); err != nil {
		return fmt.Errorf("failed to connect from the client pod to %s: %w", l.Addr(), err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	payload := bytes.Repeat([]byte("vxflow!"), size/7+1)[:size]
	go func() { _, _ = c.Write(payload) }()
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("failed to read the echo of %d bytes from %s: %w", size, l.Addr(), err)
	}
	if !bytes.Equal(got, payload) {
		return errors.New("the echo differs from what was sent")
	}
	return nil
}

// podCookie reports whether a flow's cookie says a local pod owns it.
func podCookie(c uint64) bool { return openflow.CookieCategoryOf(c) == openflow.CategoryPod }

// mustJSON renders v for failure messages.
func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
