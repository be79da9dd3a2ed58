package serve

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(Handler("pod-a"))
	defer srv.Close()
	tests := []struct {
		path       string
		wantStatus int
		check      func(t *testing.T, body string)
	}{
		{"/", http.StatusOK, func(t *testing.T, b string) {
			if b != "pod-a\n" {
				t.Errorf("body = %q, want the name", b)
			}
		}},
		{"/client", http.StatusOK, func(t *testing.T, b string) {
			if !strings.HasPrefix(b, "127.0.0.1:") {
				t.Errorf("body = %q, want the client's loopback address", b)
			}
		}},
		{"/bytes?n=100000", http.StatusOK, func(t *testing.T, b string) {
			if len(b) != 100000 || b[:3] != "abc" {
				t.Errorf("got %d bytes starting %q, want 100000 starting abc", len(b), b[:min(3, len(b))])
			}
		}},
		{"/bytes?n=-1", http.StatusBadRequest, nil},
		{"/bytes?n=x", http.StatusBadRequest, nil},
		{"/nope", http.StatusNotFound, nil},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if tt.check != nil {
				tt.check(t, string(b))
			}
		})
	}
}
