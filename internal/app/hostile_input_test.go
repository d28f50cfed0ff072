package app_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	api "github.com/invitegate/invitegate/internal/http"
)

// hostile is one nasty request and the answer the contract gives it.
type hostile struct {
	name  string
	path  string // written raw into the request line
	ctype string // "" sends no Content-Type
	body  string
	raw   string // when set, the whole request as sent (path, ctype and body unused)
	want  int
	slug  string // problem type suffix; "" when net/http itself refuses (no problem document)
}

func hostileRows() []hostile {
	const js = "application/json"
	long := strings.Repeat("a", 65)
	return []hostile{
		{"malformed JSON", "/invitations/h", js, `{"email":}`, "", 400, "malformed-body"},
		{"truncated JSON", "/invitations/h", js, `{"email":"a@example.com"`, "", 400, "malformed-body"},
		{"trailing data", "/invitations/h", js, `{"email":"a@example.com"}x`, "", 400, "malformed-body"},
		{"second object", "/invitations/h", js, `{"email":"a@example.com"}{"email":"b@example.com"}`, "", 400, "malformed-body"},
		{"array", "/invitations/h", js, `[{"email":"a@example.com"}]`, "", 400, "malformed-body"},
		{"nested object", "/invitations/h", js, `{"email":{"email":"a@example.com"}}`, "", 400, "malformed-body"},
		{"number", "/invitations/h", js, `{"email":42}`, "", 400, "malformed-body"},
		{"null", "/invitations/h", js, `{"email":null}`, "", 400, "malformed-body"},
		{"unknown field", "/invitations/h", js, `{"mail":"a@example.com"}`, "", 400, "malformed-body"},
		{"extra field", "/invitations/h", js, `{"email":"a@example.com","admin":true}`, "", 400, "malformed-body"},
		{"duplicate keys", "/invitations/h", js, `{"email":"a@example.com","email":"b@example.com"}`, "", 400, "malformed-body"},
		{"duplicate keys, other case", "/invitations/h", js, `{"email":"a@example.com","Email":"b@example.com"}`, "", 400, "malformed-body"},
		{"empty object", "/invitations/h", js, `{}`, "", 400, "missing-email"},
		{"empty body", "/invitations/h", js, ``, "", 400, "malformed-body"},
		{"whitespace body", "/invitations/h", js, " \n\t ", "", 400, "malformed-body"},
		{"1 MB body", "/invitations/h", js, `{"email":"` + strings.Repeat("a", 1<<20) + `@example.com"}`, "", 413, "body-too-large"},
		{"1 MB chunked body", "", "", "", chunked("/invitations/h", 1<<20), 413, "body-too-large"},
		{"no Content-Type", "/invitations/h", "", `{"email":"a@example.com"}`, "", 415, "unsupported-media-type"},
		{"text/plain", "/invitations/h", "text/plain", `{"email":"a@example.com"}`, "", 415, "unsupported-media-type"},
		{"form", "/invitations/h", "application/x-www-form-urlencoded", `email=a%40example.com`, "", 415, "unsupported-media-type"},
		{"latin1 charset", "/invitations/h", "application/json; charset=latin1", `{"email":"a@example.com"}`, "", 415, "unsupported-media-type"},
		{"NUL escape in email", "/invitations/h", js, `{"email":"a\u0000b@example.com"}`, "", 400, "invalid-email"},
		{"raw NUL in body", "/invitations/h", js, "{\"email\":\"a\x00b@example.com\"}", "", 400, "malformed-body"},
		{"invalid UTF-8", "/invitations/h", js, "{\"email\":\"a\xff@example.com\"}", "", 400, "malformed-body"},
		{"overlong local part", "/invitations/h", js, `{"email":"` + strings.Repeat("a", 65) + `@example.com"}`, "", 400, "invalid-email"},
		{"overlong address", "/invitations/h", js, `{"email":"a@` + strings.Repeat(strings.Repeat("b", 60)+".", 5) + `com"}`, "", 400, "invalid-email"},
		{"CRLF in email", "/invitations/h", js, `{"email":"a@example.com\r\nBcc: x@example.net"}`, "", 400, "invalid-email"},
		{"display name", "/invitations/h", js, `{"email":"Bob <bob@example.com>"}`, "", 400, "invalid-email"},
		{"homoglyph local part", "/invitations/h", js, `{"email":"pаypal@example.com"}`, "", 400, "invalid-email"},
		// A well-formed IDN domain, homoglyphs included, is a valid address
		// stored in punycode (internal/email tests it); broken ones are not.
		{"invalid punycode domain", "/invitations/h", js, `{"email":"a@xn--zz.example"}`, "", 400, "invalid-email"},
		{"IDN domain with a space", "/invitations/h", js, `{"email":"a@bü cher.de"}`, "", 400, "invalid-email"},
		{"two at signs", "/invitations/h", js, `{"email":"a@b@example.com"}`, "", 400, "invalid-email"},
		{"overlong code", "/invitations/" + long, js, `{"email":"a@example.com"}`, "", 404, "unknown-invitation"},
		{"encoded slash in code", "/invitations/h%2F..", js, `{"email":"a@example.com"}`, "", 404, "not-found"},
		{"encoded dots", "/invitations/%2e%2e", js, `{"email":"a@example.com"}`, "", 404, "unknown-invitation"},
		{"path traversal", "/invitations/../admin", js, `{"email":"a@example.com"}`, "", 404, "not-found"},
		{"encoded traversal", "/invitations/..%2f..%2fetc%2fpasswd", js, `{"email":"a@example.com"}`, "", 404, "not-found"},
		{"space in code", "/invitations/h%20h", js, `{"email":"a@example.com"}`, "", 404, "unknown-invitation"},
		{"unicode code", "/invitations/h%C3%A9", js, `{"email":"a@example.com"}`, "", 404, "unknown-invitation"},
		{"trailing slash", "/invitations/h/", js, `{"email":"a@example.com"}`, "", 404, "not-found"},
		{"GET", "", "", "", "GET /invitations/h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405, "method-not-allowed"},
		{"PUT", "", "", "", "PUT /invitations/h HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 25\r\nConnection: close\r\n\r\n{\"email\":\"a@example.com\"}", 405, "method-not-allowed"},
		{"CRLF in path", "", "", "", "POST /invitations/h\r\nX: y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, ""},
		{"NUL in path", "", "", "", "POST /invitations/h\x00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, ""},
	}
}

// chunked is a POST whose body of about n bytes comes chunked, with no
// Content-Length to refuse it early.
func chunked(path string, n int) string {
	body := `{"email":"` + strings.Repeat("a", n) + `@example.com"}`
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n", path)
	for len(body) > 0 {
		c := min(len(body), 32<<10)
		fmt.Fprintf(&b, "%x\r\n%s\r\n", c, body[:c])
		body = body[c:]
	}
	b.WriteString("0\r\n\r\n")
	return b.String()
}

func (h hostile) request() string {
	if h.raw != "" {
		return h.raw
	}
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n", h.path, len(h.body))
	if h.ctype != "" {
		fmt.Fprintf(&b, "Content-Type: %s\r\n", h.ctype)
	}
	b.WriteString("\r\n")
	b.WriteString(h.body)
	return b.String()
}

// TestHostileRequestsStoreNothing sends each hostile request over a real
// connection to a real replica (redis-server, MongoDB-wire server): each
// gets its documented 4xx and problem type, and afterwards Redis holds no
// claim and no reservation and MongoDB no registration. One valid signup at
// the end shows the same checks do see a stored signup.
func TestHostileRequestsStoreNothing(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, deployments[1]) // K=16
	e.create(t, "h", 10)
	m, _ := e.start(t)

	for _, h := range hostileRows() {
		t.Run(h.name, func(t *testing.T) {
			status, ctype, body := sendRaw(t, m.PublicAddr, h.request())
			if status != h.want {
				t.Fatalf("status %d, want %d; body %.200s", status, h.want, body)
			}
			if h.slug == "" {
				return
			}
			if ctype != "application/problem+json" || !strings.Contains(body, `"type":"`+api.ProblemBase+h.slug+`"`) {
				t.Fatalf("answer %s %.300s; want problem type %s", ctype, body, h.slug)
			}
		})
	}

	stored := func() (claims, entries int64, regs int) {
		keys, err := e.rdb.Keys(ctx, "{"+e.cfg.RedisNamespace+":*}:e:*").Result()
		if err != nil {
			t.Fatal(err)
		}
		for s := 0; s < e.cfg.Shards; s++ {
			n, err := e.rdb.XLen(ctx, fmt.Sprintf("{%s:%d}:x", e.cfg.RedisNamespace, s)).Result()
			if err != nil {
				t.Fatal(err)
			}
			entries += n
		}
		counts, err := e.store.Counts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range counts {
			regs += n
		}
		return int64(len(keys)), entries, regs
	}
	if c, x, r := stored(); c != 0 || x != 0 || r != 0 {
		t.Fatalf("after the hostile requests: %d claims, %d stream entries, %d registrations; want none", c, x, r)
	}

	// The control: a valid signup is seen by the same checks.
	if st := post(t, m.PublicAddr, "h", "valid@example.com"); st != 201 {
		t.Fatalf("valid signup: %d", st)
	}
	e.waitPersisted(t, "h", 1)
	if c, _, r := stored(); c != 1 || r != 1 {
		t.Fatalf("after one valid signup: %d claims, %d registrations; want 1 and 1", c, r)
	}
}

func sendRaw(t *testing.T, addr, req string) (status int, ctype, body string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	// The server may answer (413) and close before reading it all.
	go io.Copy(conn, strings.NewReader(req))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no HTTP answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}
