// Package mail sends every registration its "further instructions" email,
// exactly once: it takes due mail from the outbox on the registrations in
// MongoDB (internal/persist, mail.go), claims one attempt at a time so that
// mailers on several replicas never send the same attempt twice, sends it
// over SMTP and records the outcome, retrying with backoff and giving up
// after MaxAttempts.
//
// Exactly once holds between mailers and across failed attempts (an
// attempt is retried only after its failure was recorded). It cannot hold
// in two cases: a mailer that dies after the SMTP server accepted a message
// and before the outcome was recorded (after the claim's lease another
// mailer sends it again), and a connection lost while waiting for the
// server's answer to the message's final "." (the server may have taken
// it; the attempt counts as failed and is retried, as MTAs do). Every
// message carries a Message-ID derived from the registration, so such a
// resend has the same ID.
package mail

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	htmltemplate "html/template"
	"strings"
	"text/template"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/sirupsen/logrus"

	"github.com/invitegate/invitegate/internal/defaults"
	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/logs"
	"github.com/invitegate/invitegate/internal/persist"
)

// Message is one email.
type Message struct {
	To        string
	Subject   string
	Text      string // text/plain part
	HTML      string // text/html alternative
	MessageID string // without angle brackets
}

// Sender delivers a message; SMTP in production (NewSMTP).
type Sender interface {
	Send(ctx context.Context, m Message) error
}

// Store is the outbox (persist.Store).
type Store interface {
	DueMail(ctx context.Context, now time.Time, limit int) ([]persist.Registration, error)
	ClaimMail(ctx context.Context, canonical string, round, attempt int, owner string, now time.Time, lease time.Duration) (bool, error)
	MailSent(ctx context.Context, canonical string, round, attempt int, now time.Time) error
	MailFailed(ctx context.Context, canonical string, round, attempt int, reason string, next time.Time) error
	MailCounts(ctx context.Context) (map[string]int, error)
}

// Config tunes a Mailer. Zero values take the defaults noted.
type Config struct {
	Game   string // the game's name in the email
	Domain string // Message-ID domain (default "invitegate.local")
	Owner  string // this mailer's name in claims (default "mailer")
	// MaxAttempts is how many times a mail is tried before it is given up
	// (default 8).
	MaxAttempts int
	// RetryBase is the wait after the first failed attempt; it doubles
	// with every further one, up to RetryMax (defaults 30s, 1h).
	RetryBase, RetryMax time.Duration
	// Lease is how long a claimed attempt is reserved for its mailer
	// (default 10m). It must exceed the longest delivery: go-mail bounds
	// each SMTP command by 30 s, and a delivery is about ten commands.
	Lease time.Duration
	// SendTimeout bounds one SMTP delivery (default 30s).
	SendTimeout time.Duration
	Poll        time.Duration // between looks at the outbox when idle (default 1s)
	Batch       int           // due mails taken per look (default 100)
	Now         func() time.Time
	Logger      logrus.FieldLogger
	Metrics     *Metrics
}

// Mailer sends the outbox's mail. Run it on any number of replicas.
type Mailer struct {
	st   Store
	send Sender
	cfg  Config
	log  logrus.FieldLogger
	m    *Metrics
}

// New returns a Mailer over st sending through send.
func New(st Store, send Sender, cfg Config) *Mailer {
	cfg.Game = cmp.Or(cfg.Game, "Our Super Game")
	cfg.Domain = cmp.Or(cfg.Domain, "invitegate.local")
	cfg.Owner = cmp.Or(cfg.Owner, "mailer")
	defaults.Positive(&cfg.MaxAttempts, 8)
	defaults.Positive(&cfg.RetryBase, 30*time.Second)
	defaults.Positive(&cfg.RetryMax, time.Hour)
	defaults.Positive(&cfg.Lease, 10*time.Minute)
	defaults.Positive(&cfg.SendTimeout, 30*time.Second)
	defaults.Positive(&cfg.Poll, time.Second)
	defaults.Positive(&cfg.Batch, 100)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Logger = logs.OrQuiet(cfg.Logger)
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	return &Mailer{st: st, send: send, cfg: cfg, log: cfg.Logger.WithField("component", "mail"), m: cfg.Metrics}
}

// Run sends due mail until ctx ends. A failing MongoDB is logged and tried
// again; it never stops the loop.
func (m *Mailer) Run(ctx context.Context) error {
	lastCount := time.Time{}
	for {
		n, err := m.RunOnce(ctx)
		if err != nil && ctx.Err() == nil {
			m.log.WithError(err).Warn("mail outbox unavailable; retrying")
		}
		if now := m.cfg.Now(); now.Sub(lastCount) >= 10*time.Second {
			lastCount = now
			if counts, err := m.st.MailCounts(ctx); err == nil {
				for st, c := range counts {
					m.m.State.WithLabelValues(st).Set(float64(c))
				}
			}
		}
		if n == 0 || err != nil {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(m.cfg.Poll):
			}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// RunOnce takes one batch of due mail and tries each whose attempt it can
// claim; it returns how many it tried.
func (m *Mailer) RunOnce(ctx context.Context) (int, error) {
	due, err := m.st.DueMail(ctx, m.cfg.Now(), m.cfg.Batch)
	if err != nil {
		return 0, err
	}
	tried := 0
	for _, reg := range due {
		if ctx.Err() != nil {
			break
		}
		attempt := reg.Mail.Attempts
		ok, err := m.st.ClaimMail(ctx, reg.Canonical, reg.Mail.Round, attempt, m.cfg.Owner, m.cfg.Now(), m.cfg.Lease)
		if errors.Is(err, persist.ErrClaimsExhausted) {
			// One stuck mail must not hold up the others behind it.
			m.log.WithField("code", reg.Invitation).Error("mail attempt claimed and abandoned too often; skipped")
			continue
		}
		if err != nil {
			return tried, err
		}
		if !ok {
			continue
		}
		tried++
		m.attempt(ctx, reg, attempt)
	}
	return tried, nil
}

// attempt sends one claimed attempt and records its outcome.
func (m *Mailer) attempt(ctx context.Context, reg persist.Registration, attempt int) {
	msg, err := m.message(reg)
	if err == nil {
		sctx, cancel := context.WithTimeout(ctx, m.cfg.SendTimeout)
		err = m.send.Send(sctx, msg)
		cancel()
	}
	log := m.log.WithField("code", reg.Invitation).WithField("attempt", attempt+1)
	// The outcome is recorded even when ctx ends mid-send (a shutdown): a
	// message the server took must not be sent again.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err == nil {
		m.m.Sent.Inc()
		if err := m.st.MailSent(rctx, reg.Canonical, reg.Mail.Round, attempt, m.cfg.Now()); errors.Is(err, persist.ErrMailOutcomeLate) {
			log.Warn("mail sent after its claim's lease ran out; another mailer may have sent it too")
		} else if err != nil {
			log.WithError(err).Error("mail sent but not recorded; it may be sent again after the claim's lease")
		}
		return
	}
	m.m.Failures.Inc()
	// SMTP replies often quote the recipient; logs never carry it.
	err = scrubbed{err, strings.NewReplacer(reg.Email, email.Mask(reg.Email), reg.Canonical, email.Mask(reg.Canonical)).Replace(err.Error())}
	var next time.Time
	if attempt+1 < m.cfg.MaxAttempts && !IsPermanent(err) {
		next = m.cfg.Now().Add(m.backoff(attempt + 1))
		log.WithError(err).Warn("mail not sent; will retry")
	} else {
		m.m.GaveUp.Inc()
		log.WithError(err).Error("mail not sent; giving up")
	}
	if err := m.st.MailFailed(rctx, reg.Canonical, reg.Mail.Round, attempt, truncate(err.Error(), 300), next); err != nil && !errors.Is(err, persist.ErrMailOutcomeLate) {
		log.WithError(err).Error("mail failure not recorded")
	}
}

// backoff is the wait after the n-th failed attempt (n ≥ 1): RetryBase,
// doubling, at most RetryMax, without jitter.
func (m *Mailer) backoff(n int) time.Duration {
	b := &backoff.ExponentialBackOff{InitialInterval: m.cfg.RetryBase, Multiplier: 2, MaxInterval: m.cfg.RetryMax}
	b.Reset()
	var d time.Duration
	for range max(n, 1) {
		d = b.NextBackOff()
	}
	return min(d, m.cfg.RetryMax) // the first wait is not capped by the library
}

//go:embed templates
var templates embed.FS

var (
	textTmpl = template.Must(template.ParseFS(templates, "templates/instructions.txt"))
	htmlTmpl = htmltemplate.Must(htmltemplate.ParseFS(templates, "templates/instructions.html"))
)

type mailData struct{ Game, Code, Email string }

// message renders reg's email.
func (m *Mailer) message(reg persist.Registration) (Message, error) {
	d := mailData{Game: m.cfg.Game, Code: reg.Invitation, Email: reg.Email}
	var text, html bytes.Buffer
	if err := textTmpl.Execute(&text, d); err != nil {
		return Message{}, err
	}
	if err := htmlTmpl.Execute(&html, d); err != nil {
		return Message{}, err
	}
	sum := sha256.Sum256([]byte(reg.Canonical))
	return Message{
		To:        reg.Email,
		Subject:   "You are in the " + m.cfg.Game + " closed beta: what happens next",
		Text:      text.String(),
		HTML:      html.String(),
		MessageID: "beta-" + hex.EncodeToString(sum[:12]) + "@" + m.cfg.Domain,
	}, nil
}

// scrubbed is an error whose text had addresses masked.
type scrubbed struct {
	err  error
	text string
}

func (s scrubbed) Error() string { return s.text }
func (s scrubbed) Unwrap() error { return s.err }

func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Metrics are the mailer's Prometheus collectors.
type Metrics struct {
	Sent     prometheus.Counter
	Failures prometheus.Counter
	GaveUp   prometheus.Counter
	State    *prometheus.GaugeVec
}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		Sent:     f.NewCounter(prometheus.CounterOpts{Name: "invitegate_mail_sent_total", Help: "Further-instructions emails the SMTP server accepted."}),
		Failures: f.NewCounter(prometheus.CounterOpts{Name: "invitegate_mail_attempts_failed_total", Help: "Delivery attempts that failed (each is retried until the last)."}),
		GaveUp:   f.NewCounter(prometheus.CounterOpts{Name: "invitegate_mail_gave_up_total", Help: "Emails given up after their last failed attempt."}),
		State:    f.NewGaugeVec(prometheus.GaugeOpts{Name: "invitegate_mail_registrations", Help: "Registrations by the state of their email (pending, sent, failed), counted every 10 s."}, []string{"state"}),
	}
}
