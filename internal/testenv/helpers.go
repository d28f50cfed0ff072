package testenv

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/email"
)

// Emails returns n distinct addresses: prefix0@example.com, prefix1@…
func Emails(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d@example.com", prefix, i)
	}
	return out
}

// Address parses s with the default options; it fails the test if s is
// not an address.
func Address(tb testing.TB, s string) email.Address {
	tb.Helper()
	a, err := email.Parse(s, email.Options{})
	if err != nil {
		tb.Fatalf("parse %q: %v", s, err)
	}
	return a
}

// FreeAddr returns a loopback address with a port nothing listens on, for
// a server the test starts later (a child process binds it itself). The
// port is outside the kernel's ephemeral range (freePort), so no
// outgoing connection of this or another test process can take it in the
// meantime.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	port, err := freePort(false)
	if err != nil {
		tb.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// Wipe deletes every key of namespace ns (keys "{ns:...") on every node of
// c, a *redis.Client or *redis.ClusterClient: Redis losing one test's data
// without touching the others sharing the server.
func Wipe(tb testing.TB, c redis.Cmdable, ns string) {
	tb.Helper()
	ctx := context.Background()
	del := func(ctx context.Context, n redis.Cmdable) error {
		iter := n.Scan(ctx, 0, "{"+ns+":*", 1000).Iterator()
		for iter.Next(ctx) {
			if err := n.Del(ctx, iter.Val()).Err(); err != nil {
				return err
			}
		}
		return iter.Err()
	}
	var err error
	switch c := c.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return del(ctx, n) })
	default:
		err = del(ctx, c)
	}
	if err != nil {
		tb.Fatal(err)
	}
}

// Metric returns the value of every sample of the metric family name that
// an admin listener's /metrics exports (none: an empty slice). It fails
// the test if /metrics cannot be read.
func Metric(tb testing.TB, admin, name string) []float64 {
	tb.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		tb.Fatalf("testenv: read metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("testenv: read metrics: %v", err)
	}
	var out []float64
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		if f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			out = append(out, f)
		}
	}
	return out
}

// WaitFor polls cond every 20ms until it holds; it fails the test if cond
// does not hold within d.
func WaitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// probeClient asks a probe; a listener that hangs counts as no answer.
var probeClient = &http.Client{Timeout: time.Second}

// Readyz returns the status an admin listener's /readyz answers: 200
// ready, 503 not (yet, or no longer); 0 when nothing answers.
func Readyz(admin string) int {
	resp, err := probeClient.Get("http://" + admin + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
