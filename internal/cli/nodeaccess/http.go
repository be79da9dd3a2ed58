package nodeaccess

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The debug endpoint's paths, served by the agent on its metrics address.
const (
	// PathTrace takes a TraceRequest (POST, JSON) and answers an Output.
	PathTrace = "/debug/trace"
	// PathFlows answers the bridge's flow dump as text/plain (GET, ?bridge=br0).
	PathFlows = "/debug/flows"
	// PathNFTables answers table ip vxflow as text/plain (GET).
	PathNFTables = "/debug/nftables"
	// PathRoute takes a RouteQuery (POST, JSON) and answers an Output.
	PathRoute = "/debug/route"
)

// maxBody bounds request bodies and the responses the client reads.
const (
	maxRequestBody  = 64 << 10
	maxResponseBody = 64 << 20
)

// Register serves the four debug queries of local (the node's own access, normally an Exec with the
// agent's OVS_RUNDIR) on mux. The handlers never run anything but the four fixed, read-only commands with
// validated arguments.
func Register(mux *http.ServeMux, local Interface) {
	mux.HandleFunc("POST "+PathTrace, func(w http.ResponseWriter, r *http.Request) {
		var req TraceRequest
		if !decodeBody(w, r, &req) {
			return
		}
		if req.Bridge == "" {
			req.Bridge = DefaultBridge
		}
		if err := req.Validate(); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		out, err := local.OFProtoTrace(r.Context(), "", req)
		writeOutput(w, out, err)
	})
	mux.HandleFunc("GET "+PathFlows, func(w http.ResponseWriter, r *http.Request) {
		bridge := r.URL.Query().Get("bridge")
		if bridge == "" {
			bridge = DefaultBridge
		}
		if err := ValidateBridge(bridge); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		out, err := local.DumpFlows(r.Context(), "", bridge)
		writeText(w, out, err)
	})
	mux.HandleFunc("GET "+PathNFTables, func(w http.ResponseWriter, r *http.Request) {
		out, err := local.NFTTable(r.Context(), "")
		writeText(w, out, err)
	})
	mux.HandleFunc("POST "+PathRoute, func(w http.ResponseWriter, r *http.Request) {
		var q RouteQuery
		if !decodeBody(w, r, &q) {
			return
		}
		if err := q.Validate(); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		out, err := local.RouteGet(r.Context(), "", q)
		writeOutput(w, out, err)
	})
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("invalid JSON body: %w", err))
		return false
	}
	return true
}

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(ErrorResponse{Error: err.Error()})
}

func writeOutput(w http.ResponseWriter, out string, err error) {
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(Output{Output: out})
}

func writeText(w http.ResponseWriter, out string, err error) {
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, out)
}

// HTTP is the Interface that asks each node's agent over its debug endpoint.
type HTTP struct {
	// Addresses maps a node name to the agent's base URL, for example "http://10.10.12.11:9443".
	Addresses map[string]string
	// Client is the HTTP client; a client with a DefaultTimeout when nil.
	Client *http.Client
}

var _ Interface = &HTTP{}

func (h *HTTP) client() *http.Client {
	if h.Client != nil {
		return h.Client
	}
	return &http.Client{Timeout: DefaultTimeout}
}

// do sends one request to node's agent and returns the response body.
func (h *HTTP) do(ctx context.Context, node, method, path string, body any) ([]byte, error) {
	base, ok := h.Addresses[node]
	if !ok {
		return nil, fmt.Errorf("failed to reach node %s: no agent address known for it", node)
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("failed to encode the request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(base, "/")+path, rd)
	if err != nil {
		return nil, fmt.Errorf("failed to build the request to node %s: %w", node, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := h.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("failed to reach the agent of node %s at %s: %w", node, base, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return nil, fmt.Errorf("failed to read the answer of node %s's agent after %s: %w", node, time.Since(start), err)
	}
	if resp.StatusCode/100 != 2 {
		var e ErrorResponse
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("the agent of node %s answered %s: %s", node, resp.Status, e.Error)
		}
		if resp.StatusCode == http.StatusNotFound {
			return nil, fmt.Errorf("the agent of node %s has no %s endpoint (404): it predates the debug endpoint", node, path)
		}
		return nil, fmt.Errorf("the agent of node %s answered %s: %s", node, resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}

func (h *HTTP) output(ctx context.Context, node, path string, body any) (string, error) {
	b, err := h.do(ctx, node, http.MethodPost, path, body)
	if err != nil {
		return "", err
	}
	var o Output
	if err := json.Unmarshal(b, &o); err != nil {
		return "", fmt.Errorf("failed to decode the answer of node %s's agent: %w", node, err)
	}
	return o.Output, nil
}

// OFProtoTrace is part of Interface.
func (h *HTTP) OFProtoTrace(ctx context.Context, node string, req TraceRequest) (string, error) {
	if err := req.Validate(); err != nil {
		return "", fmt.Errorf("failed to trace on node %s: %w", node, err)
	}
	return h.output(ctx, node, PathTrace, req)
}

// DumpFlows is part of Interface.
func (h *HTTP) DumpFlows(ctx context.Context, node, bridge string) (string, error) {
	if err := ValidateBridge(bridge); err != nil {
		return "", errors.New("failed to dump flows: " + err.Error())
	}
	b, err := h.do(ctx, node, http.MethodGet, PathFlows+"?bridge="+url.QueryEscape(bridge), nil)
	return string(b), err
}

// NFTTable is part of Interface.
func (h *HTTP) NFTTable(ctx context.Context, node string) (string, error) {
	b, err := h.do(ctx, node, http.MethodGet, PathNFTables, nil)
	return string(b), err
}

// RouteGet is part of Interface.
func (h *HTTP) RouteGet(ctx context.Context, node string, q RouteQuery) (string, error) {
	if err := q.Validate(); err != nil {
		return "", fmt.Errorf("failed to look up a route on node %s: %w", node, err)
	}
	return h.output(ctx, node, PathRoute, q)
}
