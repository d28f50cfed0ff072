package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
)

func (c ctl) connect(t *testing.T) *env {
	t.Helper()
	e, err := connect(func(k string) string { return c.env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	return e
}

func reserveN(t *testing.T, e *env, code, prefix string, n int) (created int) {
	t.Helper()
	for i := 0; i < n; i++ {
		a, _ := email.Parse(fmt.Sprintf("%s%d@example.com", prefix, i), email.Options{})
		res, err := e.signups().Reserve(context.Background(), code, a)
		if err == nil && res.Outcome == invite.Created {
			created++
		}
	}
	return created
}

func remaining(t *testing.T, e *env, code string) int {
	t.Helper()
	n, _, err := e.res.Remaining(context.Background(), code)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSetMaxDisableEnable(t *testing.T) {
	c := newCtl(t, "4")
	e := c.connect(t)
	c.must(t, "create", "live", "--max", "10")
	if got := reserveN(t, e, "live", "a", 6); got != 6 {
		t.Fatalf("created %d, want 6", got)
	}
	steps := []struct {
		args          []string
		code          int
		wantRemaining int
	}{
		{[]string{"set-max", "live", "20"}, exitOK, 14},
		{[]string{"set-max", "live", "8"}, exitOK, 2},
		{[]string{"set-max", "live", "5"}, exitRefused, 2}, // 6 taken: refused, nothing changed
		{[]string{"set-max", "live", "8"}, exitOK, 2},      // unchanged
		{[]string{"set-max", "nope", "5"}, exitMissing, 2},
		{[]string{"set-max", "live", "0"}, exitUsage, 2},
		{[]string{"set-max", "live", "many"}, exitUsage, 2},
		{[]string{"set-max", "live", "6"}, exitOK, 0},
	}
	for _, s := range steps {
		code, out, errOut := c.run(t, s.args...)
		if code != s.code {
			t.Fatalf("%v: exit %d (%s%s), want %d", s.args, code, out, errOut, s.code)
		}
		if r := remaining(t, e, "live"); r != s.wantRemaining {
			t.Fatalf("%v: remaining %d, want %d", s.args, r, s.wantRemaining)
		}
	}
	if inv, _, _ := e.store.Invitation(context.Background(), "live"); inv.MaxUses != 6 {
		t.Fatalf("MongoDB max_uses = %d, want 6", inv.MaxUses)
	}
	// Full now, and every shard marked sold out by the failed attempts.
	if got := reserveN(t, e, "live", "b", 20); got != 0 {
		t.Fatalf("full code admitted %d", got)
	}
	// Raising the max reopens it at once: no stale sold-out mark.
	c.must(t, "set-max", "live", "7")
	if got := reserveN(t, e, "live", "c", 5); got != 1 {
		t.Fatalf("after +1 seat, admitted %d, want 1", got)
	}

	ctx := context.Background()
	a0, _ := email.Parse("a0@example.com", email.Options{})
	fresh, _ := email.Parse("fresh@example.com", email.Options{})
	c.must(t, "create", "door", "--max", "5")
	c.must(t, "disable", "door")
	if _, err := e.signups().Reserve(ctx, "door", fresh); !errors.Is(err, invite.ErrDisabled) {
		t.Fatalf("disabled code: %v", err)
	}
	if res, err := e.signups().Reserve(ctx, "live", a0); err != nil || res.Outcome != invite.Existing {
		t.Fatalf("registered email elsewhere: %v %v", res.Outcome, err)
	}
	c.must(t, "enable", "door")
	if res, err := e.signups().Reserve(ctx, "door", fresh); err != nil || res.Outcome != invite.Created {
		t.Fatalf("enabled code: %v %v", res.Outcome, err)
	}
	if code, _, _ := c.run(t, "disable", "nope"); code != exitMissing {
		t.Fatalf("disable unknown: exit %d", code)
	}
	for _, r := range listJSON(t, c) {
		if r.Code == "door" && r.Disabled {
			t.Fatal("door still listed disabled")
		}
	}
}

// TestSetMaxDuringSpike: cutting capacity while signups run never
// over-admits: either the cut goes through and at most the new max is
// admitted, or it is refused and nothing changed.
func TestSetMaxDuringSpike(t *testing.T) {
	c := newCtl(t, "8")
	e := c.connect(t)
	c.must(t, "create", "spk", "--max", "100")
	var created atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < 300; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			a, _ := email.Parse(fmt.Sprintf("s%d@example.com", i), email.Options{})
			if res, err := e.signups().Reserve(context.Background(), "spk", a); err == nil && res.Outcome == invite.Created {
				created.Add(1)
			}
		}()
	}
	close(start)
	code, _, errOut := c.run(t, "set-max", "spk", "60")
	wg.Wait()
	inv, _, _ := e.store.Invitation(context.Background(), "spk")
	switch code {
	case exitOK:
		if inv.MaxUses != 60 {
			t.Fatalf("set-max succeeded but MongoDB says %d", inv.MaxUses)
		}
	case exitRefused:
		if inv.MaxUses != 100 {
			t.Fatalf("set-max refused but MongoDB says %d", inv.MaxUses)
		}
	default:
		t.Fatalf("set-max exit %d: %s", code, errOut)
	}
	got := int(created.Load())
	if rem := remaining(t, e, "spk"); got != inv.MaxUses || rem != 0 {
		t.Fatalf("admitted %d with %d remaining, want exactly max %d and 0 (exit %d)", got, rem, inv.MaxUses, code)
	}
}

func TestImport(t *testing.T) {
	c := newCtl(t, "2")
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bad := []struct {
		body, msg string
	}{
		{"code,max_uses\nok1,5\nbad/code,5\n", "line 3"},
		{"ok1,5\nok2,0\n", "line 2"},
		{"ok1,5\nok2,5,tomorrow\n", "line 2"},
		{"ok1,5\nok1,6\n", "already on line 1"},
		{"ok1\n", "line 1"},
		{"", "no invitations"},
	}
	for i, b := range bad {
		code, _, errOut := c.run(t, "import", write(fmt.Sprintf("bad%d.csv", i), b.body))
		if code != exitUsage || !strings.Contains(errOut, b.msg) {
			t.Fatalf("bad file %q: exit %d, %q; want exit 2 mentioning %q", b.body, code, errOut, b.msg)
		}
	}
	if rows := listJSON(t, c); len(rows) != 0 {
		t.Fatalf("bad imports left %d invitations", len(rows))
	}
	good := write("good.csv", "code,max_uses,expires_at\n# launch wave\ntwitter-reg1,1000\ntelegram-test, 100, 2099-01-01T00:00:00Z\n")
	if code, out, errOut := c.run(t, "import", good); code != 0 || !strings.Contains(out, "imported 2") {
		t.Fatalf("good import: %d %s %s", code, out, errOut)
	}
	rows := listJSON(t, c)
	if len(rows) != 2 || rows[0].Code != "telegram-test" || rows[0].MaxUses != 100 || rows[0].ExpiresAt == nil || rows[1].Remaining != 1000 {
		t.Fatalf("after import: %+v", rows)
	}
	// A file naming an existing code imports nothing.
	again := write("again.csv", "new-one,5\ntwitter-reg1,5\n")
	if code, _, errOut := c.run(t, "import", again); code != exitExists || !strings.Contains(errOut, "twitter-reg1") {
		t.Fatalf("import over existing: %d %s", code, errOut)
	}
	if rows := listJSON(t, c); len(rows) != 2 {
		t.Fatalf("partial import: %d invitations", len(rows))
	}
	if code, out, errOut := c.run(t, "import", "--skip-existing", again); code != 0 || !strings.Contains(out, "imported 1 invitations, skipped 1") {
		t.Fatalf("import --skip-existing: %d %s %s", code, out, errOut)
	}
	if rows := listJSON(t, c); len(rows) != 3 {
		t.Fatalf("after --skip-existing: %d invitations, want 3", len(rows))
	}
	if code, _, _ := c.run(t, "import", filepath.Join(dir, "missing.csv")); code != exitUsage {
		t.Fatalf("missing file: exit %d", code)
	}
}

// TestMailCommand: invitectl mail shows the outbox and reopens given-up
// emails.
func TestMailCommand(t *testing.T) {
	c := newCtl(t, "1")
	e := c.connect(t)
	ctx := context.Background()
	if err := e.store.CreateInvitation(ctx, invite.Invitation{Code: "beta", MaxUses: 10}); err != nil {
		t.Fatal(err)
	}
	var rs []invite.Reservation
	for i := 0; i < 3; i++ {
		em := fmt.Sprintf("m%d@example.com", i)
		rs = append(rs, invite.Reservation{Code: "beta", Canonical: em, Email: em, ReservedAt: time.Now()})
	}
	if _, err := e.store.Persist(ctx, rs); err != nil {
		t.Fatal(err)
	}
	if err := e.store.MailSent(ctx, "m0@example.com", 0, 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := e.store.MailFailed(ctx, "m1@example.com", 0, 0, "550 no such user", time.Time{}); err != nil {
		t.Fatal(err)
	}
	code, out, _ := c.run(t, "mail")
	if code != exitOK || !strings.Contains(out, "pending  1") || !strings.Contains(out, "sent     1") || !strings.Contains(out, "failed   1") {
		t.Fatalf("mail: %d %q", code, out)
	}
	if code, out, _ := c.run(t, "mail", "--json"); code != exitOK || strings.TrimSpace(out) != `{"failed":1,"pending":1,"sent":1}` {
		t.Fatalf("mail --json: %d %q", code, out)
	}
	if code, out, _ := c.run(t, "mail", "retry"); code != exitOK || !strings.Contains(out, "reopened 1") {
		t.Fatalf("mail retry: %d %q", code, out)
	}
	if code, out, _ := c.run(t, "mail", "--json"); code != exitOK || strings.TrimSpace(out) != `{"failed":0,"pending":2,"sent":1}` {
		t.Fatalf("after retry: %d %q", code, out)
	}
	if code, _, errOut := c.run(t, "mail", "resend"); code != exitUsage || !strings.Contains(errOut, "want nothing or retry") {
		t.Fatalf("mail resend: %d %q", code, errOut)
	}
}
