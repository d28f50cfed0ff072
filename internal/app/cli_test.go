package app

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestCommandUsageAndProbe(t *testing.T) {
	ctx := context.Background()
	noenv := func(string) string { return "" }
	if rc := Command(ctx, nil, noenv, io.Discard, io.Discard); rc != 2 {
		t.Fatalf("no command: exit %d, want 2", rc)
	}
	if rc := Command(ctx, []string{"launch"}, noenv, io.Discard, io.Discard); rc != 2 {
		t.Fatalf("unknown command: exit %d, want 2", rc)
	}
	var errOut strings.Builder
	bad := func(k string) string {
		if k == "INVITEGATE_SHARDS" {
			return "-1"
		}
		return ""
	}
	if rc := Command(ctx, []string{"serve"}, bad, io.Discard, &errOut); rc != 2 || !strings.Contains(errOut.String(), "INVITEGATE_SHARDS") {
		t.Fatalf("bad config: exit %d, %q", rc, errOut.String())
	}

	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(status) }))
	defer srv.Close()
	if rc := Command(ctx, []string{"probe", srv.URL + "/readyz"}, noenv, io.Discard, io.Discard); rc != 0 {
		t.Fatalf("probe of a ready server: exit %d", rc)
	}
	status = http.StatusServiceUnavailable
	if rc := Command(ctx, []string{"probe", srv.URL + "/readyz"}, noenv, io.Discard, io.Discard); rc != 1 {
		t.Fatalf("probe of a not-ready server: exit %d, want 1", rc)
	}
	if rc := Command(ctx, []string{"probe", "http://127.0.0.1:1/readyz"}, noenv, io.Discard, io.Discard); rc != 1 {
		t.Fatalf("probe of nothing: exit %d, want 1", rc)
	}
}
