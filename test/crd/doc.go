// Package crd proves the CRDs on a real kube-apiserver: they install, the samples apply (also server-side,
// twice, without changes), invalid objects are refused with messages a person understands, and
// `kubectl explain` teaches the fields.
package crd
