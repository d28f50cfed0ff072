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
	"strconv"
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

// HoldStore is the confirmation emails' outbox, on the holds
// (persist.Store).
type HoldStore interface {
	DueHoldMail(ctx context.Context, now time.Time, limit int) ([]persist.Hold, error)
	ClaimHoldMail(ctx context.Context, key string, round, attempt int, owner string, now time.Time, lease time.Duration) (bool, error)
	HoldMailSent(ctx context.Context, key string, round, attempt int, now time.Time) error
	HoldMailFailed(ctx context.Context, key string, round, attempt int, reason string, next time.Time) error
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
	// ConfirmLink returns the confirmation link of a hold; nil: the
	// confirmation emails are not sent (they wait as pending).
	ConfirmLink func(h persist.Hold) string
	Poll        time.Duration // between looks at the outbox when idle (default 1s)
	Batch       int           // due mails taken per look (default 100)
	Now         func() time.Time
	Logger      logrus.FieldLogger
	Metrics     *Metrics
}

// Mailer sends the outbox's mail: every registration's, and, with a
// HoldStore and Config.ConfirmLink, every hold's confirmation email. Run
// it on any number of replicas.
type Mailer struct {
	st   Store
	hst  HoldStore // nil: no confirmation emails
	send Sender
	// noLinkLogged: when the mailer last said it cannot make links.
	noLinkLogged time.Time
	cfg          Config
	log          logrus.FieldLogger
	m            *Metrics
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
	m := &Mailer{st: st, send: send, cfg: cfg, log: cfg.Logger.WithField("component", "mail"), m: cfg.Metrics}
	if hst, ok := st.(HoldStore); ok && cfg.ConfirmLink != nil {
		m.hst = hst
	}
	return m
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

// RunOnce takes one batch of due confirmation emails (they are urgent:
// the hold's deadline runs) and one of due registration emails, and tries
// each whose attempt it can claim; it returns how many it tried.
func (m *Mailer) RunOnce(ctx context.Context) (int, error) {
	tried := 0
	if m.hst != nil {
		n, err := m.runHolds(ctx)
		tried += n
		if err != nil {
			return tried, err
		}
	}
	due, err := m.st.DueMail(ctx, m.cfg.Now(), m.cfg.Batch)
	if err != nil {
		return tried, err
	}
	for _, reg := range due {
		if ctx.Err() != nil {
			break
		}
		attempt := reg.Mail.Attempts
		ok, err := m.claim(reg.Invitation, func() (bool, error) {
			return m.st.ClaimMail(ctx, reg.Canonical, reg.Mail.Round, attempt, m.cfg.Owner, m.cfg.Now(), m.cfg.Lease)
		})
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

// claim runs one claim of an attempt; ok is false when another mailer has
// it, or when its claims were abandoned too often (one stuck mail must not
// hold up the others behind it: skipped, logged).
func (m *Mailer) claim(code string, fn func() (bool, error)) (ok bool, err error) {
	ok, err = fn()
	if errors.Is(err, persist.ErrClaimsExhausted) {
		m.log.WithField("code", code).Error("mail attempt claimed and abandoned too often; skipped")
		return false, nil
	}
	return ok, err
}

// runHolds is RunOnce for the confirmation emails.
func (m *Mailer) runHolds(ctx context.Context) (int, error) {
	due, err := m.hst.DueHoldMail(ctx, m.cfg.Now(), m.cfg.Batch)
	if err != nil {
		return 0, err
	}
	tried := 0
	for _, h := range due {
		if ctx.Err() != nil {
			break
		}
		if m.cfg.ConfirmLink(h) == "" {
			// No link can be made (no INVITEGATE_PUBLIC_URL): the email
			// waits, its attempts untouched.
			if now := m.cfg.Now(); now.Sub(m.noLinkLogged) > time.Minute {
				m.noLinkLogged = now
				m.log.WithField("code", h.Invitation).Error("confirmation emails wait: set INVITEGATE_PUBLIC_URL, the start of their links")
			}
			continue
		}
		attempt := h.Mail.Attempts
		ok, err := m.claim(h.Invitation, func() (bool, error) {
			return m.hst.ClaimHoldMail(ctx, h.Key, h.Mail.Round, attempt, m.cfg.Owner, m.cfg.Now(), m.cfg.Lease)
		})
		if err != nil {
			return tried, err
		}
		if !ok {
			continue
		}
		tried++
		msg, err := m.confirmMessage(h)
		m.deliver(ctx, outbox{
			code: h.Invitation, email: h.Email, canonical: h.Canonical, attempt: attempt, msg: msg, renderErr: err,
			sent: func(ctx context.Context, now time.Time) error {
				return m.hst.HoldMailSent(ctx, h.Key, h.Mail.Round, attempt, now)
			},
			failed: func(ctx context.Context, reason string, next time.Time) error {
				return m.hst.HoldMailFailed(ctx, h.Key, h.Mail.Round, attempt, reason, next)
			},
		})
	}
	return tried, nil
}

// outbox is one claimed attempt: its message, and how to record its
// outcome.
type outbox struct {
	code, email, canonical string
	attempt                int
	msg                    Message
	renderErr              error
	sent                   func(ctx context.Context, now time.Time) error
	failed                 func(ctx context.Context, reason string, next time.Time) error
}

// attempt sends one claimed attempt of reg's email and records its outcome.
func (m *Mailer) attempt(ctx context.Context, reg persist.Registration, attempt int) {
	msg, err := m.message(reg)
	m.deliver(ctx, outbox{
		code: reg.Invitation, email: reg.Email, canonical: reg.Canonical, attempt: attempt, msg: msg, renderErr: err,
		sent: func(ctx context.Context, now time.Time) error {
			return m.st.MailSent(ctx, reg.Canonical, reg.Mail.Round, attempt, now)
		},
		failed: func(ctx context.Context, reason string, next time.Time) error {
			return m.st.MailFailed(ctx, reg.Canonical, reg.Mail.Round, attempt, reason, next)
		},
	})
}

// deliver sends one claimed attempt and records its outcome.
func (m *Mailer) deliver(ctx context.Context, o outbox) {
	err := o.renderErr
	if err == nil {
		sctx, cancel := context.WithTimeout(ctx, m.cfg.SendTimeout)
		err = m.send.Send(sctx, o.msg)
		cancel()
	}
	attempt := o.attempt
	log := m.log.WithField("code", o.code).WithField("attempt", attempt+1)
	// The outcome is recorded even when ctx ends mid-send (a shutdown): a
	// message the server took must not be sent again.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err == nil {
		m.m.Sent.Inc()
		if err := o.sent(rctx, m.cfg.Now()); errors.Is(err, persist.ErrMailOutcomeLate) {
			log.Warn("mail sent after its claim's lease ran out; another mailer may have sent it too")
		} else if err != nil {
			log.WithError(err).Error("mail sent but not recorded; it may be sent again after the claim's lease")
		}
		return
	}
	m.m.Failures.Inc()
	// SMTP replies often quote the recipient; logs never carry it.
	err = scrubbed{err, strings.NewReplacer(o.email, email.Mask(o.email), o.canonical, email.Mask(o.canonical)).Replace(err.Error())}
	var next time.Time
	if attempt+1 < m.cfg.MaxAttempts && !IsPermanent(err) {
		next = m.cfg.Now().Add(m.backoff(attempt + 1))
		log.WithError(err).Warn("mail not sent; will retry")
	} else {
		m.m.GaveUp.Inc()
		log.WithError(err).Error("mail not sent; giving up")
	}
	if err := o.failed(rctx, truncate(err.Error(), 300), next); err != nil && !errors.Is(err, persist.ErrMailOutcomeLate) {
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
	textTmpl        = template.Must(template.ParseFS(templates, "templates/instructions.txt"))
	htmlTmpl        = htmltemplate.Must(htmltemplate.ParseFS(templates, "templates/instructions.html"))
	confirmTextTmpl = template.Must(template.ParseFS(templates, "templates/confirm.txt"))
	confirmHTMLTmpl = htmltemplate.Must(htmltemplate.ParseFS(templates, "templates/confirm.html"))
)

type confirmData struct{ Game, Code, Email, Deadline, Link string }

// confirmMessage renders h's confirmation email. The deadline is written
// in UTC (the email cannot know the reader's time zone; the landing page
// shows it in theirs). Each round (a resend) has its own Message-ID.
func (m *Mailer) confirmMessage(h persist.Hold) (Message, error) {
	d := confirmData{
		Game: m.cfg.Game, Code: h.Invitation, Email: h.Email,
		Deadline: h.Deadline.UTC().Format("Monday 2 January 2006, 15:04 MST"), Link: m.cfg.ConfirmLink(h),
	}
	var text, html bytes.Buffer
	if err := confirmTextTmpl.Execute(&text, d); err != nil {
		return Message{}, err
	}
	if err := confirmHTMLTmpl.Execute(&html, d); err != nil {
		return Message{}, err
	}
	sum := sha256.Sum256([]byte(h.Key + "#" + strconv.Itoa(h.Mail.Round)))
	return Message{
		To:        h.Email,
		Subject:   "Confirm your email to keep your place in the " + m.cfg.Game + " closed beta",
		Text:      text.String(),
		HTML:      html.String(),
		MessageID: "confirm-" + hex.EncodeToString(sum[:12]) + "@" + m.cfg.Domain,
	}, nil
}

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
