package http_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/email"
	api "github.com/invitegate/invitegate/internal/http"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/workflow"
)

// source is a fixed in-memory MongoDB stand-in.
type source map[string]invite.Invitation

func (s source) Invitation(_ context.Context, code string) (invite.Invitation, bool, error) {
	i, ok := s[code]
	return i, ok, nil
}
func (s source) Invitations(context.Context) ([]invite.Invitation, error) {
	var out []invite.Invitation
	for _, i := range s {
		out = append(out, i)
	}
	return out, nil
}
func (s source) LiveHolds(context.Context, string, time.Time) ([]persist.Hold, error) {
	return nil, nil
}

func (s source) ForEachRegistration(context.Context, string, func(string, string) error) error {
	return nil
}

// newSignups is the Redis signup path on miniredis with the tests' codes.
func newSignups(t *testing.T) *workflow.Signups {
	t.Helper()
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { c.Close() })
	r := workflow.NewSignups(reserve.New(c, reserve.Config{Shards: 4}), source{
		"open":   {Code: "open", MaxUses: 1000},
		"two":    {Code: "two", MaxUses: 1},
		"off":    {Code: "off", MaxUses: 5, Disabled: true},
		"old":    {Code: "old", MaxUses: 5, ExpiresAt: mustTime(t, "2020-01-01T00:00:00Z")},
		"filled": {Code: "filled", MaxUses: 1},
	}, workflow.SignupsConfig{})
	if err := r.SeedIfNeeded(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

// newServer returns the API over a real Reserver on miniredis.
func newServer(t *testing.T) http.Handler {
	t.Helper()
	return api.New(newSignups(t), api.Config{})
}

type req struct {
	method, path, ctype, body string
}

func do(t *testing.T, h http.Handler, r req) *httptest.ResponseRecorder {
	t.Helper()
	if r.method == "" {
		r.method = http.MethodPost
	}
	hr := httptest.NewRequest(r.method, "http://x"+r.path, strings.NewReader(r.body))
	if r.ctype != "-" {
		ct := r.ctype
		if ct == "" {
			ct = "application/json"
		}
		hr.Header.Set("Content-Type", ct)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, hr)
	return w
}

// TestStatuses walks every status of the contract in order on one server:
// the steps depend on each other (the 200 needs the 201 before it).
func TestStatuses(t *testing.T) {
	h := newServer(t)
	steps := []struct {
		name     string
		r        req
		status   int
		problem  string // problem type suffix, for errors
		wantBody map[string]string
	}{
		{"new signup", req{path: "/invitations/open", body: `{"email":" Alice@Example.COM "}`}, 201, "", map[string]string{"invitation": "open", "email": "alice@example.com", "status": "registered"}},
		{"again", req{path: "/invitations/open", body: `{"email":"alice@example.com"}`}, 200, "", map[string]string{"status": "already_registered"}},
		{"field name case-insensitive", req{path: "/invitations/open", body: `{"Email":"bob@example.com"}`}, 201, "", nil},
		{"charset ok", req{path: "/invitations/open", ctype: "application/json; charset=UTF-8", body: `{"EMAIL":"carol@example.com"}`}, 201, "", nil},
		{"other code", req{path: "/invitations/two", body: `{"email":"alice@example.com"}`}, 409, "email-already-used", nil},
		{"fill two", req{path: "/invitations/two", body: `{"email":"dave@example.com"}`}, 201, "", nil},
		{"full", req{path: "/invitations/two", body: `{"email":"erin@example.com"}`}, 410, "invitation-full", nil},
		{"registered elsewhere beats full", req{path: "/invitations/two", body: `{"email":"alice@example.com"}`}, 409, "email-already-used", nil},
		{"registered here when full", req{path: "/invitations/two", body: `{"email":"dave@example.com"}`}, 200, "", nil},
		{"disabled", req{path: "/invitations/off", body: `{"email":"f@example.com"}`}, 410, "invitation-disabled", nil},
		{"expired", req{path: "/invitations/old", body: `{"email":"f@example.com"}`}, 410, "invitation-expired", nil},
		{"unknown code", req{path: "/invitations/nope", body: `{"email":"f@example.com"}`}, 404, "unknown-invitation", nil},
		{"code too long", req{path: "/invitations/" + strings.Repeat("a", 65), body: `{"email":"f@example.com"}`}, 404, "unknown-invitation", nil},
		{"code bad chars", req{path: "/invitations/a.b", body: `{"email":"f@example.com"}`}, 404, "unknown-invitation", nil},
		{"encoded slash", req{path: "/invitations/a%2Fb", body: `{"email":"f@example.com"}`}, 404, "", nil},
		{"encoded NUL", req{path: "/invitations/a%00", body: `{"email":"f@example.com"}`}, 404, "unknown-invitation", nil},
		{"dot dot", req{path: "/invitations/..", body: `{"email":"f@example.com"}`}, 404, "unknown-invitation", nil},
		{"no code", req{path: "/invitations/", body: `{"email":"f@example.com"}`}, 404, "not-found", nil},
		{"trailing slash", req{path: "/invitations/open/", body: `{"email":"f@example.com"}`}, 404, "not-found", nil},
		{"extra segment", req{path: "/invitations/open/x", body: `{"email":"f@example.com"}`}, 404, "not-found", nil},
		{"double slash", req{path: "//invitations/open", body: `{"email":"f@example.com"}`}, 404, "not-found", nil},
		{"GET", req{method: "GET", path: "/invitations/open", ctype: "-"}, 405, "method-not-allowed", nil},
		{"invalid email", req{path: "/invitations/open", body: `{"email":"not-an-email"}`}, 400, "invalid-email", nil},
		{"display name", req{path: "/invitations/open", body: `{"email":"Al <al@example.com>"}`}, 400, "invalid-email", nil},
		{"CRLF", req{path: "/invitations/open", body: `{"email":"al@example.com\r\nBcc: x@y.z"}`}, 400, "invalid-email", nil},
		{"NUL", req{path: "/invitations/open", body: `{"email":"al\u0000@example.com"}`}, 400, "invalid-email", nil},
		{"empty email", req{path: "/invitations/open", body: `{"email":""}`}, 400, "invalid-email", nil},
		{"missing email", req{path: "/invitations/open", body: `{}`}, 400, "missing-email", nil},
		{"malformed", req{path: "/invitations/open", body: `{"email":`}, 400, "malformed-body", nil},
		{"empty body", req{path: "/invitations/open", body: ``}, 400, "malformed-body", nil},
		{"array", req{path: "/invitations/open", body: `["a@example.com"]`}, 400, "malformed-body", nil},
		{"number", req{path: "/invitations/open", body: `{"email":5}`}, 400, "malformed-body", nil},
		{"nested", req{path: "/invitations/open", body: `{"email":{"x":"a@example.com"}}`}, 400, "malformed-body", nil},
		{"unknown field", req{path: "/invitations/open", body: `{"email":"g@example.com","name":"g"}`}, 400, "malformed-body", nil},
		{"duplicate key", req{path: "/invitations/open", body: `{"email":"g@example.com","Email":"h@example.com"}`}, 400, "malformed-body", nil},
		{"trailing data", req{path: "/invitations/open", body: `{"email":"g@example.com"} {}`}, 400, "malformed-body", nil},
		{"invalid UTF-8", req{path: "/invitations/open", body: "{\"email\":\"g\xff@example.com\"}"}, 400, "malformed-body", nil},
		{"too large", req{path: "/invitations/open", body: `{"email":"` + strings.Repeat("a", 1<<20) + `@example.com"}`}, 413, "body-too-large", nil},
		{"form", req{path: "/invitations/open", ctype: "application/x-www-form-urlencoded", body: `email=g@example.com`}, 415, "unsupported-media-type", nil},
		{"no content type", req{path: "/invitations/open", ctype: "-", body: `{"email":"g@example.com"}`}, 415, "unsupported-media-type", nil},
		{"latin1 charset", req{path: "/invitations/open", ctype: "application/json; charset=latin1", body: `{"email":"g@example.com"}`}, 415, "unsupported-media-type", nil},
		{"gmail canonical", req{path: "/invitations/open", body: `{"email":"j.o.h.n+x@gmail.com"}`}, 201, "", nil},
		{"googlemail same person", req{path: "/invitations/two", body: `{"email":"john@googlemail.com"}`}, 409, "email-already-used", nil},
		{"same person same code", req{path: "/invitations/open", body: `{"email":"JOHN@gmail.com"}`}, 200, "", nil},
	}
	for _, s := range steps {
		w := do(t, h, s.r)
		if w.Code != s.status {
			t.Fatalf("%s: status %d, want %d; body %s", s.name, w.Code, s.status, w.Body)
		}
		if loc := w.Header().Get("Location"); loc != "" {
			t.Fatalf("%s: redirect to %q", s.name, loc)
		}
		if s.status >= 400 {
			checkProblem(t, s.name, w, s.problem)
			continue
		}
		if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("%s: content type %q", s.name, ct)
		}
		var body map[string]string
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s: body %q: %v", s.name, w.Body, err)
		}
		for k, v := range s.wantBody {
			if body[k] != v {
				t.Fatalf("%s: body[%s] = %q, want %q", s.name, k, body[k], v)
			}
		}
	}
}

func checkProblem(t *testing.T, name string, w *httptest.ResponseRecorder, slug string) {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("%s: content type %q, want application/problem+json", name, ct)
	}
	var p struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatalf("%s: problem body %q: %v", name, w.Body, err)
	}
	if p.Status != w.Code || p.Title == "" {
		t.Fatalf("%s: problem %+v does not match status %d", name, p, w.Code)
	}
	if slug != "" && p.Type != api.ProblemBase+slug {
		t.Fatalf("%s: problem type %q, want %q", name, p.Type, api.ProblemBase+slug)
	}
}

// stub is a Reserver that fails as told.
type stub struct {
	err   error
	panic bool
}

func (s stub) Reserve(context.Context, string, email.Address) (invite.Result, error) {
	if s.panic {
		panic("boom")
	}
	return invite.Result{}, s.err
}

func TestDependencyFailures(t *testing.T) {
	tests := []struct {
		name       string
		res        stub
		status     int
		retryAfter bool
	}{
		{"redis down", stub{err: errors.Join(invite.ErrUnavailable, errors.New("dial tcp 10.0.0.1:6379: secret detail"))}, 503, true},
		{"deadline", stub{err: context.DeadlineExceeded}, 503, true},
		{"unexpected", stub{err: errors.New("internal secret detail")}, 500, false},
		{"panic", stub{panic: true}, 500, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := api.New(tt.res, api.Config{})
			w := do(t, h, req{path: "/invitations/open", body: `{"email":"a@example.com"}`})
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d", w.Code, tt.status)
			}
			if got := w.Header().Get("Retry-After") != ""; got != tt.retryAfter {
				t.Fatalf("Retry-After present = %v, want %v", got, tt.retryAfter)
			}
			checkProblem(t, tt.name, w, "")
			if b, _ := io.ReadAll(w.Body); strings.Contains(string(b), "secret") || strings.Contains(string(b), "boom") {
				t.Fatalf("internal error text leaked: %s", b)
			}
		})
	}
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}
