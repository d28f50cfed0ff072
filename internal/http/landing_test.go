package http_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	api "github.com/invitegate/invitegate/internal/http"
	"github.com/invitegate/invitegate/internal/invite"
)

// newLandingServer is newServer's API with the landing page on and cfg's
// other settings.
func newLandingServer(t *testing.T, cfg api.Config) http.Handler {
	t.Helper()
	r := newSignups(t)
	cfg.Status = r.Status
	if cfg.GameName == "" {
		cfg.GameName = "Our Super Game"
	}
	return api.New(r, cfg)
}

func get(t *testing.T, h http.Handler, path string, header map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, path, nil)
	for k, v := range header {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

var browser = map[string]string{"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}

func TestLandingPage(t *testing.T) {
	h := newLandingServer(t, api.Config{LandingPage: true, GameName: "Starfall <Beta>"})
	// Fill the one-seat code first.
	if w := do(t, h, req{method: "POST", path: "/invitations/filled", ctype: "application/json", body: `{"email":"first@example.com"}`}); w.Code != http.StatusCreated {
		t.Fatalf("filling: %d", w.Code)
	}
	tests := []struct {
		code       string
		status     int
		want       []string // in the page
		form       bool
		notWant    []string
		apiStatus  int
		apiOutcome string
	}{
		{"open", 200, []string{`data-code="open"`, `<label for="email">`, `aria-live="polite"`, "Starfall &lt;Beta&gt;", `<button id="resend" class="secondary" type="button" aria-describedby="result" hidden>Resend the email</button>`}, true, nil, 200, "open"},
		{"filled", 200, []string{"Sorry, this invitation is full.", `role="status"`}, false, []string{"Resend"}, 200, "full"},
		{"off", 200, []string{"This invitation is no longer accepted."}, false, nil, 200, "disabled"},
		{"old", 200, []string{"This invitation has expired."}, false, nil, 200, "expired"},
		{"nope", 404, []string{"There is no invitation with the code", "nope"}, false, nil, 404, ""},
		{"%3Cscript%3Ealert(1)", 404, []string{"There is no such invitation."}, false, []string{"<script>alert", "&lt;script"}, 404, ""},
	}
	for _, tc := range tests {
		w := get(t, h, "/invitations/"+tc.code, browser)
		body := w.Body.String()
		if w.Code != tc.status {
			t.Errorf("%s: page status %d, want %d", tc.code, w.Code, tc.status)
		}
		if ct := w.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("%s: Content-Type %q", tc.code, ct)
		}
		if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Errorf("%s: CSP %q", tc.code, csp)
		}
		for _, s := range tc.want {
			if !strings.Contains(body, s) {
				t.Errorf("%s: page lacks %q:\n%s", tc.code, s, body)
			}
		}
		for _, s := range tc.notWant {
			if strings.Contains(body, s) {
				t.Errorf("%s: page has %q:\n%s", tc.code, s, body)
			}
		}
		if got := strings.Contains(body, `<form id="signup"`); got != tc.form {
			t.Errorf("%s: form shown = %v, want %v", tc.code, got, tc.form)
		}

		// API clients get JSON for the same URL.
		w = get(t, h, "/invitations/"+tc.code, map[string]string{"Accept": "application/json"})
		if w.Code != tc.apiStatus {
			t.Errorf("%s: API status %d, want %d", tc.code, w.Code, tc.apiStatus)
		}
		if tc.apiStatus == 404 {
			checkProblem(t, tc.code, w, "unknown-invitation")
			continue
		}
		var got struct{ Invitation, Status string }
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || got.Invitation != tc.code || got.Status != tc.apiOutcome {
			t.Errorf("%s: API body %s (%v), want status %q", tc.code, w.Body, err, tc.apiOutcome)
		}
	}
	// The signup path now takes GET too.
	if w := do(t, h, req{method: http.MethodPut, path: "/invitations/open", ctype: "application/json", body: `{"email":"a@example.com"}`}); w.Code != 405 || w.Header().Get("Allow") != "GET, HEAD, POST" {
		t.Errorf("PUT: %d, Allow %q; want 405 and GET, HEAD, POST", w.Code, w.Header().Get("Allow"))
	}
	// No Accept at all (curl, scripts) is an API client too.
	if w := get(t, h, "/invitations/open", nil); !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
		t.Errorf("no Accept: Content-Type %q, want JSON", w.Header().Get("Content-Type"))
	}
}

// TestLinkPreviews: the crawlers that build link previews on the networks
// the links are posted on send Accept: */* and still get the page, whose
// Open Graph and Twitter tags name the game and the code; an API client
// with the same Accept gets JSON. HEAD answers like GET without a body.
func TestLinkPreviews(t *testing.T) {
	h := newLandingServer(t, api.Config{LandingPage: true, GameName: "Starfall"})
	for _, ua := range []string{
		"facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
		"Twitterbot/1.0",
		"Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
		"Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
		"TelegramBot (like TwitterBot)",
		"WhatsApp/2.23.20.0",
	} {
		w := get(t, h, "/invitations/open", map[string]string{"Accept": "*/*", "User-Agent": ua})
		body := w.Body.String()
		if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
			t.Errorf("%s: %d %s, want the page", ua, w.Code, w.Header().Get("Content-Type"))
			continue
		}
		for _, tag := range []string{`<meta property="og:title" content="Starfall: join the closed beta">`, `invitation open`, `<meta name="twitter:card" content="summary">`} {
			if !strings.Contains(body, tag) {
				t.Errorf("%s: the page lacks %s", ua, tag)
			}
		}
	}
	if w := get(t, h, "/invitations/open", map[string]string{"Accept": "*/*", "User-Agent": "curl/8.5.0"}); !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
		t.Errorf("curl: Content-Type %q, want JSON", w.Header().Get("Content-Type"))
	}
	for _, accept := range []string{"text/html", "application/json"} {
		r := httptest.NewRequest(http.MethodHead, "/invitations/open", nil)
		r.Header.Set("Accept", accept)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 || !strings.Contains(w.Header().Get("Content-Type"), strings.TrimPrefix(accept, "application/")) {
			t.Errorf("HEAD, Accept %s: %d %q", accept, w.Code, w.Header().Get("Content-Type"))
		}
	}
}

func TestLandingAssets(t *testing.T) {
	h := newLandingServer(t, api.Config{LandingPage: true})
	for path, ctype := range map[string]string{"/assets/landing.css": "text/css", "/assets/landing.js": "text/javascript"} {
		w := get(t, h, path, nil)
		if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), ctype) || w.Body.Len() < 200 {
			t.Errorf("%s: %d %q, %d bytes", path, w.Code, w.Header().Get("Content-Type"), w.Body.Len())
		}
	}
	if w := get(t, h, "/assets/landing.html", nil); w.Code != http.StatusNotFound {
		t.Errorf("templates are not assets: %d", w.Code)
	}
}

// TestLandingPageOff: with the switch off the public API is POST only, as
// before the page existed.
func TestLandingPageOff(t *testing.T) {
	h := newLandingServer(t, api.Config{LandingPage: false})
	w := get(t, h, "/invitations/open", browser)
	if w.Code != http.StatusMethodNotAllowed {
		t.Fatalf("GET with the page off: %d, want 405", w.Code)
	}
	checkProblem(t, "page off", w, "method-not-allowed")
	if w := get(t, h, "/assets/landing.js", nil); w.Code != http.StatusNotFound {
		t.Fatalf("assets with the page off: %d, want 404", w.Code)
	}
}

func TestCORS(t *testing.T) {
	allowed := "https://our-super-game.io"
	h := newLandingServer(t, api.Config{LandingPage: true, CORSOrigins: []string{allowed, "http://localhost:5173"}})
	preflight := func(origin string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodOptions, "/invitations/open", nil)
		r.Header.Set("Origin", origin)
		r.Header.Set("Access-Control-Request-Method", "POST")
		r.Header.Set("Access-Control-Request-Headers", "content-type")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	post := func(origin, em string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/invitations/open", strings.NewReader(`{"email":"`+em+`"}`))
		r.Header.Set("Content-Type", "application/json")
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}

	w := preflight(allowed)
	if w.Code != http.StatusNoContent {
		t.Fatalf("allowed preflight: %d, want 204", w.Code)
	}
	hd := w.Header()
	if hd.Get("Access-Control-Allow-Origin") != allowed || !strings.Contains(hd.Get("Access-Control-Allow-Methods"), "POST") ||
		!strings.Contains(strings.ToLower(hd.Get("Access-Control-Allow-Headers")), "content-type") || hd.Get("Access-Control-Max-Age") == "" {
		t.Fatalf("allowed preflight headers: %v", hd)
	}
	if !strings.Contains(strings.Join(hd.Values("Vary"), ","), "Origin") {
		t.Errorf("preflight without Vary: Origin: %v", hd)
	}

	w = post(allowed, "cors-a@example.com")
	if w.Code != http.StatusCreated || w.Header().Get("Access-Control-Allow-Origin") != allowed ||
		!strings.Contains(w.Header().Get("Access-Control-Expose-Headers"), "Retry-After") {
		t.Fatalf("allowed POST: %d %v", w.Code, w.Header())
	}

	for _, origin := range []string{"https://evil.example", "https://our-super-game.io.evil.example", "null"} {
		if w := preflight(origin); w.Code != http.StatusForbidden || w.Header().Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("refused preflight from %s: %d %v", origin, w.Code, w.Header())
		}
		if w := post(origin, "cors-evil@example.com"); w.Code != http.StatusForbidden || w.Header().Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("refused POST from %s: %d %v", origin, w.Code, w.Header())
		}
	}
	// The refused POST changed nothing: the same email is still free.
	if w := post("", "cors-evil@example.com"); w.Code != http.StatusCreated {
		t.Errorf("after the refused POST the email got %d, want 201", w.Code)
	}
	// The page itself, fetched from an allowed origin, varies by both.
	r0 := httptest.NewRequest(http.MethodGet, "/invitations/open", nil)
	r0.Header.Set("Origin", allowed)
	r0.Header.Set("Accept", "text/html")
	w0 := httptest.NewRecorder()
	h.ServeHTTP(w0, r0)
	if v := strings.Join(w0.Header().Values("Vary"), ","); !strings.Contains(v, "Origin") || !strings.Contains(v, "Accept") {
		t.Errorf("page from an allowed origin: Vary %q, want Origin and Accept", v)
	}
	// Same origin (the built-in page) needs no entry.
	r := httptest.NewRequest(http.MethodPost, "http://beta.example/invitations/open", strings.NewReader(`{"email":"same@example.com"}`))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Origin", "http://beta.example")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusCreated {
		t.Errorf("same-origin POST: %d, want 201", w.Code)
	}
}

// TestNoCORSByDefault: without origins a cross-origin preflight gets no
// CORS headers, so browsers do not send the POST.
func TestNoCORSByDefault(t *testing.T) {
	h := newLandingServer(t, api.Config{LandingPage: true})
	r := httptest.NewRequest(http.MethodOptions, "/invitations/open", nil)
	r.Header.Set("Origin", "https://our-super-game.io")
	r.Header.Set("Access-Control-Request-Method", "POST")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Header().Get("Access-Control-Allow-Origin") != "" || w.Code < 400 {
		t.Fatalf("preflight without CORS configured: %d %v", w.Code, w.Header())
	}
}

// TestStatusLookupSurvivesItsFirstCaller: page loads of one code share one
// status lookup; the first visitor leaving (its request canceled) must not
// fail the lookup for the others. In a synctest bubble, synctest.Wait
// returns once every request is blocked: the first in the lookup, the
// second waiting on it.
func TestStatusLookupSurvivesItsFirstCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var calls atomic.Int32
		status := func(ctx context.Context, code string) (invite.Status, error) {
			calls.Add(1)
			<-release
			if err := ctx.Err(); err != nil {
				return "", invite.Unavailable(err)
			}
			return invite.StatusOpen, nil
		}
		h := api.New(stub{}, api.Config{LandingPage: true, GameName: "G", Status: status})

		firstCtx, leave := context.WithCancel(context.Background())
		first := make(chan int)
		go func() {
			r := httptest.NewRequest(http.MethodGet, "/invitations/open", nil).WithContext(firstCtx)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			first <- w.Code
		}()
		synctest.Wait()
		if n := calls.Load(); n != 1 {
			t.Fatalf("%d lookups after the first visitor, want 1", n)
		}
		second := make(chan *httptest.ResponseRecorder)
		go func() { second <- get(t, h, "/invitations/open", map[string]string{"Accept": "application/json"}) }()
		synctest.Wait() // the second has joined the lookup in flight
		leave()
		<-first
		close(release)
		w := <-second
		if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"status":"open"`) {
			t.Fatalf("second visitor got %d %s, want 200 open", w.Code, w.Body)
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("%d lookups, want 1 shared", n)
		}
	})
}

// TestStatusCacheExpires: with a stepped clock, a code's status (and an
// unknown code) is looked up once per second per replica, and again as
// soon as the second has passed.
func TestStatusCacheExpires(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2027, 6, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	step := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	calls := map[string]int{}
	st := invite.StatusOpen
	status := func(_ context.Context, code string) (invite.Status, error) {
		mu.Lock()
		defer mu.Unlock()
		calls[code]++
		if code != "open" {
			return "", invite.ErrUnknownCode
		}
		return st, nil
	}
	h := api.New(stub{}, api.Config{LandingPage: true, GameName: "G", Status: status, Now: clock})
	lookups := func(code string) int { mu.Lock(); defer mu.Unlock(); return calls[code] }
	want := func(path, body string) {
		t.Helper()
		w := get(t, h, path, map[string]string{"Accept": "application/json"})
		if !strings.Contains(w.Body.String(), body) {
			t.Fatalf("GET %s: %d %s, want %s", path, w.Code, w.Body, body)
		}
	}

	want("/invitations/open", `"status":"open"`)
	want("/invitations/nope", "unknown-invitation")
	mu.Lock()
	st = invite.StatusFull // the code fills; the cache does not know yet
	mu.Unlock()
	step(999 * time.Millisecond)
	want("/invitations/open", `"status":"open"`)
	want("/invitations/nope", "unknown-invitation")
	if a, b := lookups("open"), lookups("nope"); a != 1 || b != 1 {
		t.Fatalf("within the second: %d and %d lookups, want 1 each", a, b)
	}
	step(time.Millisecond)
	want("/invitations/open", `"status":"full"`)
	want("/invitations/nope", "unknown-invitation")
	if a, b := lookups("open"), lookups("nope"); a != 2 || b != 2 {
		t.Fatalf("after the second: %d and %d lookups, want 2 each", a, b)
	}
}
