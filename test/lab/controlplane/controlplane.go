package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/vxflow/vxflow/test/lab/proc"
)

// Layout of the control plane's files under the lab's state directory.
const (
	// Namespace is where vxflow's controller lives (leader election), as in config/manager.
	Namespace = "vxflow-system"
	// AdminUser is the lab's cluster-admin (group system:masters).
	AdminUser = "vxflow-lab:admin"
	// ControllerUser is the identity of vxflow-controller.
	ControllerUser = "vxflow-controller"
	// ControllersGroup is bound to config/rbac/controller's roles.
	ControllersGroup = "vxflow:controllers"
	// AgentsGroup is bound to config/rbac/agent's ClusterRole; every agent has its own user in it.
	AgentsGroup = "vxflow:agents"
	// fieldManager names the lab in managedFields.
	fieldManager = "vxflow-lab"
)

// Options configure the control plane.
type Options struct {
	// StateDir is the lab's state directory; everything the control plane writes goes below it.
	StateDir string
	// RepoRoot holds config/crd/bases and config/rbac.
	RepoRoot string
	// Assets is the directory with kube-apiserver and etcd (KUBEBUILDER_ASSETS).
	Assets string
	// Address is the underlay address the API server listens on and advertises.
	Address string
	// Port is the API server's secure port.
	Port int
	// ServiceCIDR is the service network the API server allocates ClusterIPs from.
	ServiceCIDR string
}

// Dir returns the control plane's directory under the lab's state directory.
func Dir(stateDir string) string { return filepath.Join(stateDir, "cp") }

// SocketPath returns the unix socket that creates users.
func SocketPath(stateDir string) string { return filepath.Join(Dir(stateDir), "control.sock") }

// ReadyPath returns the file written once the API server serves, the CRDs and RBAC are in and the first
// kubeconfigs exist.
func ReadyPath(stateDir string) string { return filepath.Join(Dir(stateDir), "ready") }

// KubeconfigPath returns where the kubeconfig of a user (by file name stem, e.g. "admin") is written.
func KubeconfigPath(stateDir, stem string) string {
	return filepath.Join(stateDir, "kubeconfig", stem+".kubeconfig")
}

// Ready is the content of the ready file.
type Ready struct {
	Server    string    `json:"server"`
	StartedIn string    `json:"startedIn"`
	Time      time.Time `json:"time"`
}

// Run starts the control plane, prepares it for vxflow and serves user requests until ctx ends, then stops it.
func Run(ctx context.Context, o Options) (retErr error) {
	start := time.Now()
	cpDir := Dir(o.StateDir)
	for _, d := range []string{filepath.Join(cpDir, "pki"), filepath.Join(cpDir, "etcd"), filepath.Join(o.StateDir, "kubeconfig"),
		filepath.Join(o.StateDir, "logs")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return fmt.Errorf("failed to create %s: %w", d, err)
		}
	}
	apiLog, err := os.OpenFile(filepath.Join(o.StateDir, "logs", "kube-apiserver.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("failed to open the kube-apiserver log: %w", err)
	}
	defer apiLog.Close()
	etcdLog, err := os.OpenFile(filepath.Join(o.StateDir, "logs", "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("failed to open the etcd log: %w", err)
	}
	defer etcdLog.Close()

	api := &envtest.APIServer{CertDir: filepath.Join(cpDir, "pki"), Out: apiLog, Err: apiLog}
	api.SecureServing.Address = o.Address
	api.SecureServing.Port = strconv.Itoa(o.Port)
	// envtest's defaults have no advertise address; the apiserver then needs a default route to pick one
	// (lab.md part B, pitfall 3), and the endpoint reconciler refuses loopback.
	api.Configure().Set("advertise-address", o.Address)
	api.Configure().Set("service-cluster-ip-range", o.ServiceCIDR)
	env := &envtest.Environment{
		ControlPlane: envtest.ControlPlane{
			APIServer: api,
			Etcd:      &envtest.Etcd{DataDir: filepath.Join(cpDir, "etcd"), Out: etcdLog, Err: etcdLog},
		},
		BinaryAssetsDirectory:   o.Assets,
		CRDDirectoryPaths:       []string{filepath.Join(o.RepoRoot, "config", "crd", "bases")},
		ErrorIfCRDPathMissing:   true,
		ControlPlaneStopTimeout: 20 * time.Second,
	}
	cfg, err := env.Start()
	recordChildren(o.StateDir)
	if err != nil {
		_ = env.Stop()
		return fmt.Errorf("failed to start the control plane: %w", err)
	}
	defer func() {
		if err := env.Stop(); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("failed to stop the control plane: %w", err))
		}
	}()

	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return fmt.Errorf("failed to create a client: %w", err)
	}
	if err := prepare(ctx, c, o.RepoRoot); err != nil {
		return err
	}
	users := &userMinter{env: env, stateDir: o.StateDir}
	for _, u := range []struct {
		stem, name string
		groups     []string
	}{
		{"admin", AdminUser, []string{"system:masters"}},
		{"controller", ControllerUser, []string{ControllersGroup}},
	} {
		if _, err := users.mint(u.stem, u.name, u.groups); err != nil {
			return err
		}
	}

	sock := SocketPath(o.StateDir)
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", sock, err)
	}
	srv := &http.Server{Handler: users, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	ready := Ready{Server: cfg.Host, StartedIn: time.Since(start).Round(time.Millisecond).String(), Time: time.Now()}
	b, _ := json.Marshal(ready)
	if err := os.WriteFile(ReadyPath(o.StateDir), b, 0o640); err != nil {
		return fmt.Errorf("failed to write %s: %w", ReadyPath(o.StateDir), err)
	}
	fmt.Printf("Control plane ready at %s in %s\n", cfg.Host, ready.StartedIn)
	<-ctx.Done()
	_ = os.Remove(ReadyPath(o.StateDir))
	return nil
}

// recordChildren writes the PIDs of kube-apiserver and etcd into the lab's pids directory, so a teardown
// after this program was killed still finds them (their command lines name the state directory).
func recordChildren(stateDir string) {
	for _, pid := range proc.Children(os.Getpid()) {
		if name := proc.Comm(pid); name == "kube-apiserver" || name == "etcd" {
			_ = proc.WritePIDFile(filepath.Join(stateDir, "pids", "cp-"+name+".pid"), pid)
		}
	}
}

// prepare creates vxflow's namespace, applies config/rbac and binds its roles to the lab's groups.
func prepare(ctx context.Context, c client.Client, repoRoot string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("failed to create namespace %s: %w", Namespace, err)
	}
	for _, dir := range []string{"controller", "agent"} {
		files, err := filepath.Glob(filepath.Join(repoRoot, "config", "rbac", dir, "*.yaml"))
		if err != nil {
			return fmt.Errorf("failed to list config/rbac/%s: %w", dir, err)
		}
		for _, f := range files {
			if filepath.Base(f) == "kustomization.yaml" {
				continue
			}
			if err := applyFile(ctx, c, f); err != nil {
				return err
			}
		}
	}
	bindings := []client.Object{
		&rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "vxflow-lab:controller"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "vxflow-controller"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: ControllersGroup}},
		},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "vxflow-lab:controller-leader-election", Namespace: Namespace},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "vxflow-controller-leader-election"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: ControllersGroup}},
		},
		&rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "vxflow-lab:agents"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "vxflow-agent"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: AgentsGroup}},
		},
	}
	for _, b := range bindings {
		if err := c.Create(ctx, b); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("failed to create %T %s: %w", b, b.GetName(), err)
		}
	}
	return nil
}

// applyFile server-side applies every document of a YAML file.
func applyFile(ctx context.Context, c client.Client, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("failed to read %s: %w", path, err)
	}
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			return fmt.Errorf("failed to parse document %d of %s: %w", i, path, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if err := c.Patch(ctx, u, client.Apply, client.FieldOwner(fieldManager), client.ForceOwnership); err != nil { //nolint:staticcheck // unstructured apply
			return fmt.Errorf("failed to apply %s %s from %s: %w", u.GetKind(), u.GetName(), path, err)
		}
	}
	return nil
}

// userMinter creates users on envtest's client CA and writes their kubeconfigs.
type userMinter struct {
	mu       sync.Mutex
	env      *envtest.Environment
	stateDir string
}

// UserRequest asks the control plane for a kubeconfig.
type UserRequest struct {
	// Stem names the kubeconfig file (kubeconfig/<stem>.kubeconfig).
	Stem   string   `json:"stem"`
	Name   string   `json:"name"`
	Groups []string `json:"groups"`
}

// UserResponse carries the kubeconfig's path.
type UserResponse struct {
	Kubeconfig string `json:"kubeconfig"`
}

var stemRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,62}$`)

func (m *userMinter) mint(stem, name string, groups []string) (string, error) {
	if !stemRE.MatchString(stem) || name == "" {
		return "", fmt.Errorf("failed to add user %q: invalid stem %q or empty name", name, stem)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	u, err := m.env.AddUser(envtest.User{Name: name, Groups: groups}, &rest.Config{QPS: 100, Burst: 200})
	if err != nil {
		return "", fmt.Errorf("failed to add user %s: %w", name, err)
	}
	kc, err := u.KubeConfig()
	if err != nil {
		return "", fmt.Errorf("failed to render the kubeconfig of %s: %w", name, err)
	}
	path := KubeconfigPath(m.stateDir, stem)
	if err := os.WriteFile(path+".tmp", kc, 0o600); err != nil {
		return "", fmt.Errorf("failed to write %s: %w", path, err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return "", fmt.Errorf("failed to rename %s: %w", path, err)
	}
	return path, nil
}

// ServeHTTP handles POST /users.
func (m *userMinter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/users" {
		http.Error(w, "only POST /users", http.StatusNotFound)
		return
	}
	var req UserRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	path, err := m.mint(req.Stem, req.Name, req.Groups)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	_ = json.NewEncoder(w).Encode(UserResponse{Kubeconfig: path})
}

// AddUser asks a running control plane (through its socket) for a kubeconfig and returns its path.
func AddUser(ctx context.Context, stateDir string, req UserRequest) (string, error) {
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", SocketPath(stateDir))
		},
	}, Timeout: 30 * time.Second}
	body, _ := json.Marshal(req)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://control-plane/users", strings.NewReader(string(body)))
	if err != nil {
		return "", fmt.Errorf("failed to build the user request: %w", err)
	}
	resp, err := hc.Do(hreq)
	if err != nil {
		return "", fmt.Errorf("failed to ask the control plane for user %s: %w", req.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		return "", fmt.Errorf("failed to add user %s: %s", req.Name, strings.TrimSpace(string(msg)))
	}
	var out UserResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", fmt.Errorf("failed to decode the user response: %w", err)
	}
	return out.Kubeconfig, nil
}
