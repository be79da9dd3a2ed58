package link

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// SysctlOptions says which packet path the sysctls are for.
type SysctlOptions struct {
	// Tun is the gateway device ("tun0"); its per-device settings are set too when it exists.
	Tun string
	// UserspaceDatapath is set for datapath_type=netdev, whose AF_PACKET ports do not steal frames from the
	// kernel (lab.md, pitfall 3).
	UserspaceDatapath bool
}

// sysctl is one kernel parameter and the value the SDN needs.
type sysctl struct {
	name, value string
	// why is the reason, logged with each change.
	why string
}

// sysctls returns the parameters for opts, in the order they are written.
//
// rp_filter is deliberately left alone: every packet that enters the host from tun0 has a source inside a
// cluster CIDR, which is routed back through tun0, so even strict reverse-path filtering accepts it.
func sysctls(opts SysctlOptions, tunExists bool) []sysctl {
	s := []sysctl{
		{"net.ipv4.ip_forward", "1", "the node routes between tun0, the underlay and pods"},
		// tun0 receives service traffic and sends it back out through tun0 after DNAT: that is no reason to
		// tell pods to use another gateway. The effective value is all OR device, so all must be 0.
		{"net.ipv4.conf.all.send_redirects", "0", "tun0 hairpins service traffic"},
		{"net.ipv4.conf.default.send_redirects", "0", "tun0 hairpins service traffic"},
	}
	if tunExists && opts.Tun != "" {
		s = append(s, sysctl{"net.ipv4.conf." + opts.Tun + ".send_redirects", "0", "tun0 hairpins service traffic"})
	}
	if opts.UserspaceDatapath {
		// The kernel also sees every frame on the underlay NIC and pod veths and would answer ARP for br-ex's
		// and tun0's addresses out of them with the wrong MAC; OVS's tunnel neighbour snooping and pods then
		// learn it and VXLAN black-holes. The effective value is max(all, device).
		s = append(s,
			sysctl{"net.ipv4.conf.all.arp_ignore", "1", "userspace datapath: no ARP flux"},
			sysctl{"net.ipv4.conf.default.arp_ignore", "1", "userspace datapath: no ARP flux"},
		)
	}
	return s
}

// EnsureSysctls sets the kernel parameters the SDN's packet path needs and returns each change made, empty
// when all had their value already.
func (m *Manager) EnsureSysctls(ctx context.Context, opts SysctlOptions) ([]string, error) {
	tunExists := false
	if opts.Tun != "" {
		if _, err := m.h.LinkByName(opts.Tun); err == nil {
			tunExists = true
		}
	}
	var changes []string
	err := m.inNetNS(func() error {
		for _, s := range sysctls(opts, tunExists) {
			old, changed, err := setSysctl(s.name, s.value)
			if err != nil {
				return err
			}
			if changed {
				changes = append(changes, fmt.Sprintf("set %s=%s (was %s): %s", s.name, s.value, old, s.why))
			}
		}
		return nil
	})
	if err != nil {
		return changes, fmt.Errorf("failed to ensure sysctls: %w", err)
	}
	return changes, nil
}

// Sysctl reads a kernel parameter in the Manager's namespace.
func (m *Manager) Sysctl(name string) (string, error) {
	var v string
	err := m.inNetNS(func() error {
		b, err := os.ReadFile(sysctlPath(name))
		v = strings.TrimSpace(string(b))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("failed to read sysctl %s: %w", name, err)
	}
	return v, nil
}

func sysctlPath(name string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
}

// setSysctl writes value unless the parameter has it already; it returns the old value.
func setSysctl(name, value string) (string, bool, error) {
	p := sysctlPath(name)
	b, err := os.ReadFile(p)
	if err != nil {
		return "", false, fmt.Errorf("failed to read sysctl %s: %w", name, err)
	}
	old := strings.TrimSpace(string(b))
	if old == value {
		return old, false, nil
	}
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		if errors.Is(err, os.ErrPermission) {
			return old, false, fmt.Errorf("failed to set sysctl %s=%s (needs root and a writable /proc/sys): %w", name, value, err)
		}
		return old, false, fmt.Errorf("failed to set sysctl %s=%s: %w", name, value, err)
	}
	return old, true, nil
}
