// Package controlplane runs the lab's kube-apiserver and etcd (through controller-runtime's envtest) on an
// underlay address, so node agents in other network namespaces reach it with verified TLS, and hands out
// kubeconfigs for new users over a unix socket.
package controlplane
