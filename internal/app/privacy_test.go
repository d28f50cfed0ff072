package app_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/testenv"
)

// TestLogsAndMetricsNeverCarryEmails drives every outcome that logs
// (debug level, so each signup logs a line), including the reconciler's
// conflict path, and checks that no email appears in full in the logs or
// in /metrics, while its masked form does.
func TestLogsAndMetricsNeverCarryEmails(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, deployments[0])
	logs := &testenv.Buffer{}
	e.log = logrus.New()
	e.log.SetOutput(logs)
	e.log.SetLevel(logrus.DebugLevel)
	e.log.SetFormatter(&logrus.JSONFormatter{})
	e.create(t, "priv-a", 3)
	e.create(t, "priv-b", 5)
	m, _ := e.start(t)
	// Registered on priv-b in MongoDB only, after seeding: Redis admits it on priv-a and
	// the reconciler refuses it (the conflict path logs).
	if _, err := persist.NewStore(e.db, nil, nil).Persist(ctx, []invite.Reservation{{
		Code: "priv-b", Canonical: "conflict.person@example.com", Email: "conflict.person@example.com", ReservedAt: time.Now(),
	}}); err != nil {
		t.Fatal(err)
	}

	emails := []string{"first.person@example.com", "second.person@example.com", "conflict.person@example.com", "third.person@example.com"}
	for _, em := range emails {
		post(t, m.PublicAddr, "priv-a", em) // 201, 201, 201 (refused later by the reconciler), 410
	}
	post(t, m.PublicAddr, "priv-a", "first.person@example.com") // 200
	post(t, m.PublicAddr, "priv-b", "first.person@example.com") // 409
	post(t, m.PublicAddr, "priv-a", "not-an-email.person@")     // 400
	post(t, m.PublicAddr, "nope", "fourth.person@example.com")  // 404
	emails = append(emails, "fourth.person@example.com", "not-an-email.person@")

	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), "token given back") {
		if time.Now().After(deadline) {
			t.Fatalf("the reconciler never logged the conflict; logs:\n%s", logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := http.Get("http://" + m.AdminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()

	out := strings.ToLower(logs.String())
	for _, em := range emails {
		local := em[:strings.IndexByte(em, '@')]
		if strings.Contains(out, local) {
			t.Errorf("the logs carry %q:\n%s", local, out)
		}
		if strings.Contains(strings.ToLower(string(metrics)), local) {
			t.Errorf("/metrics carries %q", local)
		}
	}
	if !strings.Contains(out, `f***@example.com`) {
		t.Fatalf("no masked email in the debug logs; the test would prove nothing:\n%s", out)
	}
}
