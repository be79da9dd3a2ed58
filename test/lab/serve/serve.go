package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// MaxBytes caps /bytes so a typo cannot make the server stream forever.
const MaxBytes = 1 << 30

// Handler answers:
//
//	GET /          the server's name
//	GET /client    the client address the server saw (ip:port), to check SNAT and masquerade
//	GET /bytes?n=N N bytes, to check that large transfers pass (MTU)
//	GET /healthz   ok
func Handler(name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, name)
	})
	mux.HandleFunc("GET /client", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, r.RemoteAddr)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 0 || n > MaxBytes {
			http.Error(w, fmt.Sprintf("n must be an integer in [0, %d]", MaxBytes), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(n))
		buf := make([]byte, 32<<10)
		for i := range buf {
			buf[i] = 'a' + byte(i%26)
		}
		for n > 0 {
			k := min(n, len(buf))
			if _, err := w.Write(buf[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	return mux
}

// Run serves Handler(name) on every address until ctx ends.
func Run(ctx context.Context, name string, addrs []string) error {
	if len(addrs) == 0 {
		return errors.New("failed to serve: no listen address")
	}
	errc := make(chan error, len(addrs))
	var servers []*http.Server
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			for _, s := range servers {
				_ = s.Close()
			}
			return fmt.Errorf("failed to listen on %s: %w", a, err)
		}
		s := &http.Server{Handler: Handler(name), ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, s)
		go func() { errc <- s.Serve(ln) }()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	for _, s := range servers {
		_ = s.Close()
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Drain reads and counts a response body, for callers checking large transfers.
func Drain(r io.Reader) (int64, error) { return io.Copy(io.Discard, r) }
