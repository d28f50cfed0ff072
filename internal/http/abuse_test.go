package http_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/invitegate/invitegate/internal/email"
	api "github.com/invitegate/invitegate/internal/http"
	"github.com/invitegate/invitegate/internal/invite"
)

// blocking is a Reserver that holds every call until release is closed.
type blocking struct {
	entered chan struct{}
	release chan struct{}
}

func (b blocking) Reserve(ctx context.Context, _ string, _ email.Address) (invite.Result, error) {
	b.entered <- struct{}{}
	<-b.release
	return invite.Result{Outcome: invite.Created}, nil
}

// TestLoadShedding holds MaxInFlight signups inside the reserver and sends
// more: every extra one is answered 503 overloaded with Retry-After while
// the held ones are still running, and once they finish new signups go
// through again.
func TestLoadShedding(t *testing.T) {
	const bound, extra = 4, 20
	b := blocking{entered: make(chan struct{}, bound+extra), release: make(chan struct{})}
	srv := httptest.NewServer(api.New(b, api.Config{MaxInFlight: bound}))
	defer srv.Close()
	post := func() (*http.Response, error) {
		return http.Post(srv.URL+"/invitations/open", "application/json", strings.NewReader(`{"email":"a@example.com"}`))
	}

	held := make(chan int, bound)
	for i := 0; i < bound; i++ {
		go func() {
			resp, err := post()
			if err != nil {
				held <- -1
				return
			}
			resp.Body.Close()
			held <- resp.StatusCode
		}()
	}
	for i := 0; i < bound; i++ {
		<-b.entered // all slots are taken
	}
	var wg sync.WaitGroup
	shed := make(chan *http.Response, extra)
	for i := 0; i < extra; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := post()
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			shed <- resp
		}()
	}
	wg.Wait() // answered while the held requests still wait
	close(shed)
	if n := len(b.entered); n != 0 {
		t.Fatalf("%d requests past the bound reached the reserver", n)
	}
	for resp := range shed {
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("past the bound: status %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	close(b.release)
	for i := 0; i < bound; i++ {
		if s := <-held; s != 201 {
			t.Fatalf("held request answered %d, want 201", s)
		}
	}
	resp, err := post()
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("after the flood: %d, want 201", resp.StatusCode)
	}
}

// TestSlowBodyHoldsNoSlot: a client stalled in the middle of its body does
// not take an in-flight slot; with MaxInFlight=1 others still get through.
func TestSlowBodyHoldsNoSlot(t *testing.T) {
	h := api.New(stub{}, api.Config{MaxInFlight: 1})
	reading := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Stalled") != "" {
			r.Body = &readHook{ReadCloser: r.Body, first: func() { close(reading) }}
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "POST /invitations/open HTTP/1.1\r\nHost: x\r\nX-Stalled: 1\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"email\":")
	select {
	case <-reading: // the handler is reading the body it will not get
	case <-time.After(10 * time.Second):
		t.Fatal("the server never read the stalled request's body")
	}
	for i := 0; i < 3; i++ {
		resp, err := http.Post(srv.URL+"/invitations/open", "application/json", strings.NewReader(`{"email":"a@example.com"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Fatalf("with a stalled upload in progress: %d, want 201", resp.StatusCode)
		}
	}
}

// readHook calls first when its body is read for the first time.
type readHook struct {
	io.ReadCloser
	once  sync.Once
	first func()
}

func (r *readHook) Read(p []byte) (int, error) {
	r.once.Do(r.first)
	return r.ReadCloser.Read(p)
}

// countingLimiter allows each client `per` attempts and records the keys.
type countingLimiter struct {
	mu   sync.Mutex
	per  int
	seen map[string]int
	err  error
}

func (l *countingLimiter) Allow(_ context.Context, client string) (bool, time.Duration, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return false, 0, l.err
	}
	l.seen[client]++
	return l.seen[client] <= l.per, 1500 * time.Millisecond, nil
}

func TestRateLimitKeyedByTrustedClientIP(t *testing.T) {
	tests := []struct {
		name    string
		trusted []netip.Prefix
		header  string
		remote  string
		fwd     string
		want    string
	}{
		{"no proxy trusted: header ignored", nil, "", "203.0.113.7:5555", "198.51.100.1", "203.0.113.7"},
		{"trusted proxy: header used", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "", "10.1.2.3:5555", "198.51.100.1", "198.51.100.1"},
		{"trusted proxy: forged left part skipped", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "", "10.1.2.3:5555", "1.2.3.4, 198.51.100.1", "198.51.100.1"},
		{"untrusted peer: header ignored", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "", "192.0.2.9:5555", "198.51.100.1", "192.0.2.9"},
		{"IPv6 keyed by its /64", nil, "", "[2001:db8:1:2:aaaa::1]:5555", "", "2001:db8:1:2::/64"},
		{"IPv4-mapped IPv6", nil, "", "[::ffff:203.0.113.7]:5555", "", "203.0.113.7"},
		{"custom header", []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}, "X-Real-IP", "10.0.0.1:5555", "198.51.100.2", "198.51.100.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lim := &countingLimiter{per: 2, seen: map[string]int{}}
			h := api.New(stub{}, api.Config{Limiter: lim, TrustedProxies: tt.trusted, ClientIPHeader: tt.header})
			hdr := tt.header
			if hdr == "" {
				hdr = "X-Forwarded-For"
			}
			var codes []int
			var last *httptest.ResponseRecorder
			for i := 0; i < 3; i++ {
				r := httptest.NewRequest("POST", "/invitations/open", strings.NewReader(`{"email":"a@example.com"}`))
				r.Header.Set("Content-Type", "application/json")
				r.Header.Set(hdr, tt.fwd)
				r.RemoteAddr = tt.remote
				last = httptest.NewRecorder()
				h.ServeHTTP(last, r)
				codes = append(codes, last.Code)
			}
			if fmt.Sprint(codes) != "[201 201 429]" {
				t.Fatalf("statuses %v, want [201 201 429]", codes)
			}
			if lim.seen[tt.want] != 3 || len(lim.seen) != 1 {
				t.Fatalf("limiter keys %v, want all on %s", lim.seen, tt.want)
			}
			if ra := last.Header().Get("Retry-After"); ra != "2" {
				t.Fatalf("Retry-After %q, want 2 (1.5s rounded up)", ra)
			}
			checkProblem(t, tt.name, last, "rate-limited")
		})
	}
}

func TestRateLimiterDownLetsSignupsThrough(t *testing.T) {
	m := api.NewMetrics(nil)
	lim := &countingLimiter{err: errors.New("redis down"), seen: map[string]int{}}
	h := api.New(stub{}, api.Config{Limiter: lim, Metrics: m})
	w := do(t, h, req{path: "/invitations/open", body: `{"email":"a@example.com"}`})
	if w.Code != 201 {
		t.Fatalf("status %d, want the reserver's answer (201)", w.Code)
	}
	if got := testutil.ToFloat64(m.LimiterErrors); got != 1 {
		t.Fatalf("limiter errors metric %v, want 1", got)
	}
}

func TestBlockedDomain(t *testing.T) {
	blocked := map[string]bool{"mailinator.com": true, "xn--bcher-kva.example": true}
	var reserved int
	res := reserverFunc(func(context.Context, string, email.Address) (invite.Result, error) {
		reserved++
		return invite.Result{Outcome: invite.Created}, nil
	})
	h := api.New(res, api.Config{BlockedDomain: func(d string) bool { return blocked[d] }})
	for _, tt := range []struct {
		email string
		code  int
	}{
		{"Someone@Mailinator.COM", 400},
		{"a@bücher.example", 400}, // matched in punycode
		{"a@example.com", 201},
		{"a@sub.mailinator.com", 201}, // exact domains only: the list names what it blocks
	} {
		before := reserved
		w := do(t, h, req{path: "/invitations/open", body: `{"email":"` + tt.email + `"}`})
		if w.Code != tt.code {
			t.Fatalf("%s: status %d, want %d", tt.email, w.Code, tt.code)
		}
		if tt.code == 400 {
			checkProblem(t, tt.email, w, "email-domain-not-accepted")
			if reserved != before {
				t.Fatalf("%s: a blocked domain reached the reserver", tt.email)
			}
		}
	}
}

type reserverFunc func(context.Context, string, email.Address) (invite.Result, error)

func (f reserverFunc) Reserve(ctx context.Context, code string, a email.Address) (invite.Result, error) {
	return f(ctx, code, a)
}

// TestHideEmailTaken: with the switch, an email used on another code gets
// the same answer as a repeat on this code, byte for byte.
func TestHideEmailTaken(t *testing.T) {
	taken := reserverFunc(func(context.Context, string, email.Address) (invite.Result, error) {
		return invite.Result{}, invite.ErrEmailTaken
	})
	repeat := reserverFunc(func(context.Context, string, email.Address) (invite.Result, error) {
		return invite.Result{Outcome: invite.Existing}, nil
	})
	body := `{"email":"a@example.com"}`
	if w := do(t, api.New(taken, api.Config{}), req{path: "/invitations/open", body: body}); w.Code != 409 {
		t.Fatalf("default: status %d, want 409", w.Code)
	}
	hidden := do(t, api.New(taken, api.Config{HideEmailTaken: true}), req{path: "/invitations/open", body: body})
	again := do(t, api.New(repeat, api.Config{HideEmailTaken: true}), req{path: "/invitations/open", body: body})
	if hidden.Code != 200 || hidden.Code != again.Code || hidden.Body.String() != again.Body.String() ||
		hidden.Header().Get("Content-Type") != again.Header().Get("Content-Type") {
		t.Fatalf("hidden: %d %s; repeat: %d %s", hidden.Code, hidden.Body, again.Code, again.Body)
	}
	var b struct{ Status string }
	if err := json.Unmarshal(hidden.Body.Bytes(), &b); err != nil || b.Status != "already_registered" {
		t.Fatalf("body %s", hidden.Body)
	}
}
