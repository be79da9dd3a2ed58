package cni

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/vxflow/vxflow/internal/model"
)

func testAttachment(id string) Attachment {
	return Attachment{ContainerID: id, IfName: "eth0", Netns: "/run/netns/" + id, HostIfName: HostVethName(id, "eth0")}
}

// TestStoreAllocate is a unit test of the address allocator: never the network, gateway or broadcast
// address, every usable address once, then ErrPoolExhausted; next-fit after a release.
func TestStoreAllocate(t *testing.T) {
	for _, tc := range []struct {
		subnet, gateway string
		usable          int
	}{
		{"10.128.0.0/23", "10.128.0.1", 509},
		{"10.128.0.8/29", "10.128.0.9", 5},
		{"10.128.0.4/30", "10.128.0.5", 1},
	} {
		t.Run(tc.subnet, func(t *testing.T) {
			s, err := openStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			subnet, gw := netip.MustParsePrefix(tc.subnet), netip.MustParseAddr(tc.gateway)
			seen := map[netip.Addr]bool{}
			for i := range tc.usable {
				a, err := s.allocate(subnet, gw, testAttachment(fmt.Sprintf("c%d", i)))
				if err != nil {
					t.Fatalf("allocation %d: %v", i, err)
				}
				if a.IP == subnet.Addr() || a.IP == gw || a.IP == model.LastAddr(subnet) || !subnet.Contains(a.IP) || seen[a.IP] {
					t.Fatalf("allocation %d gave %s", i, a.IP)
				}
				seen[a.IP] = true
			}
			if _, err := s.allocate(subnet, gw, testAttachment("one-too-many")); !errors.Is(err, ErrPoolExhausted) {
				t.Fatalf("allocation past the end: %v, want ErrPoolExhausted", err)
			}
		})
	}
}

// TestStoreNextFitAndReload is a unit test: a released address is not handed out again before the others,
// records survive a reopen (a restarted agent), and a duplicate key is refused.
func TestStoreNextFitAndReload(t *testing.T) {
	dir := t.TempDir()
	s, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	subnet, gw := netip.MustParsePrefix("10.128.0.0/23"), netip.MustParseAddr("10.128.0.1")
	a, _ := s.allocate(subnet, gw, testAttachment("a"))
	b, _ := s.allocate(subnet, gw, testAttachment("b"))
	if a.IP != netip.MustParseAddr("10.128.0.2") || b.IP != netip.MustParseAddr("10.128.0.3") {
		t.Fatalf("first addresses %s %s", a.IP, b.IP)
	}
	if err := s.release(a); err != nil {
		t.Fatal(err)
	}
	c, _ := s.allocate(subnet, gw, testAttachment("c"))
	if c.IP != netip.MustParseAddr("10.128.0.4") {
		t.Errorf("after releasing .2 the next address was %s, want 10.128.0.4 (next-fit)", c.IP)
	}
	if _, err := s.allocate(subnet, gw, testAttachment("c")); err == nil {
		t.Error("a second allocation for the same container succeeded")
	}
	// A leftover temporary file of a crashed write is removed on open.
	if err := os.WriteFile(filepath.Join(dir, ".tmp-10.128.0.9.json-123"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	s2, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := s2.list()
	if len(got) != 2 || got[0].ContainerID != "b" || got[1].ContainerID != "c" || got[1].Netns != "/run/netns/c" {
		t.Fatalf("reloaded %+v", got)
	}
	if _, err := os.Stat(filepath.Join(dir, ".tmp-10.128.0.9.json-123")); !os.IsNotExist(err) {
		t.Errorf("the temporary file survived: %v", err)
	}
	d, _ := s2.allocate(subnet, gw, testAttachment("d"))
	if d.IP != netip.MustParseAddr("10.128.0.5") {
		t.Errorf("after reload the next address was %s, want 10.128.0.5", d.IP)
	}
	if fi, err := os.Stat(filepath.Join(dir, "10.128.0.5.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("record file: %v %v", fi, err)
	}
}

// TestStoreRefusesCorruptRecords is a unit test: a record that is not an attachment stops the server
// rather than letting it hand out an address that may be in use.
func TestStoreRefusesCorruptRecords(t *testing.T) {
	for name, content := range map[string]string{
		"10.128.0.2.json": "not json",
		"10.128.0.3.json": `{"containerID":"x","ip":"10.128.0.4"}`,
		"10.128.0.5.json": `{"ip":"10.128.0.5"}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := openStore(dir); err == nil {
				t.Errorf("openStore accepted %s: %s", name, content)
			}
		})
	}
}

// TestStoreSetsAsideEmptyRecords is a unit test: an empty record, what a node crash leaves of a record
// written without fsync just before it, is renamed away and its address is free again.
func TestStoreSetsAsideEmptyRecords(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "10.128.0.2.json"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := openStore(dir)
	if err != nil {
		t.Fatalf("openStore refused an empty record: %v", err)
	}
	if want := []string{filepath.Join(dir, "10.128.0.2.json")}; !slices.Equal(s.setAside, want) {
		t.Errorf("setAside = %v, want %v", s.setAside, want)
	}
	if _, err := os.Stat(filepath.Join(dir, ".lost-10.128.0.2.json")); err != nil {
		t.Errorf("the empty record was not renamed: %v", err)
	}
	a, err := s.allocate(netip.MustParsePrefix("10.128.0.0/24"), netip.MustParseAddr("10.128.0.1"),
		Attachment{ContainerID: "c", IfName: "eth0"})
	if err != nil || a.IP != netip.MustParseAddr("10.128.0.2") {
		t.Errorf("allocate = %v, %v; want 10.128.0.2 (free again)", a.IP, err)
	}
	if _, err := openStore(dir); err != nil {
		t.Errorf("openStore failed on the set-aside record at the next start: %v", err)
	}
}

// TestStoreConcurrent is a unit test (run it with -race): parallel allocations get distinct addresses
// and all are on disk.
func TestStoreConcurrent(t *testing.T) {
	dir := t.TempDir()
	s, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	subnet, gw := netip.MustParsePrefix("10.128.0.0/24"), netip.MustParseAddr("10.128.0.1")
	var wg sync.WaitGroup
	ips := make([]netip.Addr, 100)
	for i := range ips {
		wg.Go(func() {
			a, err := s.allocate(subnet, gw, testAttachment(fmt.Sprintf("p%d", i)))
			if err != nil {
				t.Error(err)
				return
			}
			ips[i] = a.IP
		})
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for _, ip := range ips {
		if seen[ip] {
			t.Errorf("%s given twice", ip)
		}
		seen[ip] = true
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 100 {
		t.Errorf("%d records on disk, want 100", len(entries))
	}
}

// FuzzStoreNextFree is a fuzz test of the allocator: for any subnet, gateway and set of used addresses, an
// address it returns is a usable free host address of the subnet.
func FuzzStoreNextFree(f *testing.F) {
	f.Add(uint32(0x0a800000), uint8(23), uint8(1), uint64(0))
	f.Add(uint32(0x0a800008), uint8(29), uint8(1), uint64(0xff))
	f.Fuzz(func(t *testing.T, base uint32, bits, gwOffset uint8, used uint64) {
		bits = 20 + bits%11 // /20 ... /30
		b := [4]byte{byte(base >> 24), byte(base >> 16), byte(base >> 8), byte(base)}
		subnet := netip.PrefixFrom(netip.AddrFrom4(b), int(bits)).Masked()
		gw := subnet.Addr()
		for range int(gwOffset) % (1 << (32 - bits)) {
			gw = gw.Next()
		}
		s := &store{byKey: map[attKey]Attachment{}, byIP: map[netip.Addr]attKey{}}
		ip := subnet.Addr()
		for i := range 64 {
			if used&(1<<i) != 0 {
				s.byIP[ip] = attKey{containerID: ip.String()}
			}
			ip = ip.Next()
		}
		got, ok := s.nextFree(subnet, gw)
		if !ok {
			return
		}
		if !subnet.Contains(got) || got == subnet.Addr() || got == gw || got == model.LastAddr(subnet) {
			t.Fatalf("nextFree(%s, gw %s) = %s", subnet, gw, got)
		}
		if _, taken := s.byIP[got]; taken {
			t.Fatalf("nextFree returned the used address %s", got)
		}
	})
}
