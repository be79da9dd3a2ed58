package cni

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/vxflow/vxflow/internal/cni/wire"
)

// TestWriteConfList is a unit test: the conflist is valid for libcni, carries the socket, is rewritten
// only when it changes and is removed without error even when missing.
func TestWriteConfList(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net.d")
	path, err := WriteConfList(dir, ConfListOptions{SocketPath: "/run/x/cni.sock", DNS: types.DNS{Nameservers: []string{"172.30.0.10"}}})
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromFile(path)
	if err != nil {
		t.Fatalf("libcni rejected the conflist: %v", err)
	}
	if list.Name != wire.NetworkName || list.CNIVersion != wire.CNIVersion || len(list.Plugins) != 1 ||
		list.Plugins[0].Network.Type != wire.PluginType {
		t.Errorf("conflist = %+v", list)
	}
	conf, err := wire.ParseNetConf(list.Plugins[0].Bytes)
	if err != nil || conf.Socket != "/run/x/cni.sock" || len(conf.DNS.Nameservers) != 1 {
		t.Errorf("plugin conf = %+v, %v", conf, err)
	}
	before, _ := os.Stat(path)
	if _, err := WriteConfList(dir, ConfListOptions{SocketPath: "/run/x/cni.sock", DNS: types.DNS{Nameservers: []string{"172.30.0.10"}}}); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(path)
	if !after.ModTime().Equal(before.ModTime()) || !os.SameFile(before, after) {
		t.Error("an identical conflist was rewritten")
	}
	if err := RemoveConfList(dir); err != nil {
		t.Fatal(err)
	}
	if err := RemoveConfList(dir); err != nil {
		t.Errorf("removing a missing conflist: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left in %s: %v", dir, entries)
	}
}

// TestInstallPluginAndHelp is a unit test of the DaemonSet init step on the real binary: the installed file
// is executable, answers VERSION with spec 1.1.0 and --help truthfully, and replacing it works.
func TestInstallPluginAndHelp(t *testing.T) {
	src := filepath.Join(pluginPath(t), "vxflow-cni")
	binDir := filepath.Join(t.TempDir(), "opt", "cni", "bin")
	for range 2 {
		dst, err := InstallPlugin(src, binDir)
		if err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o755 {
			t.Fatalf("installed plugin: %v %v", fi, err)
		}
	}
	if entries, _ := os.ReadDir(binDir); len(entries) != 1 {
		t.Errorf("left in %s: %v", binDir, entries)
	}
	dst := filepath.Join(binDir, wire.PluginType)
	cmd := exec.Command(dst)
	cmd.Env = []string{"CNI_COMMAND=VERSION"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(out, &v); err != nil || !strings.Contains(strings.Join(v.SupportedVersions, ","), "1.1.0") {
		t.Errorf("VERSION answered %s (%v)", out, err)
	}
	help, err := exec.Command(dst, "--help").Output()
	if err != nil || !bytes.Contains(help, []byte("ADD, DEL, CHECK, STATUS, GC or VERSION")) || !bytes.Contains(help, []byte("/var/run/vxflow/cni.sock")) {
		t.Errorf("--help: %s (%v)", help, err)
	}
	if _, err := InstallPlugin(filepath.Join(t.TempDir(), "missing"), binDir); err == nil {
		t.Error("installing a missing binary succeeded")
	}
}
