package http_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/invitegate/invitegate/internal/email"
	api "github.com/invitegate/invitegate/internal/http"
	"github.com/invitegate/invitegate/internal/invite"
)

// noBackend is a Reserver and a StatusFunc that fail the test when called:
// opening the confirm page must not reach Redis or MongoDB, since mail
// scanners open every link in an email before the person does.
type noBackend struct{ tb testing.TB }

func (n noBackend) Reserve(_ context.Context, code string, _ email.Address) (invite.Result, error) {
	n.tb.Errorf("Reserve(%q) called", code)
	return invite.Result{}, invite.ErrUnavailable
}

func (n noBackend) Status(_ context.Context, code string) (invite.Status, error) {
	n.tb.Errorf("Status(%q) called", code)
	return "", invite.ErrUnavailable
}

func newConfirmPageServer(t *testing.T) http.Handler {
	t.Helper()
	nb := noBackend{t}
	return api.New(nb, api.Config{LandingPage: true, GameName: "Starfall <Beta>", Status: nb.Status})
}

func TestConfirmPage(t *testing.T) {
	h := newConfirmPageServer(t)
	hostile := `"><script>alert(1)</script>`
	tests := []struct {
		name, path string
		header     map[string]string
		status     int
		form       bool
		want       []string
		notWant    []string
	}{
		{"token", "/invitations/open/confirm?token=dG9rZW4tMQ_-", browser, 200, true, []string{
			`<form id="confirm" data-code="open">`, `<input type="hidden" name="token" value="dG9rZW4tMQ_-">`,
			`<button type="submit" aria-describedby="hint result">Confirm my email</button>`,
			`role="status" aria-live="polite"`, `<script src="/assets/confirm.js" defer></script>`,
			"Starfall &lt;Beta&gt;", `<strong class="code">open</strong>`,
		}, nil},
		// A long token, as the emails carry, and whatever the Accept.
		{"long token", "/invitations/twitter-reg1/confirm?token=" + strings.Repeat("A", 600), map[string]string{"Accept": "*/*"}, 200, true, []string{`value="` + strings.Repeat("A", 600) + `"`}, nil},
		// A code that may exist is not looked up: the POST says.
		{"unknown code", "/invitations/nope/confirm?token=abc", nil, 200, true, []string{`data-code="nope"`}, nil},
		{"hostile token", "/invitations/open/confirm?token=" + url.QueryEscape(hostile), browser, 200, true,
			[]string{`value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"`}, []string{"<script>alert", `value=""`}},
		{"no token", "/invitations/open/confirm", browser, 400, false, []string{"This link is incomplete", `role="status"`}, []string{"<button", "<form"}},
		{"empty token", "/invitations/open/confirm?token=", browser, 400, false, []string{"This link is incomplete"}, []string{"<button"}},
		{"other parameter", "/invitations/open/confirm?tokn=abc", browser, 400, false, []string{"This link is incomplete"}, []string{"<button", "abc"}},
		{"token too long", "/invitations/open/confirm?token=" + strings.Repeat("A", 2049), browser, 400, false, []string{"This link is incomplete"}, []string{"<button", "AAAA"}},
		{"impossible code", "/invitations/%3Cscript%3Ealert(1)/confirm?token=abc", browser, 404, false, []string{"There is no such invitation."}, []string{"<script>alert", "&lt;script", "<button", "abc"}},
		{"code too long", "/invitations/" + strings.Repeat("x", 65) + "/confirm?token=abc", browser, 404, false, []string{"There is no such invitation."}, []string{"xxxx"}},
	}
	for _, tc := range tests {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			r := httptest.NewRequest(method, tc.path, nil)
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			name := method + " " + tc.name
			if w.Code != tc.status {
				t.Errorf("%s: status %d, want %d", name, w.Code, tc.status)
			}
			checkPageHeaders(t, name, w)
			if method == http.MethodHead {
				continue // the body is the server's to drop
			}
			body := w.Body.String()
			for _, s := range tc.want {
				if !strings.Contains(body, s) {
					t.Errorf("%s: page lacks %q:\n%s", name, s, body)
				}
			}
			for _, s := range tc.notWant {
				if strings.Contains(body, s) {
					t.Errorf("%s: page has %q:\n%s", name, s, body)
				}
			}
			if got := strings.Contains(body, `<form id="confirm"`); got != tc.form {
				t.Errorf("%s: form shown = %v, want %v", name, got, tc.form)
			}
			if strings.Contains(body, "<style") || strings.Contains(body, " style=") || strings.Count(body, "<script") != strings.Count(body, "<script src=") {
				t.Errorf("%s: inline script or style:\n%s", name, body)
			}
		}
	}
}

// checkPageHeaders: the confirm page has the landing page's headers.
func checkPageHeaders(t *testing.T, name string, w *httptest.ResponseRecorder) {
	t.Helper()
	hd := w.Header()
	if ct := hd.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("%s: Content-Type %q", name, ct)
	}
	csp := hd.Get("Content-Security-Policy")
	for _, d := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, d) {
			t.Errorf("%s: CSP %q lacks %q", name, csp, d)
		}
	}
	if strings.Contains(csp, "unsafe") {
		t.Errorf("%s: CSP %q", name, csp)
	}
	for k, v := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"} {
		if got := hd.Get(k); got != v {
			t.Errorf("%s: %s %q, want %q", name, k, got, v)
		}
	}
}

// TestConfirmPageRoutes: the confirm page sits next to the landing page
// and the signup, and neither takes the other's requests.
func TestConfirmPageRoutes(t *testing.T) {
	h := newLandingServer(t, api.Config{LandingPage: true})
	if w := get(t, h, "/invitations/open", browser); w.Code != 200 || !strings.Contains(w.Body.String(), `<form id="signup"`) {
		t.Errorf("landing page: %d\n%s", w.Code, w.Body)
	}
	if w := get(t, h, "/invitations/open/confirm?token=abc", browser); w.Code != 200 || !strings.Contains(w.Body.String(), `<form id="confirm"`) {
		t.Errorf("confirm page: %d\n%s", w.Code, w.Body)
	}
	if w := do(t, h, req{path: "/invitations/open", body: `{"email":"route@example.com"}`}); w.Code != http.StatusCreated {
		t.Errorf("signup: %d %s", w.Code, w.Body)
	}
	for _, path := range []string{"/invitations/open/", "/invitations/open/confirm/", "/invitations/open/other", "/invitations/open/confirm/x", "/invitations//confirm"} {
		w := get(t, h, path+"?token=abc", browser)
		if w.Code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, w.Code)
			continue
		}
		if path != "/invitations//confirm" {
			checkProblem(t, path, w, "not-found")
		}
	}
	if w := get(t, h, "/assets/confirm.js", nil); w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/javascript") ||
		w.Header().Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(w.Body.String(), "/confirm") {
		t.Errorf("/assets/confirm.js: %d %v", w.Code, w.Header())
	}

	// With the page off there is no confirm page (and no script).
	off := newLandingServer(t, api.Config{LandingPage: false})
	if w := get(t, off, "/invitations/open/confirm?token=abc", browser); w.Code < 400 || strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
		t.Errorf("page off: %d %q, want a problem", w.Code, w.Header().Get("Content-Type"))
	}
	if w := get(t, off, "/assets/confirm.js", nil); w.Code != http.StatusNotFound {
		t.Errorf("page off: /assets/confirm.js %d, want 404", w.Code)
	}
}
