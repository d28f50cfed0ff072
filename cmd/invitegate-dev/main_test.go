package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/invitegate/invitegate/internal/testenv"
)

// syncBuffer is the dev server's terminal, read while it writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// terminal is what the last dev server started printed.
var terminal *syncBuffer

// start runs the dev server like `make run` and returns its API address and
// a stop function (SIGTERM's path: cancel, drain, exit 0).
func start(t *testing.T, dataDir string) (string, func()) {
	t.Helper()
	testenv.SkipIfShort(t, "the dev server's embedded FerretDB")
	api, admin := testenv.FreeAddr(t), testenv.FreeAddr(t)
	env := map[string]string{"INVITEGATE_DEV_DATA": dataDir, "INVITEGATE_LOG_LEVEL": "warn"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	out := &syncBuffer{}
	terminal = out
	go func() {
		done <- run(ctx, []string{"serve", "--http-addr", api, "--admin-addr", admin}, func(k string) string { return env[k] }, out, io.Discard)
	}()
	testenv.WaitFor(t, 30*time.Second, "the dev server to become ready", func() bool { return testenv.Readyz(admin) == http.StatusOK })
	return api, func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("exit code %d", code)
		}
		if !strings.Contains(out.String(), "curl -i -X POST") {
			t.Errorf("banner has no curl example:\n%s", out.String())
		}
	}
}

func post(t *testing.T, api, code, email string) int {
	t.Helper()
	resp, err := http.Post("http://"+api+"/invitations/"+code, "application/json", strings.NewReader(fmt.Sprintf(`{"email":%q}`, email)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestDevServerKeepsSignupsAcrossRestart is `make run` twice: the demo
// codes exist, a signup works, and after a restart (Redis is in memory,
// MongoDB's files survive) the email is still registered.
func TestDevServerKeepsSignupsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	api, stop := start(t, dir)
	if st := post(t, api, "twitter-reg1", "dev@example.com"); st != 201 {
		t.Fatalf("first signup: %d", st)
	}
	for i := 0; i < 10; i++ {
		if st := post(t, api, "instagram-hello", fmt.Sprintf("i%d@example.com", i)); st != 201 {
			t.Fatalf("instagram-hello #%d: %d", i, st)
		}
	}
	// No waiting: shutdown drains the reconciler's stream into MongoDB
	// before the in-memory Redis goes away.
	stop()

	api, stop = start(t, dir)
	stop = sync.OnceFunc(stop)
	defer stop()
	for _, c := range []struct {
		code, email string
		want        int
	}{
		{"twitter-reg1", "dev@example.com", 200},
		{"telegram-test", "dev@example.com", 409},
		{"instagram-hello", "late@example.com", 410},
		// telegram-test has a confirmation window: the seat is held.
		{"telegram-test", "new@example.com", 202},
	} {
		if st := post(t, api, c.code, c.email); st != c.want {
			t.Fatalf("after restart %s on %s: %d, want %d", c.email, c.code, st, c.want)
		}
	}
	// The terminal prints the confirmation email's link, pointing at this
	// process; following it registers the email.
	linkRE := regexp.MustCompile(`confirmation link: (http://` + regexp.QuoteMeta(api) + `/invitations/telegram-test/confirm\?token=([A-Za-z0-9_-]+))`)
	var m []string
	testenv.WaitFor(t, 20*time.Second, "the confirmation link on the terminal", func() bool {
		m = linkRE.FindStringSubmatch(terminal.String())
		return m != nil
	})
	resp, err := http.Get(m[1])
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET the link: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Post("http://"+api+"/invitations/telegram-test/confirm", "application/json", strings.NewReader(`{"token":"`+m[2]+`"}`))
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("confirm through the printed link: %v %v", resp, err)
	}
	resp.Body.Close()
	if st := post(t, api, "telegram-test", "new@example.com"); st != 200 {
		t.Fatalf("confirmed email again: %d, want 200", st)
	}

	// Every signup's email lands in the dev mailbox, once, across the
	// restart: 1 + 10 before it; after it the confirmation email and, once
	// confirmed, the further-instructions one.
	var files []string
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		files, _ = filepath.Glob(filepath.Join(dir, "mail", "*.eml"))
		if len(files) >= 13 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Once the server has stopped, its mailer included, no more can arrive:
	// a duplicate sent before then is counted.
	stop()
	files, _ = filepath.Glob(filepath.Join(dir, "mail", "*.eml"))
	to := map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := mail.ReadMessage(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		to[msg.Header.Get("To")]++
	}
	if len(files) != 13 || len(to) != 12 || to["<new@example.com>"] != 2 {
		t.Fatalf("%d emails to %d recipients, want 13 to 12 (two to new@example.com): %v", len(files), len(to), to)
	}
}
