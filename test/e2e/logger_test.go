//go:build e2e

package e2e

import (
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// The suite uses controller-runtime clients (through vxflowctl's code) for minutes: give them klog, so their
// warnings are printed instead of controller-runtime's complaint that no logger was set.
func init() { ctrllog.SetLogger(klog.Background()) }
