package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vxflow/vxflow/internal/model"
)

// Attachment is one pod interface the server set up: what DEL, CHECK, GC and a restarted agent need to find
// and remove everything it made. It is persisted as one file per address.
type Attachment struct {
	// ContainerID and IfName are the CNI attachment's identity (CNI_CONTAINERID, CNI_IFNAME).
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	// Netns is the pod's network namespace path; when it no longer exists the sandbox is gone.
	Netns string `json:"netns"`
	// Namespace and Name identify the pod, from CNI_ARGS (may be empty outside Kubernetes).
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	// IP is the pod's address.
	IP netip.Addr `json:"ip"`
	// HostIfName is the veth's host end and the OVS port's name.
	HostIfName string `json:"hostIfName"`
	// Created is when the address was allocated.
	Created time.Time `json:"created"`
}

type attKey struct{ containerID, ifName string }

func (a Attachment) key() attKey { return attKey{a.ContainerID, a.IfName} }

// ErrPoolExhausted says the node's subnet has no free address.
var ErrPoolExhausted = errors.New("no free address in the node subnet")

// store keeps the attachments in memory and on disk (dir/<ip>.json, written to a temporary file and renamed,
// so an agent that dies mid-write leaves either the old or the new record). Records are not fsynced: they must
// survive agent restarts, which the page cache guarantees, while a node crash ends every pod they describe (an
// fsync cost up to 18 ms of each ADD under load, docs/performance.md). Addresses are chosen next-fit from the last
// one given out, as host-local does, so a released address is reused as late as possible.
type store struct {
	dir string

	mu    sync.Mutex
	byKey map[attKey]Attachment
	byIP  map[netip.Addr]attKey
	last  netip.Addr

	// setAside are the empty records openStore renamed to .lost-<name>, for the server to log.
	setAside []string
}

// openStore creates dir if needed (0700) and loads its records; leftover temporary files are removed.
func openStore(dir string) (*store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("failed to create the state directory %s: %w", dir, err)
	}
	s := &store{dir: dir, byKey: map[attKey]Attachment{}, byIP: map[netip.Addr]attKey{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("failed to read the state directory %s: %w", dir, err)
	}
	var newest time.Time
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(dir, name)
		if strings.HasPrefix(name, ".tmp-") {
			if err := os.Remove(path); err != nil {
				return nil, fmt.Errorf("failed to remove the leftover %s: %w", path, err)
			}
			continue
		}
		if !strings.HasSuffix(name, ".json") || strings.HasPrefix(name, ".") {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("failed to read %s: %w", path, err)
		}
		if len(b) == 0 {
			// What a node crash leaves of a record written just before it: its pod died with the node.
			if err := os.Rename(path, filepath.Join(dir, ".lost-"+name)); err != nil {
				return nil, fmt.Errorf("failed to set aside the empty record %s: %w", path, err)
			}
			s.setAside = append(s.setAside, path)
			continue
		}
		var a Attachment
		if err := json.Unmarshal(b, &a); err != nil || !a.IP.IsValid() || a.ContainerID == "" ||
			name != a.IP.String()+".json" {
			return nil, fmt.Errorf("failed to load %s: not a valid attachment record (%v); move it away to continue", path, err)
		}
		if other, dup := s.byKey[a.key()]; dup {
			return nil, fmt.Errorf("failed to load %s: container %s %s also holds %s", path, a.ContainerID, a.IfName, other.IP)
		}
		s.byKey[a.key()] = a
		s.byIP[a.IP] = a.key()
		if a.Created.After(newest) {
			newest, s.last = a.Created, a.IP
		}
	}
	return s, nil
}

// get returns the attachment of (containerID, ifName).
func (s *store) get(k attKey) (Attachment, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.byKey[k]
	return a, ok
}

// list returns all attachments sorted by IP.
func (s *store) list() []Attachment {
	s.mu.Lock()
	out := make([]Attachment, 0, len(s.byKey))
	for _, a := range s.byKey {
		out = append(out, a)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out
}

// allocate picks a free address of subnet (never the network, gateway or broadcast address), records a and
// persists it; a.IP and a.Created are set in the returned copy.
func (s *store) allocate(subnet netip.Prefix, gateway netip.Addr, a Attachment) (Attachment, error) {
	s.mu.Lock()
	if _, dup := s.byKey[a.key()]; dup {
		s.mu.Unlock()
		return Attachment{}, fmt.Errorf("failed to allocate an address: container %s %s already has one", a.ContainerID, a.IfName)
	}
	ip, ok := s.nextFree(subnet, gateway)
	if !ok {
		s.mu.Unlock()
		return Attachment{}, fmt.Errorf("failed to allocate an address for container %s: %w (%s, %d in use)",
			a.ContainerID, ErrPoolExhausted, subnet, s.inUse(subnet))
	}
	a.IP, a.Created = ip, time.Now().UTC()
	s.byKey[a.key()] = a
	s.byIP[ip] = a.key()
	s.last = ip
	s.mu.Unlock()

	// Written outside the lock: allocations for other sandboxes do not wait for this fsync.
	if err := s.write(a); err != nil {
		s.mu.Lock()
		delete(s.byKey, a.key())
		delete(s.byIP, ip)
		s.mu.Unlock()
		return Attachment{}, err
	}
	return a, nil
}

// update rewrites an existing attachment's record (same key and IP).
func (s *store) update(a Attachment) error {
	if err := s.write(a); err != nil {
		return err
	}
	s.mu.Lock()
	s.byKey[a.key()] = a
	s.mu.Unlock()
	return nil
}

// release deletes the record and frees the address; a missing record is not an error.
func (s *store) release(a Attachment) error {
	path := filepath.Join(s.dir, a.IP.String()+".json")
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("failed to release %s: %w", a.IP, err)
	}
	s.mu.Lock()
	if k, ok := s.byIP[a.IP]; ok && k == a.key() {
		delete(s.byIP, a.IP)
	}
	if cur, ok := s.byKey[a.key()]; ok && cur.IP == a.IP {
		delete(s.byKey, a.key())
	}
	s.mu.Unlock()
	return nil
}

// inUse counts the addresses of subnet in use; callers hold mu.
func (s *store) inUse(subnet netip.Prefix) int {
	n := 0
	for ip := range s.byIP {
		if subnet.Contains(ip) {
			n++
		}
	}
	return n
}

// nextFree returns the first free host address after s.last (wrapping); callers hold mu.
func (s *store) nextFree(subnet netip.Prefix, gateway netip.Addr) (netip.Addr, bool) {
	first := subnet.Masked().Addr().Next()
	broadcast := model.LastAddr(subnet)
	usable := func(ip netip.Addr) bool {
		return ip != gateway && ip != broadcast && subnet.Contains(ip) && ip != subnet.Masked().Addr()
	}
	start := first
	if s.last.IsValid() && subnet.Contains(s.last) && s.last.Next().IsValid() && subnet.Contains(s.last.Next()) {
		start = s.last.Next()
	}
	size := 1 << (32 - subnet.Bits())
	ip := start
	for range size {
		if !subnet.Contains(ip) {
			ip = first
		}
		if usable(ip) {
			if _, taken := s.byIP[ip]; !taken {
				return ip, true
			}
		}
		ip = ip.Next()
	}
	return netip.Addr{}, false
}

// write stores a's record atomically: temporary file, rename (no fsync, see store).
func (s *store) write(a Attachment) error {
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode the record of %s: %w", a.IP, err)
	}
	if err := writeFileAtomic(s.dir, a.IP.String()+".json", append(b, '\n'), 0o600, false); err != nil {
		return fmt.Errorf("failed to persist the allocation of %s: %w", a.IP, err)
	}
	return nil
}

// writeFileAtomic replaces dir/name with data so that readers see the old or the new content; durable adds the
// fsyncs (file and directory) that extend this to a crash of the node.
func writeFileAtomic(dir, name string, data []byte, perm os.FileMode, durable bool) error {
	f, err := os.CreateTemp(dir, ".tmp-"+name+"-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if durable {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	ok = true
	if !durable {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
