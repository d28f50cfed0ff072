package http_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	api "github.com/invitegate/invitegate/internal/http"
)

// FuzzHandler sends arbitrary paths and bodies through the whole router,
// every optional guard on, with a reserver that always succeeds: no input
// may panic it or produce a status outside the contract. The committed
// corpus in testdata/fuzz/FuzzHandler holds the hostile shapes.
func FuzzHandler(f *testing.F) {
	for _, s := range []struct{ path, body string }{
		{"/invitations/open", `{"email":"a@example.com"}`},
		{"/invitations/a%2Fb", `{"Email":"a@b.co"}`},
		{"/invitations/..", `{"email":"a@b.co","email":"c@d.ef"}`},
		{"/invitations/x", `[1,2,3]`},
		{"/invitations/x", "{\"email\":\"\xff\"}"},
	} {
		f.Add(s.path, s.body)
	}
	h := api.New(stub{}, api.Config{
		MaxInFlight:    64,
		HideEmailTaken: true,
		BlockedDomain:  func(d string) bool { return d == "blocked.example" },
	})
	allowed := map[int]bool{200: true, 201: true, 400: true, 404: true, 405: true, 413: true, 415: true}
	f.Fuzz(func(t *testing.T, path, body string) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		r, err := http.NewRequest(http.MethodPost, "http://x", strings.NewReader(body))
		if err != nil {
			return
		}
		r.URL.Path = path
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if !allowed[w.Code] {
			t.Fatalf("path %q body %q: status %d", path, body, w.Code)
		}
	})
}
