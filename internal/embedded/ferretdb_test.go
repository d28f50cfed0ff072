package embedded

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// One test on purpose: ferretdb.New writes package-level state, so
// StartFerretDB calls must not overlap.
func TestStartFerretDB(t *testing.T) {
	if testing.Short() {
		// testenv.SkipIfShort, which would import this package.
		t.Skip("-short: needs the embedded FerretDB; make test runs it")
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := filepath.Join(t.TempDir(), "not", "yet", "there")

	uri, stop, err := StartFerretDB(context.Background(), dir, "127.0.0.1:0", quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	if !strings.HasPrefix(uri, "mongodb://127.0.0.1:") {
		t.Fatalf("uri = %q", uri)
	}
	addr := strings.TrimSuffix(strings.TrimPrefix(uri, "mongodb://"), "/")
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c.Close()

	t.Run("busy port is an error", func(t *testing.T) {
		start := time.Now()
		_, stop2, err := StartFerretDB(context.Background(), t.TempDir(), addr, quiet)
		if err == nil {
			stop2()
			t.Fatalf("second server on %s started", addr)
		}
		t.Logf("busy port: %v", err)
		if !strings.Contains(err.Error(), "address already in use") {
			t.Errorf("err = %v; want it to say the address is in use", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("failing took %v", d)
		}
	})

	t.Run("stop releases the port", func(t *testing.T) {
		stop()
		stop() // idempotent
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("port still taken after stop: %v", err)
		}
		ln.Close()
	})
}

func TestQuietHandler(t *testing.T) {
	var buf strings.Builder
	l := slog.New(quietHandler{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})}).With("conn", "x")
	l.Warn("Response header: length: 121")
	l.Warn("Response message:\n{}")
	l.Error("Response header: closing")
	l.Warn("Failed to accept connection")
	l.Info("Connection started")
	out := buf.String()
	if strings.Contains(out, "length: 121") || strings.Contains(out, "Response message") || strings.Contains(out, "Connection started") {
		t.Errorf("kept noise:\n%s", out)
	}
	if !strings.Contains(out, "closing") || !strings.Contains(out, "Failed to accept") || !strings.Contains(out, "conn=x") {
		t.Errorf("dropped real problems:\n%s", out)
	}
}
