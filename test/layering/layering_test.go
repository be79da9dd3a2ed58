package layering

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/vxflow/vxflow/internal/testutil/envtestutil"
)

const module = "github.com/vxflow/vxflow/"

// listedPackage is the part of `go list -json` this test reads.
type listedPackage struct {
	ImportPath string
	Imports    []string
}

func listPackages(t *testing.T) []listedPackage {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = envtestutil.RepoRoot()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("failed to list packages: %v", err)
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p listedPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("failed to parse go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// rule says which packages (by prefix) may not import what (by prefix), and why.
type rule struct {
	packages string
	allowed  func(imp string) bool
	why      string
}

func TestLayering(t *testing.T) {
	ioLibraries := []string{
		"os/exec", "net/http", "github.com/vishvananda/", "github.com/ovn-org/libovsdb", "github.com/digitalocean/go-openvswitch",
		"github.com/google/nftables", "sigs.k8s.io/controller-runtime", "k8s.io/client-go",
	}
	rules := []rule{
		{module + "api/", func(imp string) bool {
			return !strings.Contains(imp, ".") || strings.HasPrefix(imp, "k8s.io/apimachinery/")
		}, "the API types may import only the standard library and k8s.io/apimachinery"},
		{module + "internal/render/", func(imp string) bool {
			for _, p := range ioLibraries {
				if strings.HasPrefix(imp, p) {
					return false
				}
			}
			return !strings.HasPrefix(imp, module+"internal/apply/")
		}, "renderers are pure: no exec, HTTP, netlink, OVS, nftables, API clients or appliers"},
		{module + "internal/model", func(imp string) bool {
			for _, p := range ioLibraries {
				if strings.HasPrefix(imp, p) {
					return false
				}
			}
			return !strings.HasPrefix(imp, module+"internal/apply/")
		}, "the model is pure: it validates API objects, it does not fetch or apply them"},
		{module + "controllers", func(imp string) bool {
			return !strings.HasPrefix(imp, module+"internal/apply/")
		}, "controllers never touch a node's data plane"},
	}
	for _, p := range listPackages(t) {
		for _, r := range rules {
			if !strings.HasPrefix(p.ImportPath, r.packages) {
				continue
			}
			for _, imp := range p.Imports {
				if !r.allowed(imp) {
					t.Errorf("%s imports %s: %s", p.ImportPath, imp, r.why)
				}
			}
		}
	}

	// Only the appliers (and their own tests' helpers) talk to OVS, netlink and nf_tables.
	owners := map[string]string{
		"github.com/ovn-org/libovsdb":            module + "internal/apply/ovs",
		"github.com/digitalocean/go-openvswitch": module + "internal/apply/ovs",
		"github.com/vishvananda/netlink":         module + "internal/apply/link",
		"github.com/google/nftables":             module + "internal/apply/nft",
	}
	for _, p := range listPackages(t) {
		for _, imp := range p.Imports {
			for lib, owner := range owners {
				if strings.HasPrefix(imp, lib) && !strings.HasPrefix(p.ImportPath, owner) {
					t.Errorf("%s imports %s: only %s may", p.ImportPath, imp, owner)
				}
			}
		}
	}
}
