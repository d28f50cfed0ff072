package mail_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	stdmail "net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/mail"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/testenv"
)

// outbox is a fresh database with registrations whose mail is pending.
func outbox(t *testing.T, n int) *persist.Store {
	t.Helper()
	ctx := context.Background()
	st := persist.NewStore(testenv.MongoDatabase(t), nil, nil)
	if err := st.EnsureSchema(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateInvitation(ctx, invite.Invitation{Code: "twitter-reg1", MaxUses: 1000}); err != nil {
		t.Fatal(err)
	}
	var rs []invite.Reservation
	for i := 0; i < n; i++ {
		em := fmt.Sprintf("player%d@example.com", i)
		rs = append(rs, invite.Reservation{Code: "twitter-reg1", Canonical: em, Email: em, ReservedAt: time.Now()})
	}
	if _, err := st.Persist(ctx, rs); err != nil {
		t.Fatal(err)
	}
	return st
}

func sender(t *testing.T, s *testenv.SMTPServer) *mail.SMTP {
	t.Helper()
	snd, err := mail.NewSMTP(mail.SMTPConfig{Addr: s.Addr, TLS: "none", From: "Starfall Beta <beta@starfall.example>"})
	if err != nil {
		t.Fatal(err)
	}
	return snd
}

// drain runs RunOnce until nothing is due (the clock is moved past every
// backoff), at most rounds times.
func drain(t *testing.T, m *mail.Mailer, rounds int) {
	t.Helper()
	for i := 0; i < rounds; i++ {
		n, err := m.RunOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
}

// TestMailContent: one registration gets one email with a plain-text part
// and an HTML alternative, both naming the game, the code and the address;
// the outbox records it sent.
func TestMailContent(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartSMTP(t)
	st := outbox(t, 1)
	m := mail.New(st, sender(t, srv), mail.Config{Game: "Starfall", Domain: "starfall.example"})
	drain(t, m, 3)

	got := srv.Messages()
	if len(got) != 1 {
		t.Fatalf("%d messages, want 1", len(got))
	}
	if got[0].To != "player0@example.com" || got[0].From != "beta@starfall.example" {
		t.Errorf("envelope %s → %s", got[0].From, got[0].To)
	}
	msg, err := stdmail.ReadMessage(strings.NewReader(string(got[0].Data)))
	if err != nil {
		t.Fatal(err)
	}
	if subj := msg.Header.Get("Subject"); !strings.Contains(subj, "Starfall") {
		t.Errorf("subject %q", subj)
	}
	if id := msg.Header.Get("Message-Id"); !strings.HasSuffix(id, "@starfall.example>") {
		t.Errorf("Message-ID %q", id)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/alternative" {
		t.Fatalf("Content-Type %q (%v), want multipart/alternative", msg.Header.Get("Content-Type"), err)
	}
	parts := map[string]string{}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		b, _ := io.ReadAll(p) // multipart decodes quoted-printable itself
		parts[ct] = string(b)
	}
	for _, ct := range []string{"text/plain", "text/html"} {
		body := parts[ct]
		for _, want := range []string{"Starfall", "twitter-reg1", "player0@example.com", "What happens next"} {
			if !strings.Contains(body, want) {
				t.Errorf("%s part lacks %q:\n%s", ct, want, body)
			}
		}
	}
	if !strings.Contains(parts["text/html"], "<ol>") {
		t.Errorf("HTML part is not HTML:\n%s", parts["text/html"])
	}
	counts, err := st.MailCounts(ctx)
	if err != nil || counts[persist.MailSent] != 1 || counts[persist.MailPending] != 0 {
		t.Fatalf("outbox %v (%v), want 1 sent", counts, err)
	}
}

// TestTwoMailersSendEachOnce: two mailers (two replicas) race over the same
// outbox; every registration gets exactly one email.
func TestTwoMailersSendEachOnce(t *testing.T) {
	const n = 150
	srv := testenv.StartSMTP(t)
	st := outbox(t, n)
	var wg sync.WaitGroup
	metrics := []*mail.Metrics{mail.NewMetrics(nil), mail.NewMetrics(nil)}
	for i := range metrics {
		m := mail.New(st, sender(t, srv), mail.Config{Owner: fmt.Sprintf("replica-%d", i), Batch: 40, Metrics: metrics[i]})
		wg.Add(1)
		go func() {
			defer wg.Done()
			drain(t, m, 50)
		}()
	}
	wg.Wait()
	t.Logf("replica-0 sent %v, replica-1 sent %v", testutil.ToFloat64(metrics[0].Sent), testutil.ToFloat64(metrics[1].Sent))
	per := map[string]int{}
	for _, r := range srv.Messages() {
		per[r.To]++
	}
	if len(per) != n {
		t.Errorf("%d recipients got mail, want %d", len(per), n)
	}
	for to, c := range per {
		if c != 1 {
			t.Errorf("%s got %d emails, want 1", to, c)
		}
	}
	counts, err := st.MailCounts(context.Background())
	if err != nil || counts[persist.MailSent] != n {
		t.Fatalf("outbox %v (%v), want %d sent", counts, err, n)
	}
}

// TestRetryAfterFailure: the SMTP server refuses the first two deliveries;
// the mail is retried after its backoff, not before, and then sent once.
func TestRetryAfterFailure(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartSMTP(t)
	srv.Fail.Store(2)
	st := outbox(t, 1)
	now := time.Now()
	metrics := mail.NewMetrics(nil)
	var logs testenv.Buffer
	logger := logrus.New()
	logger.SetOutput(&logs)
	m := mail.New(st, sender(t, srv), mail.Config{RetryBase: time.Minute, Now: func() time.Time { return now }, Metrics: metrics, Logger: logger})

	if _, err := m.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	reg := registration(t, st, "player0@example.com")
	if reg.Mail.State != persist.MailPending || reg.Mail.Attempts != 1 || !strings.Contains(reg.Mail.LastError, "451") {
		t.Fatalf("after a refused delivery: %+v", reg.Mail)
	}
	if strings.Contains(reg.Mail.LastError, "player0@example.com") {
		t.Errorf("the recorded error carries the address: %q", reg.Mail.LastError)
	}
	if l := logs.String(); !strings.Contains(l, "will retry") || strings.Contains(l, "player0@example.com") || !strings.Contains(l, "p***@example.com") {
		t.Errorf("log of the refused delivery (want it masked):\n%s", l)
	}
	// Not due yet.
	if n, _ := m.RunOnce(ctx); n != 0 {
		t.Fatalf("retried %d before the backoff", n)
	}
	now = now.Add(61 * time.Second)
	m.RunOnce(ctx) // second refusal; backoff doubles
	if n, _ := m.RunOnce(ctx); n != 0 {
		t.Fatalf("retried %d before the doubled backoff", n)
	}
	now = now.Add(121 * time.Second)
	drain(t, m, 3)
	if got := len(srv.Messages()); got != 1 {
		t.Fatalf("%d delivered, want 1", got)
	}
	reg = registration(t, st, "player0@example.com")
	if reg.Mail.State != persist.MailSent || reg.Mail.Attempts != 3 {
		t.Fatalf("after the third attempt: %+v", reg.Mail)
	}
	if f, s := testutil.ToFloat64(metrics.Failures), testutil.ToFloat64(metrics.Sent); f != 2 || s != 1 {
		t.Errorf("metrics: %v failures, %v sent; want 2, 1", f, s)
	}
}

// TestGiveUp: a mail that fails MaxAttempts times is given up (state
// failed, counted) and can be reopened by an operator.
func TestGiveUp(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartSMTP(t)
	srv.Fail.Store(-1)
	st := outbox(t, 1)
	now := time.Now()
	metrics := mail.NewMetrics(nil)
	m := mail.New(st, sender(t, srv), mail.Config{MaxAttempts: 3, RetryBase: time.Second, Now: func() time.Time { return now }, Metrics: metrics})
	for i := 0; i < 10; i++ {
		m.RunOnce(ctx)
		now = now.Add(time.Hour)
	}
	reg := registration(t, st, "player0@example.com")
	if reg.Mail.State != persist.MailFailed || reg.Mail.Attempts != 3 {
		t.Fatalf("after giving up: %+v", reg.Mail)
	}
	if g := testutil.ToFloat64(metrics.GaveUp); g != 1 {
		t.Errorf("gave-up metric %v, want 1", g)
	}
	counts, err := st.MailCounts(ctx)
	if err != nil || counts[persist.MailFailed] != 1 {
		t.Fatalf("outbox %v (%v), want 1 failed", counts, err)
	}
	// The operator fixes SMTP and reopens it.
	srv.Fail.Store(0)
	if n, err := st.RetryFailedMail(ctx, now); err != nil || n != 1 {
		t.Fatalf("reopened %d (%v), want 1", n, err)
	}
	drain(t, m, 3)
	if got := len(srv.Messages()); got != 1 {
		t.Fatalf("%d delivered after reopening, want 1", got)
	}
}

func registration(t *testing.T, st *persist.Store, canonical string) persist.Registration {
	t.Helper()
	reg, ok, err := st.Registration(context.Background(), canonical)
	if err != nil || !ok || reg.Mail == nil {
		t.Fatalf("registration %s: %+v %v %v", canonical, reg, ok, err)
	}
	return reg
}

// TestDeliveredDespiteAFailedGoodbye: the server takes the message, then
// the connection breaks before the client's RSET is answered. The message
// was delivered: it is recorded sent and not sent again.
func TestDeliveredDespiteAFailedGoodbye(t *testing.T) {
	srv := testenv.StartSMTP(t)
	srv.DropAfterData.Store(true)
	st := outbox(t, 1)
	now := time.Now()
	m := mail.New(st, sender(t, srv), mail.Config{RetryBase: time.Second, Now: func() time.Time { return now }})
	for i := 0; i < 4; i++ {
		m.RunOnce(context.Background())
		now = now.Add(time.Hour)
	}
	if got := len(srv.Messages()); got != 1 {
		t.Fatalf("%d copies delivered, want 1", got)
	}
	if reg := registration(t, st, "player0@example.com"); reg.Mail.State != persist.MailSent || reg.Mail.Attempts != 1 {
		t.Fatalf("outbox %+v, want sent after 1 attempt", reg.Mail)
	}
}

// TestDroppedConnectionIsRetried: a connection cut in the middle of the
// session (no SMTP reply at all) is a temporary failure: the email stays
// pending and the next attempt delivers it.
func TestDroppedConnectionIsRetried(t *testing.T) {
	srv := testenv.StartSMTP(t)
	srv.DropAtRcpt.Store(1)
	st := outbox(t, 1)
	now := time.Now()
	m := mail.New(st, sender(t, srv), mail.Config{RetryBase: time.Second, Now: func() time.Time { return now }})
	if _, err := m.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if reg := registration(t, st, "player0@example.com"); reg.Mail.State != persist.MailPending || reg.Mail.Attempts != 1 {
		t.Fatalf("after the cut: outbox %+v, want pending after 1 attempt", reg.Mail)
	}
	now = now.Add(time.Minute)
	if _, err := m.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if reg := registration(t, st, "player0@example.com"); reg.Mail.State != persist.MailSent || len(srv.Messages()) != 1 {
		t.Fatalf("outbox %+v, %d delivered; want sent once", reg.Mail, len(srv.Messages()))
	}
}

// TestPermanentRefusalGivesUpAtOnce: a 5xx reply (unknown mailbox) is not
// retried for hours.
func TestPermanentRefusalGivesUpAtOnce(t *testing.T) {
	srv := testenv.StartSMTP(t)
	srv.FailCode.Store(550)
	srv.Fail.Store(-1)
	st := outbox(t, 1)
	metrics := mail.NewMetrics(nil)
	m := mail.New(st, sender(t, srv), mail.Config{Metrics: metrics})
	if _, err := m.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	reg := registration(t, st, "player0@example.com")
	if reg.Mail.State != persist.MailFailed || reg.Mail.Attempts != 1 || !strings.Contains(reg.Mail.LastError, "550") {
		t.Fatalf("outbox %+v, want failed after 1 attempt with the 550", reg.Mail)
	}
	if g := testutil.ToFloat64(metrics.GaveUp); g != 1 {
		t.Errorf("gave-up metric %v, want 1", g)
	}
}
