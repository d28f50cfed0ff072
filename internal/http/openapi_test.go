package http_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	api "github.com/invitegate/invitegate/internal/http"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/reserve"
)

const specPath = "../../docs/openapi.yaml"

// refuseAll is a Limiter that turns every attempt away for 2 s.
type refuseAll struct{}

func (refuseAll) Allow(context.Context, string) (bool, time.Duration, error) {
	return false, 2 * time.Second, nil
}

// TestOpenAPI sends through the real handler a request for every response
// docs/openapi.yaml documents and for every row of the handler's error
// table, validates each answer against the spec with libopenapi-validator
// (status, content type, body schema, headers), and then checks both
// directions of drift: every status the spec declares for an operation was
// produced here, and the spec's problem types are exactly the handler's.
func TestOpenAPI(t *testing.T) {
	spec, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := libopenapi.NewDocument(spec)
	if err != nil {
		t.Fatalf("parse %s: %v", specPath, err)
	}
	if v := doc.GetVersion(); !strings.HasPrefix(v, "3.1") {
		t.Fatalf("spec version %q, want OpenAPI 3.1", v)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("spec invalid: %s: %s", e.Message, e.Reason)
		}
		t.FailNow()
	}

	blocked := func(d string) bool { return d == "mailinator.com" }
	srv := newLandingServer(t, api.Config{LandingPage: true, BlockedDomain: blocked})
	hiding := newLandingServer(t, api.Config{LandingPage: true, HideEmailTaken: true})
	cors := newLandingServer(t, api.Config{LandingPage: true, CORSOrigins: []string{"https://landing.example.com"}})
	noPage := api.New(stub{}, api.Config{})
	limited := api.New(stub{}, api.Config{Limiter: refuseAll{}})
	statusFails := func(err error) http.Handler {
		return api.New(stub{}, api.Config{LandingPage: true, Status: func(context.Context, string) (invite.Status, error) { return "", err }})
	}
	// Confirmation holds (confirm_test.go's holding and confirmer).
	deadline := time.Date(2026, 5, 1, 12, 30, 0, 0, time.UTC)
	holds := func(o invite.Outcome) http.Handler {
		return api.New(holding{invite.Result{Outcome: o, ID: "1712000000000-3", Deadline: deadline}}, api.Config{Resend: func(context.Context, string, string, string) {}})
	}
	sealer := newSealer(t, testSecret)
	confirms := func(res invite.Outcome, err error) http.Handler {
		return api.New(stub{}, api.Config{Tokens: sealer, Confirmer: &confirmer{res: invite.Result{Outcome: res}, err: err}})
	}
	confirmed := confirms(invite.Created, nil)
	token := sealer.Seal(aliceHold) // for "open"
	otherCode := aliceHold
	otherCode.Code = "two"
	tokenJSON := tokenBody(token)
	tampered := "x" + token[1:] // another nonce
	if token[0] == 'x' {
		tampered = "y" + token[1:]
	}

	type exchange struct {
		name    string
		h       http.Handler
		method  string
		path    string
		header  map[string]string
		body    string
		status  int
		problem string // type suffix, for problem documents
		// validRequest: the request must validate against the spec too
		// (it is one the API accepts); invalidRequest: it must not.
		validRequest, invalidRequest bool
	}
	jsonCT := map[string]string{"Content-Type": "application/json"}
	exchanges := []exchange{
		{name: "new signup", h: srv, path: "/invitations/open", body: `{"email":"alice@example.com"}`, status: 201, validRequest: true},
		{name: "same email again", h: srv, path: "/invitations/open", body: `{"email":"Alice@Example.com"}`, status: 200, validRequest: true},
		{name: "field name in any case", h: srv, path: "/invitations/open", body: `{"EMAIL":"bob@example.com"}`, status: 201, validRequest: true},
		{name: "fill the one seat", h: srv, path: "/invitations/filled", body: `{"email":"carol@example.com"}`, status: 201, validRequest: true},
		{name: "full", h: srv, path: "/invitations/filled", body: `{"email":"dave@example.com"}`, status: 410, problem: "invitation-full"},
		{name: "disabled", h: srv, path: "/invitations/off", body: `{"email":"dave@example.com"}`, status: 410, problem: "invitation-disabled"},
		{name: "expired", h: srv, path: "/invitations/old", body: `{"email":"dave@example.com"}`, status: 410, problem: "invitation-expired"},
		{name: "used another invitation", h: srv, path: "/invitations/filled", body: `{"email":"alice@example.com"}`, status: 409, problem: "email-already-used"},
		{name: "used another, hidden", h: hiding, path: "/invitations/open", body: `{"email":"erin@example.com"}`, status: 201},
		{name: "used another, answered as a repeat", h: hiding, path: "/invitations/filled", body: `{"email":"erin@example.com"}`, status: 200},
		{name: "unknown code", h: srv, path: "/invitations/nope", body: `{"email":"dave@example.com"}`, status: 404, problem: "unknown-invitation"},
		{name: "impossible code", h: srv, path: "/invitations/" + strings.Repeat("x", 65), body: `{"email":"dave@example.com"}`, status: 404, problem: "unknown-invitation"},
		{name: "not JSON", h: srv, path: "/invitations/open", body: `{`, status: 400, problem: "malformed-body", invalidRequest: true},
		{name: "email not a string", h: srv, path: "/invitations/open", body: `{"email":1}`, status: 400, problem: "malformed-body", invalidRequest: true},
		{name: "another member", h: srv, path: "/invitations/open", body: `{"email":"f@example.com","name":"F"}`, status: 400, problem: "malformed-body", invalidRequest: true},
		{name: "no email", h: srv, path: "/invitations/open", body: `{}`, status: 400, problem: "missing-email", invalidRequest: true},
		{name: "invalid email", h: srv, path: "/invitations/open", body: `{"email":"not an address"}`, status: 400, problem: "invalid-email"},
		{name: "blocked domain", h: srv, path: "/invitations/open", body: `{"email":"g@mailinator.com"}`, status: 400, problem: "email-domain-not-accepted"},
		{name: "body too large", h: srv, path: "/invitations/open", body: `{"email":"` + strings.Repeat("a", 5000) + `@example.com"}`, status: 413, problem: "body-too-large"},
		{name: "not JSON content type", h: srv, path: "/invitations/open", header: map[string]string{"Content-Type": "text/plain"}, body: `{"email":"h@example.com"}`, status: 415, problem: "unsupported-media-type"},
		{name: "rate limited", h: limited, path: "/invitations/open", body: `{"email":"h@example.com"}`, status: 429, problem: "rate-limited"},
		{name: "Redis down", h: api.New(stub{err: invite.Unavailable(errors.New("dial tcp: refused"))}, api.Config{}), path: "/invitations/open", body: `{"email":"h@example.com"}`, status: 503, problem: "unavailable"},
		{name: "deployment misconfigured", h: api.New(stub{err: reserve.ErrShardMismatch}, api.Config{}), path: "/invitations/open", body: `{"email":"h@example.com"}`, status: 503, problem: "unavailable"},
		{name: "request deadline", h: api.New(stub{err: context.DeadlineExceeded}, api.Config{}), path: "/invitations/open", body: `{"email":"h@example.com"}`, status: 503, problem: "unavailable"},
		{name: "reseeding", h: api.New(stub{err: invite.ErrFrozen}, api.Config{}), path: "/invitations/open", body: `{"email":"h@example.com"}`, status: 503, problem: "invitation-reseeding"},
		{name: "unexpected error", h: api.New(stub{err: errors.New("boom")}, api.Config{}), path: "/invitations/open", body: `{"email":"h@example.com"}`, status: 500, problem: "internal"},
		{name: "refused origin", h: cors, path: "/invitations/open", header: map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"}, body: `{"email":"i@example.com"}`, status: 403},
		{name: "held for confirmation", h: holds(invite.Held), path: "/invitations/open", body: `{"email":"alice.b+beta@gmail.com"}`, status: 202, validRequest: true},
		{name: "held again", h: holds(invite.HeldAgain), path: "/invitations/open", body: `{"email":"alice.b+beta@gmail.com"}`, status: 202, validRequest: true},

		{name: "confirm", h: confirmed, path: "/invitations/open/confirm", body: tokenJSON, status: 201, validRequest: true},
		{name: "confirm, member name in any case", h: confirmed, path: "/invitations/open/confirm", body: `{"TOKEN":"` + token + `"}`, status: 201, validRequest: true},
		{name: "confirm again", h: confirms(invite.Existing, nil), path: "/invitations/open/confirm", body: tokenJSON, status: 200, validRequest: true},
		{name: "confirm too late", h: confirms(0, invite.ErrHoldExpired), path: "/invitations/open/confirm", body: tokenJSON, status: 410, problem: "confirmation-expired", validRequest: true},
		{name: "confirm, token tampered", h: confirmed, path: "/invitations/open/confirm", body: tokenBody(tampered), status: 404, problem: "invalid-confirmation", validRequest: true},
		{name: "confirm, made-up token", h: confirmed, path: "/invitations/open/confirm", body: `{"token":"dG9rZW4"}`, status: 404, problem: "invalid-confirmation", validRequest: true},
		{name: "confirm, another code's token", h: confirmed, path: "/invitations/open/confirm", body: tokenBody(sealer.Seal(otherCode)), status: 404, problem: "invalid-confirmation", validRequest: true},
		{name: "confirm, not configured", h: noPage, path: "/invitations/open/confirm", body: tokenJSON, status: 404, problem: "invalid-confirmation"},
		{name: "confirm, impossible code", h: confirmed, path: "/invitations/" + strings.Repeat("x", 65) + "/confirm", body: tokenJSON, status: 404, problem: "unknown-invitation"},
		{name: "confirm, no token", h: confirmed, path: "/invitations/open/confirm", body: `{}`, status: 400, problem: "missing-token", invalidRequest: true},
		{name: "confirm, not JSON", h: confirmed, path: "/invitations/open/confirm", body: `{"token":`, status: 400, problem: "malformed-body", invalidRequest: true},
		{name: "confirm, token not a string", h: confirmed, path: "/invitations/open/confirm", body: `{"token":1}`, status: 400, problem: "malformed-body", invalidRequest: true},
		{name: "confirm, another member", h: confirmed, path: "/invitations/open/confirm", body: `{"token":"` + token + `","email":"alice@example.com"}`, status: 400, problem: "malformed-body", invalidRequest: true},
		{name: "confirm, body too large", h: confirmed, path: "/invitations/open/confirm", body: tokenBody(strings.Repeat("a", 5000)), status: 413, problem: "body-too-large"},
		{name: "confirm, not JSON content type", h: confirmed, path: "/invitations/open/confirm", header: map[string]string{"Content-Type": "text/plain"}, body: tokenJSON, status: 415, problem: "unsupported-media-type"},
		{name: "confirm, rate limited", h: limited, path: "/invitations/open/confirm", body: tokenJSON, status: 429, problem: "rate-limited"},
		{name: "confirm, Redis down", h: confirms(0, invite.Unavailable(errors.New("dial tcp: refused"))), path: "/invitations/open/confirm", body: tokenJSON, status: 503, problem: "unavailable"},
		{name: "confirm, reseeding", h: confirms(0, invite.ErrFrozen), path: "/invitations/open/confirm", body: tokenJSON, status: 503, problem: "invitation-reseeding"},
		{name: "confirm, unexpected error", h: confirms(0, errors.New("boom")), path: "/invitations/open/confirm", body: tokenJSON, status: 500, problem: "internal"},
		{name: "confirm, refused origin", h: cors, path: "/invitations/open/confirm", header: map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"}, body: tokenJSON, status: 403},

		{name: "status open", h: srv, method: "GET", path: "/invitations/open", status: 200},
		{name: "status full", h: srv, method: "GET", path: "/invitations/filled", header: map[string]string{"Accept": "application/json"}, status: 200},
		{name: "status disabled", h: srv, method: "GET", path: "/invitations/off", status: 200},
		{name: "status expired", h: srv, method: "GET", path: "/invitations/old", status: 200},
		{name: "page", h: srv, method: "GET", path: "/invitations/open", header: browser, status: 200},
		{name: "page of a full code", h: srv, method: "GET", path: "/invitations/filled", header: browser, status: 200},
		{name: "status unknown", h: srv, method: "GET", path: "/invitations/nope", status: 404, problem: "unknown-invitation"},
		{name: "page unknown", h: srv, method: "GET", path: "/invitations/nope", header: browser, status: 404},
		{name: "status unavailable", h: statusFails(invite.Unavailable(errors.New("timeout"))), method: "GET", path: "/invitations/open", status: 503, problem: "unavailable"},
		{name: "status unexpected error", h: statusFails(errors.New("boom")), method: "GET", path: "/invitations/open", status: 500, problem: "internal"},
		{name: "status, refused origin", h: cors, method: "GET", path: "/invitations/open", header: map[string]string{"Origin": "https://evil.example"}, status: 403},
		{name: "link-preview crawler", h: srv, method: "GET", path: "/invitations/open", header: map[string]string{"Accept": "*/*", "User-Agent": "Twitterbot/1.0"}, status: 200},
		{name: "HEAD", h: srv, method: "HEAD", path: "/invitations/open", status: 200},
		{name: "HEAD unknown", h: srv, method: "HEAD", path: "/invitations/nope", status: 404},
		{name: "HEAD, landing page off", h: noPage, method: "HEAD", path: "/invitations/open", status: 405},
		{name: "landing page off", h: noPage, method: "GET", path: "/invitations/open", status: 405, problem: "method-not-allowed"},
		{name: "style", h: srv, method: "GET", path: "/assets/landing.css", status: 200},
		{name: "script", h: srv, method: "GET", path: "/assets/landing.js", status: 200},
		{name: "confirm page", h: srv, method: "GET", path: "/invitations/open/confirm?token=dG9rZW4", header: browser, status: 200},
		{name: "confirm page, no token", h: srv, method: "GET", path: "/invitations/open/confirm", header: browser, status: 400},
		{name: "confirm page, impossible code", h: srv, method: "GET", path: "/invitations/" + strings.Repeat("x", 65) + "/confirm?token=dG9rZW4", header: browser, status: 404},
		{name: "HEAD confirm page", h: srv, method: "HEAD", path: "/invitations/open/confirm?token=dG9rZW4", status: 200},
		{name: "HEAD confirm page, no token", h: srv, method: "HEAD", path: "/invitations/open/confirm?token=", status: 400},
		{name: "HEAD confirm page, impossible code", h: srv, method: "HEAD", path: "/invitations/" + strings.Repeat("x", 65) + "/confirm?token=dG9rZW4", status: 404},
		{name: "confirm script", h: srv, method: "GET", path: "/assets/confirm.js", status: 200},

		{name: "preflight allowed", h: cors, method: "OPTIONS", path: "/invitations/open", header: map[string]string{"Origin": "https://landing.example.com", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}, status: 204},
		{name: "preflight refused", h: cors, method: "OPTIONS", path: "/invitations/open", header: map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, status: 403},
		{name: "OPTIONS without CORS", h: srv, method: "OPTIONS", path: "/invitations/open", header: map[string]string{"Origin": "https://landing.example.com", "Access-Control-Request-Method": "POST"}, status: 405, problem: "method-not-allowed"},
	}

	seenStatus := map[string]bool{}  // "post 201"
	seenProblem := map[string]bool{} // type URI
	check := func(name string, hr *http.Request, w *httptest.ResponseRecorder, status int, problem string) {
		t.Helper()
		res := w.Result()
		if res.StatusCode != status {
			t.Errorf("%s: status %d, want %d (%s)", name, res.StatusCode, status, w.Body.String())
			return
		}
		if ok, verrs := v.ValidateHttpResponse(hr, res); !ok {
			for _, e := range verrs {
				t.Errorf("%s: response does not match the spec: %s: %s", name, e.Message, e.Reason)
				for _, se := range e.SchemaValidationErrors {
					t.Errorf("%s:   %s", name, se.Reason)
				}
			}
		}
		seenStatus[fmt.Sprintf("%s %d", strings.ToLower(hr.Method), res.StatusCode)] = true
		if problem != "" {
			var p struct{ Type string }
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Type != api.ProblemBase+problem {
				t.Errorf("%s: problem type %q, want %q", name, p.Type, api.ProblemBase+problem)
			}
			seenProblem[p.Type] = true
		}
	}
	for _, ex := range exchanges {
		if ex.method == "" {
			ex.method = http.MethodPost
		}
		if ex.header == nil && ex.method == http.MethodPost {
			ex.header = jsonCT
		}
		newReq := func() *http.Request {
			hr := httptest.NewRequest(ex.method, "http://localhost:8080"+ex.path, strings.NewReader(ex.body))
			for k, val := range ex.header {
				hr.Header.Set(k, val)
			}
			return hr
		}
		if ex.validRequest || ex.invalidRequest {
			ok, verrs := v.ValidateHttpRequest(newReq())
			if ex.validRequest && !ok {
				t.Errorf("%s: the spec refuses a request the API accepts: %v", ex.name, verrs[0].Message)
			}
			if ex.invalidRequest && ok {
				t.Errorf("%s: the spec accepts a request the API refuses", ex.name)
			}
		}
		hr := newReq()
		w := httptest.NewRecorder()
		ex.h.ServeHTTP(w, hr)
		check(ex.name, hr, w, ex.status, ex.problem)
	}

	// 503 overloaded: one signup holds the only in-flight slot, which
	// confirmations share.
	b := blocking{entered: make(chan struct{}, 1), release: make(chan struct{})} // abuse_test.go
	shedding := api.New(b, api.Config{MaxInFlight: 1, Tokens: sealer, Confirmer: &confirmer{res: invite.Result{Outcome: invite.Created}}})
	var wg sync.WaitGroup
	wg.Go(func() {
		hr := httptest.NewRequest(http.MethodPost, "/invitations/open", strings.NewReader(`{"email":"j@example.com"}`))
		hr.Header.Set("Content-Type", "application/json")
		shedding.ServeHTTP(httptest.NewRecorder(), hr)
	})
	<-b.entered
	hr := httptest.NewRequest(http.MethodPost, "http://localhost:8080/invitations/open", strings.NewReader(`{"email":"k@example.com"}`))
	hr.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	shedding.ServeHTTP(w, hr)
	chr := httptest.NewRequest(http.MethodPost, "http://localhost:8080/invitations/open/confirm", strings.NewReader(tokenJSON))
	chr.Header.Set("Content-Type", "application/json")
	cw := httptest.NewRecorder()
	shedding.ServeHTTP(cw, chr)
	close(b.release)
	wg.Wait()
	check("overloaded", hr, w, 503, "overloaded")
	check("confirm, overloaded", chr, cw, 503, "overloaded")

	// Drift, spec → code: every status the spec declares was produced.
	var raw struct {
		Paths      map[string]map[string]any `yaml:"paths"`
		Components struct {
			Schemas struct {
				Problem struct {
					Properties struct {
						Type struct {
							Enum []string `yaml:"enum"`
						} `yaml:"type"`
					} `yaml:"properties"`
				} `yaml:"Problem"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(spec, &raw); err != nil {
		t.Fatal(err)
	}
	for path, ops := range raw.Paths {
		for method, op := range ops {
			op, ok := op.(map[string]any)
			if !ok || method == "parameters" {
				continue
			}
			responses, _ := op["responses"].(map[string]any)
			if len(responses) == 0 {
				t.Errorf("%s %s: no responses in the spec", method, path)
			}
			for code := range responses {
				if !seenStatus[method+" "+code] {
					t.Errorf("the spec declares %s %s %s, which no request here produced", strings.ToUpper(method), path, code)
				}
			}
		}
	}
	// Drift, code ↔ spec: the problem types are exactly the handler's, and
	// each was answered here.
	want := api.ProblemTypes()
	var code []string
	for typ := range want {
		code = append(code, typ)
	}
	sort.Strings(code)
	documented := slices.Sorted(slices.Values(raw.Components.Schemas.Problem.Properties.Type.Enum))
	if !slices.Equal(code, documented) {
		t.Errorf("problem types: handler %v, spec %v", code, documented)
	}
	for _, typ := range code {
		if !seenProblem[typ] && typ != api.ProblemBase+"not-found" {
			t.Errorf("problem %s (status %d) was never answered here", typ, want[typ])
		}
	}
	// not-found is for paths outside the spec: it must still be a valid
	// problem document of the spec's schema.
	w = httptest.NewRecorder()
	srv.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/nowhere", nil))
	var p struct {
		Type   string
		Status int
	}
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || w.Code != 404 || p.Type != api.ProblemBase+"not-found" || !slices.Contains(documented, p.Type) {
		t.Errorf("other path: %d %s", w.Code, w.Body.String())
	}
}
