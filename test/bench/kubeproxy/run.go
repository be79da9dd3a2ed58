package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// proxy is one of the two contenders while it runs.
type proxy struct {
	name, ns string
	cmd      *exec.Cmd
	// peakRSS is the largest RSS seen of the process plus its children (kube-proxy's nft), in KiB.
	peakRSS int64
	mu      sync.Mutex
	log     *os.File
}

// results are the figures printed and written with -out.
type results struct {
	Services, Endpoints                int
	CreateSeconds                      float64
	ReadySeconds                       map[string]float64
	ChangeMillis                       map[string][]float64
	EventsPerChange                    map[string]int
	PeakRSSMiB                         map[string]float64
	CPUSeconds                         map[string]float64
	KubeProxySyncSeconds, VXSyncSecond map[string]float64
	Events                             map[string][]string
	VXFullSync                         syncReport
	VXChangeSyncs                      []syncReport
	// KubeProxyChanges are kube-proxy's own histograms over the single-endpoint changes alone (the
	// difference of two scrapes around them), by metric name without the kubeproxy_ prefix.
	KubeProxyChanges map[string]*histogram
}

func run(o options) error {
	ctx := context.Background()
	gogc, gomemlimit, godebug = o.gogc, o.gomemlimit, o.godebug
	if err := os.Setenv("KUBEBUILDER_ASSETS", o.assets); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "vxkp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	env := &envtest.Environment{}
	api := env.ControlPlane.GetAPIServer()
	// Both fields: with no port envtest picks one and also resets the address to loopback.
	api.SecureServing.Address, api.SecureServing.Port = apiAddr, "6443"
	api.Configure().Set("advertise-address", apiAddr).Set("service-cluster-ip-range", serviceCIDR)
	step("starting the control plane (envtest) on %s", apiAddr)
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("failed to start envtest: %w", err)
	}
	var proxies []*proxy
	cleanup := func() {
		for _, p := range proxies {
			stopProxy(p)
		}
		_ = env.Stop()
	}
	defer cleanup()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		step("interrupted: stopping")
		cleanup()
		os.Exit(1)
	}()
	admin, err := env.AddUser(envtest.User{Name: "bench-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(work, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 5000, 5000
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}

	res := results{Services: o.services, Endpoints: o.endpoints, ReadySeconds: map[string]float64{},
		ChangeMillis: map[string][]float64{}, EventsPerChange: map[string]int{}, PeakRSSMiB: map[string]float64{},
		CPUSeconds: map[string]float64{}, Events: map[string][]string{}, KubeProxySyncSeconds: map[string]float64{}, VXSyncSecond: map[string]float64{}}
	step("creating %d Services with %d endpoints each", o.services, o.endpoints)
	start := time.Now()
	if err := createObjects(ctx, client, o); err != nil {
		return err
	}
	probeVIP, err := createProbe(ctx, client)
	if err != nil {
		return err
	}
	res.CreateSeconds = time.Since(start).Seconds()
	step("created in %.1fs; probe Service at %s", res.CreateSeconds, probeVIP)

	for _, ns := range []string{o.nsKP, o.nsVX} {
		if err := serveProbe(ns); err != nil {
			return err
		}
	}
	kp, err := startKubeProxy(o, work, kubeconfig)
	if err != nil {
		return err
	}
	proxies = append(proxies, kp)
	vx, err := startDriver(o, work, kubeconfig)
	if err != nil {
		return err
	}
	proxies = append(proxies, vx)
	sampling := make(chan struct{})
	go sampleRSS(proxies, sampling)
	defer close(sampling)

	// Cold start: both processes start at once; the time until the probe Service (created last, so in
	// the same atomic transaction as everything else or later) answers through each node's rules.
	t0 := time.Now()
	var wg sync.WaitGroup
	for _, p := range proxies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if waitProbe(p.ns, probeVIP, probeA, time.Duration(2+o.services/100)*time.Minute) {
				res.ReadySeconds[p.name] = time.Since(t0).Seconds()
			}
		}()
	}
	wg.Wait()
	for _, p := range proxies {
		if _, ok := res.ReadySeconds[p.name]; !ok {
			tail, _ := exec.Command("tail", "-20", p.log.Name()).Output()
			return fmt.Errorf("%s never programmed the probe Service; its log ends:\n%s", p.name, tail)
		}
		step("%s programmed %d Services in %.2fs", p.name, o.services+1, res.ReadySeconds[p.name])
	}
	time.Sleep(3 * time.Second)
	if o.dump != "" {
		for _, p := range proxies {
			out, err := exec.Command("ip", "netns", "exec", p.ns, "nft", "list", "ruleset").Output()
			if err != nil {
				return fmt.Errorf("failed to list %s's ruleset: %w", p.name, err)
			}
			if err := os.WriteFile(o.dump+"."+p.name+".nft", out, 0o644); err != nil {
				return err
			}
		}
	}

	kpBefore, kpErr := scrapeKubeProxy(o.nsKP)
	step("timing %d single-endpoint changes", o.changes)
	ips := []string{probeB, probeA}
	monitorAt := o.changes / 2
	for i := range o.changes {
		var monitors map[string]*monitor
		if i == monitorAt {
			monitors = map[string]*monitor{}
			for _, p := range proxies {
				m, err := startMonitor(p.ns, time.Duration(3+o.services*o.endpoints/10000)*time.Second)
				if err != nil {
					return err
				}
				monitors[p.name] = m
			}
		}
		want := ips[i%2]
		t := time.Now()
		if err := setProbeEndpoint(ctx, client, want); err != nil {
			return err
		}
		for _, p := range proxies {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if waitProbe(p.ns, probeVIP, want, time.Minute) {
					p.mu.Lock()
					res.ChangeMillis[p.name] = append(res.ChangeMillis[p.name], float64(time.Since(t).Microseconds())/1000)
					p.mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if monitors != nil {
			time.Sleep(time.Second)
			for name, m := range monitors {
				ev := m.stop()
				res.EventsPerChange[name] = len(ev)
				res.Events[name] = ev[:min(len(ev), 100)]
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	if after, err := scrapeKubeProxy(o.nsKP); err == nil {
		for name, h := range after {
			if strings.HasPrefix(name, "sync_") {
				res.KubeProxySyncSeconds[name+"_sum"], res.KubeProxySyncSeconds[name+"_count"] = h.Sum, h.Count
			}
		}
		if kpErr == nil {
			res.KubeProxyChanges = map[string]*histogram{}
			for name, h := range after {
				res.KubeProxyChanges[name] = h.minus(kpBefore[name])
			}
		}
	} else {
		step("could not read kube-proxy's metrics: %v", err)
	}
	for _, p := range proxies {
		stopProxy(p)
		if st := p.cmd.ProcessState; st != nil {
			ru := st.SysUsage().(*syscall.Rusage)
			res.CPUSeconds[p.name] = tv(ru.Utime) + tv(ru.Stime)
			// ru_maxrss covers the process and its waited children (kube-proxy's nft runs).
			p.peakRSS = max(p.peakRSS, ru.Maxrss)
		}
		res.PeakRSSMiB[p.name] = float64(p.peakRSS) / 1024
	}
	res.VXFullSync, res.VXChangeSyncs = driverReports(vx.log.Name())
	if o.heap != "" {
		if b, err := os.ReadFile(vx.log.Name()); err == nil {
			_ = os.WriteFile(o.heap+".log", b, 0o644)
		}
	}
	report(res, o)
	if o.out != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(o.out, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// createObjects creates the Nodes, namespaces, Services and EndpointSlices with a pool of writers.
func createObjects(ctx context.Context, c kubernetes.Interface, o options) error {
	for _, n := range []struct{ name, ip string }{{"kp-node", kpAddr}, {"vx-node", vxAddr}} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name}}
		created, err := c.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		created.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.ip}}
		if _, err := c.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	nsCount := (o.services + 999) / 1000
	for i := range nsCount {
		if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%d", i)}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	jobs := make(chan int)
	errs := make(chan error, o.workers)
	var wg sync.WaitGroup
	for range o.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := createService(ctx, c, i, o.endpoints); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range o.services {
		select {
		case err := <-errs:
			close(jobs)
			return err
		case jobs <- i:
		}
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	return nil
}

// createService creates Service i and its EndpointSlice: endpoints on other nodes, never reached.
func createService(ctx context.Context, c kubernetes.Interface, i, eps int) error {
	ns, name := fmt.Sprintf("bench-%d", i/1000), fmt.Sprintf("svc-%d", i)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	if _, err := c.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("failed to create Service %s/%s: %w", ns, name, err)
	}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](8080)}},
	}
	for j := range eps {
		k := i*eps + j
		ip := netip.AddrFrom4([4]byte{10, byte(128 + k>>16), byte(k >> 8), byte(k)})
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}, NodeName: ptr.To(fmt.Sprintf("node-%d", k%50))})
	}
	if _, err := c.DiscoveryV1().EndpointSlices(ns).Create(ctx, es, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("failed to create EndpointSlice %s/%s: %w", ns, es.Name, err)
	}
	return nil
}

// createProbe creates the probe Service (one endpoint, probeA) and returns its ClusterIP.
func createProbe(ctx context.Context, c kubernetes.Interface) (string, error) {
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "probe"}}, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "probe", Name: "probe"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	created, err := c.CoreV1().Services("probe").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "probe", Name: "probe-1", Labels: map[string]string{discoveryv1.LabelServiceName: "probe"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](8080)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{probeA}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}, NodeName: ptr.To("node-0")}},
	}
	if _, err := c.DiscoveryV1().EndpointSlices("probe").Create(ctx, es, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	return created.Spec.ClusterIP, nil
}

// setProbeEndpoint moves the probe Service's only endpoint to ip.
func setProbeEndpoint(ctx context.Context, c kubernetes.Interface, ip string) error {
	es, err := c.DiscoveryV1().EndpointSlices("probe").Get(ctx, "probe-1", metav1.GetOptions{})
	if err != nil {
		return err
	}
	es.Endpoints[0].Addresses = []string{ip}
	// As the EndpointSlice controller does: the start of both proxies' network programming latency.
	es.Annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: time.Now().UTC().Format(time.RFC3339Nano)}
	_, err = c.DiscoveryV1().EndpointSlices("probe").Update(ctx, es, metav1.UpdateOptions{})
	return err
}

// inNetNS runs fn on a thread inside the named namespace; sockets created there stay in it. The thread
// exits with the goroutine.
func inNetNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// serveProbe listens on :8080 in a node namespace and answers each connection with the address it was
// reached on, which is the endpoint the node's rules DNATed to.
func serveProbe(ns string) error {
	var ln net.Listener
	if err := inNetNS(ns, func() (err error) { ln, err = net.Listen("tcp4", ":8080"); return err }); err != nil {
		return fmt.Errorf("failed to listen in %s: %w", ns, err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s\n", c.LocalAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	return nil
}

// waitProbe connects to vip:80 from inside ns until the answer is want, every 2 ms at most.
func waitProbe(ns, vip, want string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var got string
		_ = inNetNS(ns, func() error {
			c, err := net.DialTimeout("tcp4", net.JoinHostPort(vip, "80"), 20*time.Millisecond)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(100 * time.Millisecond))
			line, err := bufio.NewReader(c).ReadString('\n')
			got = strings.TrimSpace(line)
			return err
		})
		if got == want {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return false
}

// startKubeProxy runs kube-proxy in nftables mode in its namespace, syncing as soon as anything changes.
func startKubeProxy(o options, work, kubeconfig string) (*proxy, error) {
	conf := filepath.Join(work, "kube-proxy.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection:
  kubeconfig: %s
  qps: 1000
  burst: 1000
hostnameOverride: kp-node
clusterCIDR: %s
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nftables:
  syncPeriod: 1h
  minSyncPeriod: 1ms
`, kubeconfig, clusterCIDR)), 0o644); err != nil {
		return nil, err
	}
	return startProxy("kube-proxy", o.nsKP, work, o.kubeProxy, "--config="+conf)
}

// startDriver runs this program's driver phase (vxflow's syncer behind informers) in its namespace.
func startDriver(o options, work, kubeconfig string) (*proxy, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p, err := startProxy("vxflow", o.nsVX, work, self, "-phase=driver", "-driver-kubeconfig="+kubeconfig, "-node=vx-node",
		"-node-ip="+vxAddr, "-nft-endpoints="+o.nftEndpoints,
		"-vxflow-heap-profile="+o.heap)
	return p, err
}

// gogc, gomemlimit and godebug are the -vxflow-gogc, -vxflow-gomemlimit and -vxflow-godebug settings.
var gogc, gomemlimit, godebug string

func startProxy(name, ns, work, bin string, args ...string) (*proxy, error) {
	log, err := os.Create(filepath.Join(work, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	if name == "vxflow" {
		cmd.Env = os.Environ()
		if gogc != "" {
			cmd.Env = append(cmd.Env, "GOGC="+gogc)
		}
		if gomemlimit != "" {
			cmd.Env = append(cmd.Env, "GOMEMLIMIT="+gomemlimit)
		}
		if godebug != "" {
			cmd.Env = append(cmd.Env, "GODEBUG="+godebug)
		}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("failed to start %s: %w", name, err)
	}
	return &proxy{name: name, ns: ns, cmd: cmd, log: log}, nil
}

// stopProxy stops a contender by its PID and waits for it; kube-proxy is then asked to remove its tables.
func stopProxy(p *proxy) {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// sampleRSS records each contender's RSS plus its children's (kube-proxy execs nft) every 20 ms.
func sampleRSS(ps []*proxy, stop <-chan struct{}) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		children := childrenOf()
		for _, p := range ps {
			if p.cmd.Process == nil {
				continue
			}
			pid := p.cmd.Process.Pid
			total := rssKiB(pid)
			for _, c := range children[pid] {
				total += rssKiB(c)
			}
			p.mu.Lock()
			p.peakRSS = max(p.peakRSS, total)
			p.mu.Unlock()
		}
	}
}

// childrenOf maps each PID to its children's PIDs.
func childrenOf() map[int][]int {
	out := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The command may contain spaces; fields after the last ')' are: state ppid ...
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 {
			ppid, _ := strconv.Atoi(f[1])
			out[ppid] = append(out[ppid], pid)
		}
	}
	return out
}

func rssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			v, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return v
		}
	}
	return 0
}

// monitor counts the nf_tables events (rules, chains, sets, elements added or removed) in a namespace.
type monitor struct {
	cmd   *exec.Cmd
	lines chan []string
}

func startMonitor(ns string, settle time.Duration) (*monitor, error) {
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "monitor", "ruleset")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	m := &monitor{cmd: cmd, lines: make(chan []string, 1)}
	go func() {
		var events []string
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "add ") || strings.HasPrefix(l, "delete ") || strings.HasPrefix(l, "flush ") {
				events = append(events, l)
			}
		}
		_, _ = io.Copy(io.Discard, out)
		m.lines <- events
	}()
	// nft monitor reads the ruleset before it starts listening; give it time on a big table.
	time.Sleep(settle)
	return m, nil
}

func (m *monitor) stop() []string {
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	events := <-m.lines
	_ = m.cmd.Wait()
	return events
}

// histogram is one Prometheus histogram as scraped: cumulative counts by upper bound, sum and count.
type histogram struct {
	Buckets    map[float64]float64
	Sum, Count float64
}

// minus returns h - before (the observations made between two scrapes).
func (h *histogram) minus(before *histogram) *histogram {
	out := &histogram{Buckets: maps.Clone(h.Buckets), Sum: h.Sum, Count: h.Count}
	if out.Buckets == nil {
		out.Buckets = map[float64]float64{}
	}
	if before != nil {
		out.Sum -= before.Sum
		out.Count -= before.Count
		for le, n := range before.Buckets {
			out.Buckets[le] -= n
		}
	}
	return out
}

// quantile estimates the q-quantile as Prometheus' histogram_quantile does (linear within a bucket).
func (h *histogram) quantile(q float64) float64 {
	if h == nil || h.Count <= 0 {
		return 0
	}
	les := slices.Sorted(maps.Keys(h.Buckets))
	rank := q * h.Count
	prevLE, prevN := 0.0, 0.0
	for _, le := range les {
		n := h.Buckets[le]
		if n >= rank {
			if math.IsInf(le, 1) {
				return prevLE
			}
			if n == prevN {
				return le
			}
			return prevLE + (le-prevLE)*(rank-prevN)/(n-prevN)
		}
		prevLE, prevN = le, n
	}
	return prevLE
}

// scrapeKubeProxy reads kube-proxy's sync and network programming histograms from its metrics endpoint
// in its namespace, summed over their labels, by name without the kubeproxy_ prefix.
func scrapeKubeProxy(ns string) (map[string]*histogram, error) {
	var body string
	err := inNetNS(ns, func() error {
		c, err := net.DialTimeout("tcp4", "127.0.0.1:10249", time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
		b, err := io.ReadAll(c)
		body = string(b)
		return err
	})
	if err != nil {
		return nil, err
	}
	names := []string{"network_programming_duration_seconds", "sync_proxy_rules_duration_seconds",
		"sync_full_proxy_rules_duration_seconds", "sync_partial_proxy_rules_duration_seconds"}
	out := map[string]*histogram{}
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		for _, name := range names {
			m := "kubeproxy_" + name
			if !strings.HasPrefix(l, m+"_") {
				continue
			}
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				continue
			}
			h := out[name]
			if h == nil {
				h = &histogram{Buckets: map[float64]float64{}}
				out[name] = h
			}
			rest := strings.TrimPrefix(f[0], m+"_")
			switch {
			case strings.HasPrefix(rest, "sum"):
				h.Sum += v
			case strings.HasPrefix(rest, "count"):
				h.Count += v
			case strings.HasPrefix(rest, "bucket"):
				i := strings.Index(rest, `le="`)
				if i < 0 {
					continue
				}
				leStr := rest[i+4:]
				leStr = leStr[:strings.IndexByte(leStr, '"')]
				le, err := strconv.ParseFloat(leStr, 64)
				if err != nil {
					continue
				}
				h.Buckets[le] += v
			}
		}
	}
	return out, nil
}

// driverReports reads the driver's per-sync lines: the first full sync and the later partial ones.
func driverReports(path string) (syncReport, []syncReport) {
	f, err := os.Open(path)
	if err != nil {
		return syncReport{}, nil
	}
	defer f.Close()
	var full syncReport
	var rest []syncReport
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r syncReport
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		if r.Full && full.Services == 0 {
			full = r
		} else if full.Services != 0 {
			rest = append(rest, r)
		}
	}
	return full, rest
}

// report prints the comparison.
func report(r results, o options) {
	med := func(v []float64) float64 {
		if len(v) == 0 {
			return 0
		}
		s := slices.Clone(v)
		slices.Sort(s)
		return s[len(s)/2]
	}
	p90 := func(v []float64) float64 {
		if len(v) == 0 {
			return 0
		}
		s := slices.Clone(v)
		slices.Sort(s)
		return s[(len(s)*9)/10-boolInt(len(s)%10 == 0)]
	}
	p99 := func(v []float64) float64 {
		if len(v) == 0 {
			return 0
		}
		s := slices.Clone(v)
		slices.Sort(s)
		return s[min(len(s)-1, (len(s)*99)/100)]
	}
	ratio := func(kp, vx float64) string {
		if vx == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1fx", kp/vx)
	}
	fmt.Printf("\n%d Services x %d endpoints (objects created in %.1fs), vxflow --nft-endpoints=%s GOGC=%q\n",
		o.services, o.endpoints, r.CreateSeconds, o.nftEndpoints, o.gogc)
	fmt.Printf("%-44s %12s %12s %10s\n", "", "kube-proxy", "vxflow", "kp/vxflow")
	row := func(label string, kp, vx float64, unit string) {
		fmt.Printf("%-44s %11.1f%s %11.1f%s %10s\n", label, kp, unit, vx, unit, ratio(kp, vx))
	}
	row("start to rules in kernel (s)", r.ReadySeconds["kube-proxy"], r.ReadySeconds["vxflow"], " ")
	row("one endpoint change to kernel, median (ms)", med(r.ChangeMillis["kube-proxy"]), med(r.ChangeMillis["vxflow"]), " ")
	row("one endpoint change to kernel, p90 (ms)", p90(r.ChangeMillis["kube-proxy"]), p90(r.ChangeMillis["vxflow"]), " ")
	row("nf_tables events for one change", float64(r.EventsPerChange["kube-proxy"]), float64(r.EventsPerChange["vxflow"]), " ")
	row("peak RSS incl. children (MiB)", r.PeakRSSMiB["kube-proxy"], r.PeakRSSMiB["vxflow"], " ")
	row("CPU user+sys, whole run (s)", r.CPUSeconds["kube-proxy"], r.CPUSeconds["vxflow"], " ")
	if n := r.KubeProxySyncSeconds["sync_full_proxy_rules_duration_seconds_count"]; n > 0 {
		fmt.Printf("kube-proxy's own full syncs: %.0f, mean %.2fs\n", n, r.KubeProxySyncSeconds["sync_full_proxy_rules_duration_seconds_sum"]/n)
	}
	fs := r.VXFullSync
	fmt.Printf("vxflow first sync: informers synced %.0fms after start, then build %.0fms, render %.0fms, sync %.0fms (kernel %.0fms), %d messages\n",
		fs.ListMs, fs.BuildMs, fs.RenderMs, fs.SyncMs, fs.KernelMs, fs.Messages)
	var b, rd, s, k, m, e2k []float64
	for _, c := range r.VXChangeSyncs {
		if c.Changed == 0 {
			continue // a re-apply (stale chains deleted), not an event's sync
		}
		b, rd, s, k, m = append(b, c.BuildMs), append(rd, c.RenderMs), append(s, c.SyncMs), append(k, c.KernelMs), append(m, float64(c.Messages))
		e2k = append(e2k, c.EventToKernelMs)
	}
	if len(b) > 0 {
		fmt.Printf("vxflow change syncs (median of %d): build %.2fms, render %.2fms, sync %.2fms (kernel %.2fms), %.0f messages\n",
			len(b), med(b), med(rd), med(s), med(k), med(m))
		fmt.Printf("vxflow event -> kernel (informer event to nf_tables commit): median %.2fms, p99 %.2fms\n", med(e2k), p99(e2k))
	}
	if fs.HeapMiB > 0 {
		fmt.Printf("vxflow Go heap after the first sync: %.0f MiB in use, %.0f MiB from the OS\n", fs.HeapMiB, fs.SysMiB)
	}
	if h := r.KubeProxyChanges; h != nil {
		np, part := h["network_programming_duration_seconds"], h["sync_partial_proxy_rules_duration_seconds"]
		all := h["sync_proxy_rules_duration_seconds"]
		// network_programming's first bucket is 0.25 s, so only its mean says something at this scale.
		fmt.Printf("kube-proxy over the changes (its own histograms): network_programming mean %.1fms (%.0f observations); "+
			"sync_proxy_rules median %.1fms p99 %.1fms (%.0f syncs, %.0f partial)\n",
			1000*mean(np), count(np), 1000*all.quantile(0.5), 1000*all.quantile(0.99), count(all), count(part))
	}
}

// mean is a histogram's mean, 0 for none.
func mean(h *histogram) float64 {
	if h == nil || h.Count <= 0 {
		return 0
	}
	return h.Sum / h.Count
}

// count is a histogram's number of observations, 0 for none.
func count(h *histogram) float64 {
	if h == nil {
		return 0
	}
	return h.Count
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
