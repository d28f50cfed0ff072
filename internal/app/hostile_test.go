package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/invitegate/invitegate/internal/app"
	"github.com/invitegate/invitegate/internal/email"
	api "github.com/invitegate/invitegate/internal/http"
	"github.com/invitegate/invitegate/internal/persist"
)

// nastyCode is the one invitation TestHostileInputStoresNothing creates.
// Rows aimed at the body use it, so that a row the server wrongly accepted
// would take one of its seats and show up in the "nothing stored" checks.
const nastyCode = "hostile"

// nastyRequest is one hostile request and the answer the API gives it.
type nastyRequest struct {
	name    string
	method  string // "" is POST
	path    string // as given to net/http ("" is /invitations/hostile)
	ctype   string // "" sends no Content-Type
	body    string
	chunked bool   // hide the length: the client sends Transfer-Encoding: chunked
	raw     string // when set, the whole request, written on a net.Conn (for what net/http will not build)
	want    int
	slug    string // problem type suffix; "" when net/http's server refuses the request itself
}

// nastyRows is the table of TestHostileInputStoresNothing. Every request
// aimed at a real route carries, where the row allows, a valid address, so
// that a request let through by mistake would register someone.
func nastyRows() []nastyRequest {
	const js = "application/json"
	const ok = `{"email":"victim@example.com"}`
	rows := []nastyRequest{
		// Bodies that are not exactly one object with one string "email".
		{name: "malformed JSON", ctype: js, body: `{"email":}`, want: 400, slug: "malformed-body"},
		{name: "truncated JSON", ctype: js, body: `{"email":"victim@example.com"`, want: 400, slug: "malformed-body"},
		{name: "truncated string", ctype: js, body: `{"email":"victim@exa`, want: 400, slug: "malformed-body"},
		{name: "trailing garbage", ctype: js, body: ok + `x`, want: 400, slug: "malformed-body"},
		{name: "trailing second object", ctype: js, body: ok + `{"email":"other@example.com"}`, want: 400, slug: "malformed-body"},
		{name: "trailing comma", ctype: js, body: `{"email":"victim@example.com",}`, want: 400, slug: "malformed-body"},
		{name: "single quotes", ctype: js, body: `{'email':'victim@example.com'}`, want: 400, slug: "malformed-body"},
		{name: "comment", ctype: js, body: `{/*x*/"email":"victim@example.com"}`, want: 400, slug: "malformed-body"},
		{name: "byte order mark", ctype: js, body: "\ufeff" + ok, want: 400, slug: "malformed-body"},
		{name: "JSON array", ctype: js, body: `[` + ok + `]`, want: 400, slug: "malformed-body"},
		{name: "JSON string", ctype: js, body: `"victim@example.com"`, want: 400, slug: "malformed-body"},
		{name: "deeply nested arrays", ctype: js, body: strings.Repeat("[", 2000) + strings.Repeat("]", 2000), want: 400, slug: "malformed-body"},
		{name: "nested object as email", ctype: js, body: `{"email":{"email":"victim@example.com"}}`, want: 400, slug: "malformed-body"},
		{name: "array as email", ctype: js, body: `{"email":["victim@example.com"]}`, want: 400, slug: "malformed-body"},
		{name: "number as email", ctype: js, body: `{"email":42}`, want: 400, slug: "malformed-body"},
		{name: "bool as email", ctype: js, body: `{"email":true}`, want: 400, slug: "malformed-body"},
		{name: "null email", ctype: js, body: `{"email":null}`, want: 400, slug: "malformed-body"},
		{name: "unknown field", ctype: js, body: `{"mail":"victim@example.com"}`, want: 400, slug: "malformed-body"},
		{name: "NUL in field name", ctype: js, body: `{"email\u0000":"victim@example.com"}`, want: 400, slug: "malformed-body"},
		{name: "extra field after email", ctype: js, body: `{"email":"victim@example.com","admin":true}`, want: 400, slug: "malformed-body"},
		{name: "extra field before email", ctype: js, body: `{"invitation":"other","email":"victim@example.com"}`, want: 400, slug: "malformed-body"},
		{name: "duplicate email keys", ctype: js, body: `{"email":"victim@example.com","email":"other@example.com"}`, want: 400, slug: "malformed-body"},
		{name: "duplicate keys email and Email", ctype: js, body: `{"email":"victim@example.com","Email":"other@example.com"}`, want: 400, slug: "malformed-body"},
		{name: "duplicate keys, one escaped", ctype: js, body: `{"email":"victim@example.com","\u0065mail":"other@example.com"}`, want: 400, slug: "malformed-body"},
		{name: "empty object", ctype: js, body: `{}`, want: 400, slug: "missing-email"},
		{name: "empty body", ctype: js, body: ``, want: 400, slug: "malformed-body"},
		{name: "whitespace-only body", ctype: js, body: " \r\n\t ", want: 400, slug: "malformed-body"},

		// Size: MaxBody is 4 KiB.
		{name: "1 MB body with Content-Length", ctype: js, body: nastyBig(1 << 20), want: 413, slug: "body-too-large"},
		{name: "1 MB body chunked, no Content-Length", ctype: js, body: nastyBig(1 << 20), chunked: true, want: 413, slug: "body-too-large"},
		{name: "4 KiB + 1 byte body", ctype: js, body: ok + strings.Repeat(" ", 4<<10+1-len(ok)), want: 413, slug: "body-too-large"},
		{name: "4 KiB + 1 byte body chunked", ctype: js, body: ok + strings.Repeat(" ", 4<<10+1-len(ok)), chunked: true, want: 413, slug: "body-too-large"},

		// Media types.
		{name: "no Content-Type", body: ok, want: 415, slug: "unsupported-media-type"},
		{name: "text/plain", ctype: "text/plain", body: ok, want: 415, slug: "unsupported-media-type"},
		{name: "form-urlencoded", ctype: "application/x-www-form-urlencoded", body: "email=victim%40example.com", want: 415, slug: "unsupported-media-type"},
		{name: "multipart form", ctype: "multipart/form-data; boundary=x", body: "--x\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nvictim@example.com\r\n--x--\r\n", want: 415, slug: "unsupported-media-type"},
		{name: "application/json;charset=latin1", ctype: "application/json;charset=latin1", body: ok, want: 415, slug: "unsupported-media-type"},
		{name: "application/json; charset=utf-16", ctype: "application/json; charset=utf-16", body: ok, want: 415, slug: "unsupported-media-type"},
		{name: "duplicate charset parameter", ctype: "application/json; charset=utf-8; charset=latin1", body: ok, want: 415, slug: "unsupported-media-type"},
		{name: "application/problem+json", ctype: "application/problem+json", body: ok, want: 415, slug: "unsupported-media-type"},
		{name: "application/jsonx", ctype: "application/jsonx", body: ok, want: 415, slug: "unsupported-media-type"},

		// Bytes the JSON decoder or the UTF-8 check refuses.
		{name: "NUL as \\u0000 escape in email", ctype: js, body: `{"email":"vic\u0000tim@example.com"}`, want: 400, slug: "invalid-email"},
		{name: "NUL as \\u0000 escape in domain", ctype: js, body: `{"email":"victim@example.com\u0000.evil.com"}`, want: 400, slug: "invalid-email"},
		{name: "raw NUL in email", ctype: js, body: "{\"email\":\"vic\x00tim@example.com\"}", want: 400, slug: "malformed-body"},
		{name: "invalid UTF-8 in email", ctype: js, body: "{\"email\":\"vic\xfftim@example.com\"}", want: 400, slug: "malformed-body"},
		{name: "invalid UTF-8 outside strings", ctype: js, body: "\xff" + ok, want: 400, slug: "malformed-body"},
		{name: "overlong UTF-8 for @ (C1 80)", ctype: js, body: "{\"email\":\"victim\xc1\x80example.com\"}", want: 400, slug: "malformed-body"},
		{name: "lone surrogate escape", ctype: js, body: `{"email":"vi\ud800ctim@example.com"}`, want: 400, slug: "invalid-email"},

		// Well-formed JSON, but not a plain addr-spec.
		{name: "empty email", ctype: js, body: `{"email":""}`, want: 400, slug: "invalid-email"},
		{name: "blank email", ctype: js, body: `{"email":"   "}`, want: 400, slug: "invalid-email"},
		{name: "local part of 65 bytes", ctype: js, body: `{"email":"` + strings.Repeat("a", 65) + `@example.com"}`, want: 400, slug: "invalid-email"},
		{name: "address over 254 bytes", ctype: js, body: `{"email":"` + strings.Repeat("a", 64) + "@" + nastyDomain(4, 60) + `"}`, want: 400, slug: "invalid-email"},
		{name: "domain over 253 bytes", ctype: js, body: `{"email":"a@` + nastyDomain(5, 60) + `"}`, want: 400, slug: "invalid-email"},
		{name: "CRLF header injection", ctype: js, body: `{"email":"victim@example.com\r\nBcc: x@y.com"}`, want: 400, slug: "invalid-email"},
		{name: "LF header injection", ctype: js, body: `{"email":"victim@example.com\nBcc: x@y.com"}`, want: 400, slug: "invalid-email"},
		{name: "display name", ctype: js, body: `{"email":"Bob <bob@x.com>"}`, want: 400, slug: "invalid-email"},
		{name: "angle brackets", ctype: js, body: `{"email":"<bob@x.com>"}`, want: 400, slug: "invalid-email"},
		{name: "quoted local part", ctype: js, body: `{"email":"\"vic tim\"@example.com"}`, want: 400, slug: "invalid-email"},
		{name: "comment in address", ctype: js, body: `{"email":"victim(x)@example.com"}`, want: 400, slug: "invalid-email"},
		{name: "two at signs", ctype: js, body: `{"email":"victim@evil.com@example.com"}`, want: 400, slug: "invalid-email"},
		{name: "IP literal domain", ctype: js, body: `{"email":"victim@[127.0.0.1]"}`, want: 400, slug: "invalid-email"},
		{name: "dotted-quad domain", ctype: js, body: `{"email":"victim@127.0.0.1"}`, want: 400, slug: "invalid-email"},
		{name: "dotless domain", ctype: js, body: `{"email":"victim@localhost"}`, want: 400, slug: "invalid-email"},
		{name: "Cyrillic а in local part", ctype: js, body: `{"email":"pаypal@example.com"}`, want: 400, slug: "invalid-email"},
		{name: "Cyrillic а in local part and domain", ctype: js, body: `{"email":"pаypal@pаypal.com"}`, want: 400, slug: "invalid-email"},
		{name: "Kelvin sign in local part", ctype: js, body: `{"email":"\u212aevin@example.com"}`, want: 400, slug: "invalid-email"},
		{name: "broken punycode domain", ctype: js, body: `{"email":"victim@xn--zz.example"}`, want: 400, slug: "invalid-email"},
		{name: "space inside IDN domain", ctype: js, body: `{"email":"victim@bü cher.de"}`, want: 400, slug: "invalid-email"},
		{name: "Gmail address with nothing before +", ctype: js, body: `{"email":"+tag@gmail.com"}`, want: 400, slug: "invalid-email"},

		// Codes and paths. The bodies are valid: only the path is wrong.
		{name: "unknown code", path: "/invitations/nosuchcode", ctype: js, body: ok, want: 404, slug: "unknown-invitation"},
		{name: "code in upper case", path: "/invitations/HOSTILE", ctype: js, body: ok, want: 404, slug: "unknown-invitation"},
		{name: "code of 65 characters", path: "/invitations/" + strings.Repeat("h", 65), ctype: js, body: ok, want: 404, slug: "unknown-invitation"},
		{name: "code + %2F", path: "/invitations/hostile%2F", ctype: js, body: ok, want: 404, slug: "not-found"},
		{name: "code %2F code", path: "/invitations/hostile%2Fhostile", ctype: js, body: ok, want: 404, slug: "not-found"},
		{name: "code %2e%2e", path: "/invitations/%2e%2e", ctype: js, body: ok, want: 404, slug: "unknown-invitation"},
		{name: "code %00", path: "/invitations/hostile%00", ctype: js, body: ok, want: 404, slug: "unknown-invitation"},
		{name: "code %0d%0a", path: "/invitations/hostile%0d%0aX-Injected:%201", ctype: js, body: ok, want: 404, slug: "unknown-invitation"},
		{name: "path traversal ../admin", path: "/invitations/../admin", ctype: js, body: ok, want: 404, slug: "not-found"},
		{name: "path traversal ..%2f..%2fetc", path: "/invitations/..%2f..%2fetc", ctype: js, body: ok, want: 404, slug: "not-found"},
		{name: "path traversal ..%2f..%2fmetrics", path: "/invitations/..%2f..%2fmetrics", ctype: js, body: ok, want: 404, slug: "not-found"},
		{name: "double slash", path: "/invitations//hostile", ctype: js, body: ok, want: 404, slug: "not-found"},
		{name: "trailing slash", path: "/invitations/hostile/", ctype: js, body: ok, want: 404, slug: "not-found"},
		{name: "no code", path: "/invitations/", ctype: js, body: ok, want: 404, slug: "not-found"},
		{name: "matrix parameter", path: "/invitations/hostile;admin=1", ctype: js, body: ok, want: 404, slug: "unknown-invitation"},
		{name: "code with %20 space", path: "/invitations/host%20ile", ctype: js, body: ok, want: 404, slug: "unknown-invitation"},
		{name: "code with trailing %20", path: "/invitations/hostile%20", ctype: js, body: ok, want: 404, slug: "unknown-invitation"},
		{name: "code with + for space", path: "/invitations/host+ile", ctype: js, body: ok, want: 404, slug: "unknown-invitation"},
		{name: "code with é", path: "/invitations/hostilé", ctype: js, body: ok, want: 404, slug: "unknown-invitation"},
		{name: "code with Cyrillic о", path: "/invitations/hоstile", ctype: js, body: ok, want: 404, slug: "unknown-invitation"},
		{name: "code in fullwidth letters", path: "/invitations/ｈｏｓｔｉｌｅ", ctype: js, body: ok, want: 404, slug: "unknown-invitation"},

		// Methods. (GET is the landing page and the code's status:
		// internal/http TestLandingPage.)
		{name: "PUT", method: http.MethodPut, ctype: js, body: ok, want: 405, slug: "method-not-allowed"},
		{name: "PATCH", method: http.MethodPatch, ctype: js, body: ok, want: 405, slug: "method-not-allowed"},
		{name: "DELETE", method: http.MethodDelete, want: 405, slug: "method-not-allowed"},
		{name: "OPTIONS", method: http.MethodOptions, want: 405, slug: "method-not-allowed"},

		// Requests net/http's client will not build: written raw. net/http's
		// server refuses them before the router, with its own plain-text 400.
		{name: "CRLF in path (raw)", raw: nastyRaw("/invitations/hostile\r\nX-Injected: 1", ok), want: 400},
		{name: "NUL in path (raw)", raw: nastyRaw("/invitations/host\x00ile", ok), want: 400},
		{name: "space in path (raw)", raw: nastyRaw("/invitations/host ile", ok), want: 400},
		{name: "conflicting Content-Length (raw)", raw: "POST /invitations/hostile HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 31\r\nContent-Length: 3\r\nConnection: close\r\n\r\n" + ok, want: 400},
		{name: "no Host header (raw)", raw: "POST /invitations/hostile HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 31\r\nConnection: close\r\n\r\n" + ok, want: 400},
	}
	return rows
}

// nastyBig is a JSON signup of about n bytes.
func nastyBig(n int) string {
	return `{"email":"` + strings.Repeat("a", n) + `@example.com"}`
}

// nastyDomain is a syntactically fine domain of labels labels of n bytes
// each, under ".com".
func nastyDomain(labels, n int) string {
	return strings.Repeat(strings.Repeat("b", n)+".", labels) + "com"
}

// nastyRaw is a POST with target path and a JSON body, as raw bytes.
func nastyRaw(path, body string) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", path, len(body), body)
}

// send makes the row's request to the public address addr and returns the
// answer's status, headers and body.
func (n nastyRequest) send(t *testing.T, addr string) (int, http.Header, []byte) {
	t.Helper()
	if n.raw != "" {
		return nastySendRaw(t, addr, n.raw)
	}
	method, path := n.method, n.path
	if method == "" {
		method = http.MethodPost
	}
	if path == "" {
		path = "/invitations/" + nastyCode
	}
	var body io.Reader
	if n.body != "" {
		body = strings.NewReader(n.body)
	}
	if n.chunked {
		body = io.MultiReader(strings.NewReader(n.body)) // a reader of unknown length
	}
	req, err := http.NewRequest(method, "http://"+addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if n.chunked {
		req.ContentLength = -1
		req.TransferEncoding = []string{"chunked"}
	}
	if n.ctype != "" {
		req.Header.Set("Content-Type", n.ctype)
	}
	// Each row has a connection of its own, so no row sees the state
	// another left. Keep-alive stays on: a request that says
	// "Connection: close" and offers a body larger than the server will
	// read gets its connection closed at once after the answer, and the
	// RST can reach the client before it has read the 413 (net/http only
	// lingers before closing when the client did not ask to close).
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	cl := &http.Client{
		Transport: tr,
		Timeout:   15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a redirect is an answer to check, not to follow
		},
	}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return resp.StatusCode, resp.Header, b
}

// nastySendRaw writes req on a new connection and reads one answer.
func nastySendRaw(t *testing.T, addr, req string) (int, http.Header, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	// The server may answer and close before it has read everything.
	go io.Copy(conn, strings.NewReader(req))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no HTTP answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// nastyStored is what the hostile requests must not have left behind.
type nastyStored struct {
	added     int64 // entries ever appended to the reservation streams
	live      int64 // entries now in them
	claims    int   // email claim keys ({ns:s}:e:<canonical>)
	mongo     int64 // documents in the registrations collection
	remaining int   // seats left on nastyCode in Redis (-1: not seeded)
}

func (e *env) nastyStored(t *testing.T, m *app.Main) nastyStored {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var st nastyStored
	ns := e.cfg.RedisNamespace
	for s := 0; s < e.cfg.Shards; s++ {
		// entries-added counts every XADD, even of entries the
		// reconciler has since persisted and deleted.
		info, err := e.rdb.XInfoStream(ctx, fmt.Sprintf("{%s:%d}:x", ns, s)).Result()
		if err != nil && strings.Contains(err.Error(), "no such key") {
			continue
		}
		if err != nil {
			t.Fatalf("XINFO STREAM shard %d: %v", s, err)
		}
		st.added += info.EntriesAdded
		st.live += info.Length
	}
	iter := e.rdb.Scan(ctx, 0, "{"+ns+":*}:e:*", 1000).Iterator()
	for iter.Next(ctx) {
		st.claims++
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	n, err := e.db.Collection(persist.RegistrationsCollection).CountDocuments(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	st.mongo = n
	counts, err := e.store.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sum := 0
	for _, c := range counts {
		sum += c
	}
	if int64(sum) != n {
		t.Fatalf("store.Counts sums to %d, the collection holds %d", sum, n)
	}
	st.remaining = -1
	left, seeded, err := m.Reserver.Remaining(ctx, nastyCode)
	if err != nil {
		t.Fatal(err)
	}
	if seeded {
		st.remaining = left
	}
	return st
}

// TestHostileInputStoresNothing sends each hostile request over real HTTP
// to a real replica (redis-server, K=4 shards; the embedded FerretDB) and
// checks its exact status and RFC 9457 problem type. Afterwards no
// reservation was ever appended to a stream, no email is claimed, no seat is
// taken and MongoDB holds no registration. A valid signup at the end shows
// that the same checks do see a stored signup, and an IDN address shows
// what a non-ASCII domain becomes.
func TestHostileInputStoresNothing(t *testing.T) {
	e := newEnv(t, deployment{"redis/K=4", false, 4})
	e.create(t, nastyCode, 10)
	m, _ := e.start(t)
	addr := m.PublicAddr

	for _, row := range nastyRows() {
		t.Run(row.name, func(t *testing.T) {
			status, h, body := row.send(t, addr)
			if status != row.want {
				t.Fatalf("status %d, want %d; body %.300q", status, row.want, body)
			}
			ctype := h.Get("Content-Type")
			if row.slug == "" {
				// Refused by net/http's server: no problem document, and
				// nothing of the request reached the router.
				if !strings.HasPrefix(ctype, "text/plain") {
					t.Fatalf("Content-Type %q, want net/http's text/plain; body %.300q", ctype, body)
				}
				return
			}
			if ctype != "application/problem+json" {
				t.Fatalf("Content-Type %q, want application/problem+json; body %.300q", ctype, body)
			}
			var p struct {
				Type   string `json:"type"`
				Title  string `json:"title"`
				Status int    `json:"status"`
			}
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatalf("problem document %.300q: %v", body, err)
			}
			if want := api.ProblemBase + row.slug; p.Type != want || p.Status != row.want || p.Title == "" {
				t.Fatalf("problem %+v, want type %s and status %d", p, want, row.want)
			}
			if cc := h.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", cc)
			}
			if row.want == http.StatusMethodNotAllowed {
				// GET is the landing page (on by default).
				if allow := h.Values("Allow"); len(allow) != 1 || allow[0] != "GET, HEAD, POST" {
					t.Fatalf("Allow %q, want [GET, HEAD, POST]", allow)
				}
			}
		})
	}
	if t.Failed() {
		t.FailNow()
	}

	// No stream ever got an entry (entries-added would show one even after
	// the reconciler persisted and deleted it), so nothing can reach
	// MongoDB; it is checked all the same.
	st := e.nastyStored(t, m)
	t.Logf("after the hostile requests: %+v", st)
	if st != (nastyStored{remaining: 10}) {
		t.Fatalf("after the hostile requests: %+v; want nothing stored and 10 seats left", st)
	}

	// The control: one valid signup, seen by the same checks.
	status, _, body := nastyRequest{ctype: "application/json", body: `{"email":"Control@Example.com"}`}.send(t, addr)
	if status != http.StatusCreated || !strings.Contains(string(body), `"email":"control@example.com"`) {
		t.Fatalf("valid signup: %d %s", status, body)
	}
	e.waitPersisted(t, nastyCode, 1)
	if st = e.nastyStored(t, m); st.added != 1 || st.claims != 1 || st.mongo != 1 || st.remaining != 9 {
		t.Fatalf("after one valid signup: %+v; want 1 stream entry, 1 claim, 1 registration, 9 seats left", st)
	}

	// IDN domains are not hostile: they are valid addresses, stored with
	// the domain in punycode, the form a mailer uses. A homoglyph domain
	// thus becomes a different, visibly foreign domain.
	a, err := email.Parse("user@exаmple.com", email.Options{}) // Cyrillic а
	if err != nil || !strings.HasPrefix(a.Normalized, "user@xn--") || a.Canonical == "user@example.com" {
		t.Fatalf("homoglyph domain: %+v, %v; want a valid address with a punycode domain", a, err)
	}
	t.Logf("user@exаmple.com (Cyrillic а) is accepted as %s", a.Normalized)
	status, _, body = nastyRequest{ctype: "application/json", body: `{"email":"User@Bücher.de"}`}.send(t, addr)
	var reg struct{ Invitation, Email, Status string }
	if err := json.Unmarshal(body, &reg); err != nil || status != http.StatusCreated ||
		reg != (struct{ Invitation, Email, Status string }{nastyCode, "user@xn--bcher-kva.de", "registered"}) {
		t.Fatalf("IDN signup: %d %s (%v); want 201 for user@xn--bcher-kva.de", status, body, err)
	}
	e.waitPersisted(t, nastyCode, 2)
	r, ok, err := e.store.Registration(context.Background(), "user@xn--bcher-kva.de")
	if err != nil || !ok || r.Email != "user@xn--bcher-kva.de" || r.Invitation != nastyCode {
		t.Fatalf("IDN registration in MongoDB: %+v, %v, %v; want email user@xn--bcher-kva.de", r, ok, err)
	}
	if _, ok, _ := e.store.Registration(context.Background(), "user@bücher.de"); ok {
		t.Fatal("IDN registration stored under its Unicode form")
	}
}
