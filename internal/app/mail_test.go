package app_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/invitegate/invitegate/internal/app"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/testenv"
)

// TestSignupGetsItsEmail: signups over HTTP reach MongoDB through the
// reconciler and each gets one further-instructions email from the
// mailer running in serve; a repeat and a rejection get none.
func TestSignupGetsItsEmail(t *testing.T) {
	smtp := testenv.StartSMTP(t)
	e := newEnv(t, deployments[0])
	e.cfg.SMTPAddr, e.cfg.SMTPTLS = smtp.Addr, "none"
	e.cfg.MailFrom = "Starfall <beta@starfall.example>"
	e.create(t, "beta", 3)
	m, _ := e.start(t)
	post := func(em string) int {
		t.Helper()
		resp, err := http.Post("http://"+m.PublicAddr+"/invitations/beta", "application/json", strings.NewReader(`{"email":"`+em+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := 0; i < 3; i++ {
		if got := post(fmt.Sprintf("p%d@example.com", i)); got != http.StatusCreated {
			t.Fatalf("signup %d: %d", i, got)
		}
	}
	if got := post("p0@example.com"); got != http.StatusOK {
		t.Fatalf("repeat: %d", got)
	}
	if got := post("late@example.com"); got != http.StatusGone {
		t.Fatalf("full: %d", got)
	}
	// Once the outbox records every email as sent and none pending,
	// nothing is left to send: a duplicate would have arrived before that.
	deadline := time.Now().Add(20 * time.Second)
	var counts map[string]int
	for time.Now().Before(deadline) {
		var err error
		if counts, err = e.store.MailCounts(context.Background()); err == nil && counts[persist.MailSent] == 3 && counts[persist.MailPending] == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if counts[persist.MailSent] != 3 || counts[persist.MailPending] != 0 {
		t.Fatalf("outbox %v, want 3 sent", counts)
	}
	got := map[string]int{}
	for _, msg := range smtp.Messages() {
		got[msg.To]++
		if msg.From != "beta@starfall.example" {
			t.Errorf("from %q", msg.From)
		}
	}
	if len(got) != 3 || got["p0@example.com"] != 1 || got["p1@example.com"] != 1 || got["p2@example.com"] != 1 {
		t.Fatalf("emails by recipient: %v, want one each for p0..p2", got)
	}
}

// TestMailMode: `invitegate mail` runs the mailer alone (no Redis, no
// public listener) and refuses to start without an SMTP server.
func TestMailMode(t *testing.T) {
	e := newEnv(t, deployments[0])
	e.create(t, "beta", 3) // the health loop publishes seats per code
	m := &app.Main{Config: e.cfg, Mode: app.Mail, Logger: logrus.New()}
	m.Logger.SetOutput(io.Discard)
	if err := m.Open(context.Background()); err == nil || !strings.Contains(err.Error(), "INVITEGATE_SMTP_ADDR") {
		t.Fatalf("mail without SMTP: %v, want an error naming INVITEGATE_SMTP_ADDR", err)
	}
	m.Close()

	smtp := testenv.StartSMTP(t)
	e.cfg.SMTPAddr, e.cfg.SMTPTLS = smtp.Addr, "none"
	e.cfg.RedisAddrs = []string{"127.0.0.1:1"} // never dialled
	if _, err := e.store.Persist(context.Background(), []invite.Reservation{{Code: "beta", Canonical: "solo@example.com", Email: "solo@example.com", ReservedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	m, _ = e.startMode(t, app.Mail)
	if m.PublicAddr != "" {
		t.Errorf("mail mode listens publicly on %s", m.PublicAddr)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(smtp.Messages()) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := smtp.Messages(); len(got) != 1 || got[0].To != "solo@example.com" {
		t.Fatalf("delivered %v, want one email to solo@example.com", got)
	}
	// The health loop's first pass (pings, then seats) runs at start and
	// does all that later passes do; it has run once the gauge is set.
	for len(testenv.Metric(t, m.AdminAddr, "invitegate_dependency_up")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the health loop never published invitegate_dependency_up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if resp, err := http.Get("http://" + m.AdminAddr + "/readyz"); err != nil {
		t.Fatalf("mail mode died after a health tick: %v", err)
	} else {
		resp.Body.Close()
	}
}
