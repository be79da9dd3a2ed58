// Command kubeproxy compares vxflow's Service NAT syncer with kube-proxy v1.37.2 in nftables mode: both run
// in their own network namespace against the same envtest API server, with the same Services and
// EndpointSlices, and the program prints the time to program them, the latency of one endpoint change,
// the kernel events per change, CPU and peak memory, as ratios. It needs root; see run.sh.
package main
