package cni

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vxflow/vxflow/internal/cni/plugin"
	"github.com/vxflow/vxflow/internal/cni/wire"
	"github.com/vxflow/vxflow/internal/model"
)

// BenchmarkCNIAdd measures the latency of CNI ADD on a real node (private OVS, real renderer and applier,
// veths into network namespaces) with 1 and with 20 requests at once. Each iteration adds `concurrent` pods at
// the same moment (their DELs are timed apart, for the log only) and the benchmark reports the p50 and p99 of
// all ADDs:
//
//   - path=exec: as a container runtime does it, libcni executing the vxflow-cni binary, which forwards over
//     the socket (what kubelet's sandbox creation waits for);
//   - path=socket: the plugin's client called in-process, the agent's share without the process start.
//
// Run: go test -run '^$' -bench CNIAdd -benchtime 50x ./internal/cni/ (as root).
func BenchmarkCNIAdd(b *testing.B) {
	for _, path := range []string{"exec", "socket"} {
		for _, conc := range []int{1, 20} {
			b.Run(fmt.Sprintf("path=%s/concurrent=%d", path, conc), func(b *testing.B) {
				benchmarkAdd(b, path, conc)
			})
		}
	}
}

func benchmarkAdd(b *testing.B, path string, conc int) {
	n := newTestNode(b, "10.128.0.0/23", 23)
	steps := &stepTimes{}
	n.stopServer()
	// The records on a tmpfs, as the agent's default --state-dir (/var/run) is on a node; this machine's
	// /var/run and /tmp are on its disk, whose journal commits (ovsdb-server fsyncs every transaction) made
	// renames wait up to 10 ms.
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		dir, err := os.MkdirTemp("/dev/shm", "vxflow-cni-state-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = os.RemoveAll(dir) })
		n.stateDir = dir
	}
	n.wrap = func(p Ports, nw PodNetwork) (Ports, PodNetwork) {
		return timedPorts{p, steps}, timedNetwork{nw, steps}
	}
	n.startServer()
	c, list := n.libcni()
	client := &plugin.Client{SocketPath: n.sockPath, Timeout: time.Minute}
	confBytes, err := json.Marshal(list.Plugins[0].Network)
	if err != nil {
		b.Fatal(err)
	}
	raw := list.Plugins[0].Bytes
	if len(raw) == 0 {
		raw = confBytes
	}
	pods := make([]string, conc)
	for i := range pods {
		pods[i] = n.newPod()
	}
	ctx := context.Background()
	var lat, dels []time.Duration
	var mu sync.Mutex
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		var wg sync.WaitGroup
		errs := make([]error, conc)
		ids := make([]string, conc)
		for i := range conc {
			ids[i] = fmt.Sprintf("bench-%d-%d", it, i)
			wg.Go(func() {
				start := time.Now()
				switch path {
				case "exec":
					_, errs[i] = c.AddNetworkList(ctx, list, runtimeConf(ids[i], pods[i], "bench", ids[i]))
				default:
					_, cerr := client.Do(ctx, &wire.Request{Command: wire.CommandAdd, ContainerID: ids[i], Netns: pods[i],
						IfName: "eth0", Args: "K8S_POD_NAMESPACE=bench;K8S_POD_NAME=" + ids[i], Config: raw})
					if cerr != nil {
						errs[i] = cerr
					}
				}
				d := time.Since(start)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			})
		}
		wg.Wait()
		b.StopTimer()
		for i, err := range errs {
			if err != nil {
				b.Fatalf("ADD %s failed: %v", ids[i], err)
			}
		}
		for i := range conc {
			wg.Go(func() {
				start := time.Now()
				var err error
				defer func() {
					mu.Lock()
					dels = append(dels, time.Since(start))
					mu.Unlock()
				}()
				if path == "exec" {
					err = c.DelNetworkList(ctx, list, runtimeConf(ids[i], pods[i], "bench", ids[i]))
				} else if _, cerr := client.Do(ctx, &wire.Request{Command: wire.CommandDel, ContainerID: ids[i],
					Netns: pods[i], IfName: "eth0", Config: raw}); cerr != nil {
					err = cerr
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				b.Fatalf("DEL %s failed: %v", ids[i], err)
			}
		}
		b.StartTimer()
	}
	b.StopTimer()
	p := func(q float64) time.Duration { return quantile(lat, q).Round(10 * time.Microsecond) }
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(p(0.50)), "p50-ms")
	b.ReportMetric(ms(p(0.99)), "p99-ms")
	b.ReportMetric(ms(p(1)), "max-ms")
	b.Logf("%d ADDs (%s, %d at once): p50 %s, p99 %s, max %s; inside the server, p50/p99 of the OVS port %s/%s "+
		"and of the agent's flows %s/%s; %d flow syncs", len(lat), path, conc, p(0.50), p(0.99), p(1),
		quantile(steps.port, .5).Round(10*time.Microsecond), quantile(steps.port, .99).Round(10*time.Microsecond),
		quantile(steps.flows, .5).Round(10*time.Microsecond), quantile(steps.flows, .99).Round(10*time.Microsecond),
		n.agent.syncCount)
	b.Logf("their DELs (not in the figures above; a DEL returns once ovs-vswitchd has removed the port): p50 %s, p99 %s",
		quantile(dels, .5).Round(10*time.Microsecond), quantile(dels, .99).Round(10*time.Microsecond))
	n.assertClean()
}

// stepTimes collects how long the server's calls into OVS and into the agent took.
type stepTimes struct {
	mu          sync.Mutex
	port, flows []time.Duration
}

func (s *stepTimes) add(d *[]time.Duration, start time.Time) {
	s.mu.Lock()
	*d = append(*d, time.Since(start))
	s.mu.Unlock()
}

type timedPorts struct {
	Ports
	t *stepTimes
}

func (p timedPorts) EnsurePodPortAt(ctx context.Context, name string, ids map[string]string, ofport int) (int, error) {
	defer p.t.add(&p.t.port, time.Now())
	return p.Ports.EnsurePodPortAt(ctx, name, ids, ofport)
}

type timedNetwork struct {
	PodNetwork
	t *stepTimes
}

func (n timedNetwork) PodAttached(ctx context.Context, pod model.LocalPod) error {
	defer n.t.add(&n.t.flows, time.Now())
	return n.PodNetwork.PodAttached(ctx, pod)
}

// quantile returns the q-quantile of d (sorted in place).
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, int(q*float64(len(d))))]
}
