package cni

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
	"strconv"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/vxflow/vxflow/internal/cni/wire"
	"github.com/vxflow/vxflow/internal/model"
)

// DefaultStateDir is where the server persists its attachments unless configured otherwise: under /var/run,
// a tmpfs on most nodes, so records outlive agent restarts but not a reboot, as the pods they describe.
const DefaultStateDir = "/var/run/vxflow/cni"

// ChecksumOffload decides whether pods keep transmit checksum offload.
type ChecksumOffload string

const (
	// ChecksumOffloadAuto turns it off in pods when br0 uses the userspace (netdev) datapath, which needs it
	// off (lab.md part A §2), and leaves it on with the kernel datapath.
	ChecksumOffloadAuto ChecksumOffload = "auto"
	// ChecksumOffloadOff always turns it off in pods.
	ChecksumOffloadOff ChecksumOffload = "off"
	// ChecksumOffloadOn never touches it.
	ChecksumOffloadOn ChecksumOffload = "on"
)

// ServerConfig configures the CNI server.
type ServerConfig struct {
	// SocketPath is the unix socket to listen on; empty means wire.DefaultSocketPath. Its directory is made
	// (or reset to) 0700 and the socket 0600: only root may attach pods.
	SocketPath string
	// StateDir holds one record per allocated address; empty means DefaultStateDir.
	StateDir string
	// HostNetNS is the path of the network namespace of br0 and the veths' host ends; empty means the
	// agent's own. Tests set it to the namespace of their private Open vSwitch.
	HostNetNS string
	// PodTxChecksum is the checksum-offload workaround; empty means ChecksumOffloadAuto.
	PodTxChecksum ChecksumOffload
	// Logger receives the server's logs; the zero value means klog's global logger.
	Logger klog.Logger
	// Registerer, when set, receives the server's metrics.
	Registerer prometheus.Registerer
}

// Server is the agent's CNI server: the vxflow-cni plugin forwards every CNI request to it.
type Server struct {
	cfg     ServerConfig
	network PodNetwork
	ports   Ports
	log     klog.Logger
	store   *store
	locks   keyedMutex
	metrics *metrics

	mu      sync.Mutex
	ofports map[attKey]int

	listener net.Listener
}

// NewServer checks the configuration and loads the persisted attachments; it touches neither OVS nor the
// socket (see Reconcile, Listen and Serve, or Run).
func NewServer(cfg ServerConfig, network PodNetwork, ports Ports) (*Server, error) {
	if network == nil || ports == nil {
		return nil, errors.New("failed to create the CNI server: PodNetwork and Ports are required")
	}
	if cfg.SocketPath == "" {
		cfg.SocketPath = wire.DefaultSocketPath
	}
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	switch cfg.PodTxChecksum {
	case "":
		cfg.PodTxChecksum = ChecksumOffloadAuto
	case ChecksumOffloadAuto, ChecksumOffloadOff, ChecksumOffloadOn:
	default:
		return nil, fmt.Errorf("failed to create the CNI server: pod checksum offload %q is not auto, off or on", cfg.PodTxChecksum)
	}
	log := cfg.Logger
	if log.GetSink() == nil {
		log = klog.Background()
	}
	st, err := openStore(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("failed to create the CNI server: %w", err)
	}
	s := &Server{
		cfg:     cfg,
		network: network,
		ports:   ports,
		log:     log.WithName("cni"),
		store:   st,
		metrics: newMetrics(),
		ofports: map[attKey]int{},
	}
	for _, path := range st.setAside {
		s.log.Info("Set aside an empty attachment record", "path", path, "reason", "LostInNodeCrash")
	}
	if cfg.Registerer != nil {
		if err := s.metrics.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("failed to register the CNI metrics: %w", err)
		}
	}
	s.metrics.allocated.Set(float64(len(st.list())))
	return s, nil
}

// Run reconciles, listens and serves until ctx is done; the agent may instead call the three steps itself to
// read Pods between Reconcile and Serve.
func (s *Server) Run(ctx context.Context) error {
	if _, err := s.Reconcile(ctx); err != nil {
		return err
	}
	if err := s.Listen(); err != nil {
		return err
	}
	return s.Serve(ctx)
}

// Listen creates the socket's directory (0700) and the socket (0600). A stale socket nobody answers on is
// replaced; a live one is an error (another agent runs).
func (s *Server) Listen() error {
	sock := s.cfg.SocketPath
	dir := filepath.Dir(sock)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("failed to create the socket directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("failed to restrict the socket directory %s: %w", dir, err)
	}
	if fi, err := os.Lstat(sock); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("failed to listen on %s: it exists and is not a socket", sock)
		}
		if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
			_ = c.Close()
			return fmt.Errorf("failed to listen on %s: another CNI server answers there", sock)
		}
		if err := os.Remove(sock); err != nil {
			return fmt.Errorf("failed to remove the stale socket %s: %w", sock, err)
		}
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", sock, err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		_ = l.Close()
		return fmt.Errorf("failed to restrict the socket %s: %w", sock, err)
	}
	s.listener = l
	s.log.Info("Listened for CNI requests", "socket", sock)
	return nil
}

// Serve answers CNI requests on the socket made by Listen until ctx is done, then waits (up to 30 s) for the
// requests in flight and removes the socket.
func (s *Server) Serve(ctx context.Context) error {
	if s.listener == nil {
		return errors.New("failed to serve CNI requests: Listen was not called")
	}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	errCh := make(chan error, 1)
	go func() { errCh <- hs.Serve(s.listener) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		err := hs.Shutdown(sctx)
		<-errCh
		s.log.Info("Stopped serving CNI requests", "socket", s.cfg.SocketPath)
		if err != nil {
			return fmt.Errorf("failed to finish the CNI requests in flight: %w", err)
		}
		return nil
	case err := <-errCh:
		return fmt.Errorf("failed to serve CNI requests: %w", err)
	}
}

// ServeHTTP is part of http.Handler: it decodes one wire.Request, handles it and answers a wire.Response.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != wire.Path {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	var req wire.Request
	var resp wire.Response
	start := time.Now()
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		resp.Error = types.NewError(types.ErrDecodingFailure, "failed to decode the CNI request", err.Error())
	} else {
		result, herr := s.Handle(r.Context(), &req)
		if herr != nil {
			resp.Error = herr
		} else if result != nil {
			if resp.Result, err = json.Marshal(result); err != nil {
				resp.Error = types.NewError(types.ErrInternal, "failed to encode the CNI result", err.Error())
			}
		}
	}
	code := uint(0)
	if resp.Error != nil {
		code = resp.Error.Code
	}
	s.metrics.requests.WithLabelValues(req.Command, strconv.FormatUint(uint64(code), 10)).Observe(time.Since(start).Seconds())
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&resp)
}

// Handle runs one CNI request; it is what ServeHTTP calls, exported for in-process callers.
func (s *Server) Handle(ctx context.Context, req *wire.Request) (types.Result, *types.Error) {
	start := time.Now()
	result, err := s.handle(ctx, req)
	log := s.log.WithValues("command", req.Command, "container", req.ContainerID, "duration", time.Since(start).Round(time.Microsecond))
	if err != nil {
		ce := toCNIError(err)
		log.Info("Failed a CNI request", "code", ce.Code, "err", ce.Error())
		return nil, ce
	}
	log.V(2).Info("Handled a CNI request")
	return result, nil
}

func (s *Server) handle(ctx context.Context, req *wire.Request) (types.Result, error) {
	conf, err := wire.ParseNetConf(req.Config)
	if err != nil {
		return nil, &cniError{code: types.ErrDecodingFailure, msg: "failed to parse the network configuration", err: err}
	}
	switch req.Command {
	case wire.CommandAdd, wire.CommandCheck, wire.CommandDel:
		if req.ContainerID == "" || req.IfName == "" {
			return nil, &cniError{code: types.ErrInvalidEnvironmentVariables, msg: "CNI_CONTAINERID and CNI_IFNAME are required"}
		}
		if req.Command != wire.CommandDel && req.Netns == "" {
			return nil, &cniError{code: types.ErrInvalidEnvironmentVariables, msg: "CNI_NETNS is required"}
		}
	}
	switch req.Command {
	case wire.CommandAdd:
		return s.add(ctx, req, conf)
	case wire.CommandDel:
		return nil, s.del(ctx, req)
	case wire.CommandCheck:
		return nil, s.check(ctx, req, conf)
	case wire.CommandGC:
		return nil, s.gc(ctx, conf)
	case wire.CommandStatus:
		if _, err := s.nodeConfig(); err != nil {
			var ce *cniError
			if errors.As(err, &ce) {
				ce.code = wire.CodePluginNotAvailable
			}
			return nil, err
		}
		return nil, nil
	default:
		return nil, &cniError{code: types.ErrInvalidEnvironmentVariables, msg: fmt.Sprintf("unknown CNI command %q", req.Command)}
	}
}

// nodeConfig asks the agent for the node's network and says why pods cannot be added when it is not ready.
func (s *Server) nodeConfig() (NodeNetConfig, error) {
	nc, err := s.network.NodeConfig()
	if err == nil {
		err = nc.validate()
	}
	if err != nil {
		return NodeNetConfig{}, &cniError{code: wire.CodeTryAgainLater,
			msg: "the node network is not ready yet: " + err.Error(), err: err}
	}
	return nc, nil
}

// Pods returns the pods attached to br0 as this server knows them (address, MAC, ofport, sandbox), for the
// agent's model after Reconcile and before Serve; pods whose port has no ofport yet are left out.
func (s *Server) Pods() []model.LocalPod {
	s.mu.Lock()
	defer s.mu.Unlock()
	var pods []model.LocalPod
	for _, a := range s.store.list() {
		if ofport, ok := s.ofports[a.key()]; ok && ofport > 0 {
			pods = append(pods, localPod(a, ofport))
		}
	}
	return pods
}

func localPod(a Attachment, ofport int) model.LocalPod {
	return model.LocalPod{
		Namespace: a.Namespace,
		Name:      a.Name,
		SandboxID: a.ContainerID,
		IP:        a.IP,
		MAC:       model.PodMAC(a.IP),
		OFPort:    int32(ofport),
		VNID:      model.GlobalVNID,
	}
}

func (s *Server) setOFPort(k attKey, ofport int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ofport > 0 {
		s.ofports[k] = ofport
	} else {
		delete(s.ofports, k)
	}
}

// cniError carries the CNI error code and a message for a person; err holds the details.
type cniError struct {
	code uint
	msg  string
	err  error
}

func (e *cniError) Error() string {
	if e.err == nil {
		return e.msg
	}
	return e.msg + ": " + e.err.Error()
}

func (e *cniError) Unwrap() error { return e.err }

// toCNIError turns any error into the CNI error the plugin prints.
func toCNIError(err error) *types.Error {
	var ce *cniError
	if errors.As(err, &ce) {
		details := ""
		if ce.err != nil {
			details = ce.err.Error()
		}
		return types.NewError(ce.code, ce.msg, details)
	}
	return types.NewError(wire.CodeSetupFailed, err.Error(), "")
}
