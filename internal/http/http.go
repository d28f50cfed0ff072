// Package http owns invitegate's public HTTP API: the gin router, request
// decoding, and the one table that maps domain errors to HTTP statuses and
// RFC 9457 problem documents.
package http

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/sirupsen/logrus"

	"github.com/invitegate/invitegate/internal/confirm"
	"github.com/invitegate/invitegate/internal/defaults"
	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/logs"
)

func init() {
	// Debug mode prints every route to stdout; the service logs through logrus.
	gin.SetMode(gin.ReleaseMode)
}

// Reserver takes a seat of an invitation for an email; implemented by
// every invite.Reserver.
type Reserver interface {
	Reserve(ctx context.Context, code string, a email.Address) (invite.Result, error)
}

// Confirmer turns a hold into a registration: invite.Created the first
// time, invite.Existing on a repeat, invite.ErrHoldExpired once the hold
// is no longer live (workflow.Signups.Confirm, workflow.MongoAck.Confirm).
type Confirmer interface {
	Confirm(ctx context.Context, h confirm.Hold) (invite.Result, error)
}

// Limiter decides whether one client may make one more signup attempt; it
// returns how long the client should wait when not. An error lets the
// request through: the limiter guards against abuse, it is not a
// dependency a signup needs.
type Limiter interface {
	Allow(ctx context.Context, client string) (ok bool, retryAfter time.Duration, err error)
}

// Config tunes the API. Zero values take the defaults noted.
type Config struct {
	Email email.Options
	// MaxBody is the largest request body accepted (default 4 KiB); a
	// signup is one short JSON object.
	MaxBody int64
	// Timeout bounds the work for one request, Redis and MongoDB calls
	// included (default 3s); past it the answer is 503.
	Timeout time.Duration
	// RetryAfter is the Retry-After sent with 503 answers (default 1s).
	RetryAfter time.Duration
	// MaxInFlight bounds the signups being worked on at once; past it the
	// answer is an immediate 503, so latency cannot grow without bound
	// under a flood (0: no bound).
	MaxInFlight int
	// Limiter, when set, limits signup attempts per client.
	Limiter Limiter
	// TrustedProxies are the peers whose ClientIPHeader is believed; the
	// client of anyone else is its own address. Empty: trust no one.
	TrustedProxies []netip.Prefix
	// ClientIPHeader carries the client's address through trusted proxies
	// (default X-Forwarded-For).
	ClientIPHeader string
	// BlockedDomain reports whether an email domain (lowercase, IDN in
	// punycode) is refused, e.g. a disposable-mail provider (nil: none).
	BlockedDomain func(domain string) bool
	// HideEmailTaken answers an email that already used another invitation
	// like a repeat on this one (200), so that the answer does not tell
	// which invitation an address used.
	HideEmailTaken bool
	// LandingPage serves the built-in landing page at GET
	// /invitations/{code} (with Status; see landing.go) and the page
	// confirmation emails link to at GET /invitations/{code}/confirm
	// (confirm_page.go).
	LandingPage bool
	// GameName is the title of the landing page.
	GameName string
	// Status tells the landing page whether a code takes signups.
	Status StatusFunc
	// Confirmer confirms holds (POST /invitations/{code}/confirm) with
	// the tokens Tokens opens; without both that endpoint answers 404.
	Confirmer Confirmer
	Tokens    *confirm.Sealer
	// Resend, when set, is called (in the background) when an email whose
	// hold lives signs up again: the confirmation email goes out again, at
	// most once a minute (the callee decides).
	Resend func(ctx context.Context, canonical, code, holdID string)
	// CORSOrigins may call the API from a browser (e.g.
	// "https://our-super-game.io"); empty: same origin only.
	CORSOrigins []string
	Logger      logrus.FieldLogger
	Metrics     *Metrics
	// Now is the clock (default time.Now): request latencies, the
	// sampling of failure logs and the expiry of the landing page's
	// status cache read it, so tests can freeze or step it.
	Now func() time.Time
}

// API serves the public endpoints.
type API struct {
	res      Reserver
	cfg      Config
	log      logrus.FieldLogger
	m        *Metrics
	debug    bool          // per-request lines cost nothing unless enabled
	inFlight chan struct{} // a slot per signup being worked on; nil: unbounded
	statuses *statusCache  // the landing page's; nil without it
	failLog  sampler
}

// sampler lets one event a second through and counts the rest.
type sampler struct {
	last       atomic.Int64 // unix nanoseconds of the last event let through
	suppressed atomic.Int64
}

// allow reports whether an event at now may be logged, and how many were
// suppressed since the last one that was.
func (s *sampler) allow(now time.Time) (int64, bool) {
	last := s.last.Load()
	if now.UnixNano()-last < int64(time.Second) || !s.last.CompareAndSwap(last, now.UnixNano()) {
		s.suppressed.Add(1)
		return 0, false
	}
	return s.suppressed.Swap(0), true
}

// New returns the public HTTP handler.
func New(res Reserver, cfg Config) http.Handler {
	defaults.Positive(&cfg.MaxBody, 4<<10)
	defaults.Positive(&cfg.Timeout, 3*time.Second)
	defaults.Positive(&cfg.RetryAfter, time.Second)
	cfg.Logger = logs.OrQuiet(cfg.Logger)
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	cfg.ClientIPHeader = cmp.Or(cfg.ClientIPHeader, "X-Forwarded-For")
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &API{res: res, cfg: cfg, log: cfg.Logger.WithField("component", "http"), m: cfg.Metrics, debug: debugEnabled(cfg.Logger)}
	if cfg.MaxInFlight > 0 {
		a.inFlight = make(chan struct{}, cfg.MaxInFlight)
	}

	r := gin.New()
	// Odd paths get a 4xx, never a redirect: a POST that is redirected
	// loses its body in many clients.
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleMethodNotAllowed = true
	r.ContextWithFallback = true
	// gin trusts every proxy unless told otherwise: a client could then
	// pick its own address for the rate limiter.
	proxies := make([]string, len(cfg.TrustedProxies))
	for i, p := range cfg.TrustedProxies {
		proxies[i] = p.String()
	}
	_ = r.SetTrustedProxies(proxies) // prefixes already parsed: cannot fail
	r.ForwardedByClientIP = len(proxies) > 0
	r.RemoteIPHeaders = []string{cfg.ClientIPHeader}
	r.Use(gin.CustomRecoveryWithWriter(io.Discard, a.recovered))
	if len(cfg.CORSOrigins) > 0 {
		r.Use(corsMiddleware(cfg.CORSOrigins))
	}
	r.POST("/invitations/:code", a.limit, a.register)
	r.POST("/invitations/:code/confirm", a.limit, a.confirm)
	if cfg.LandingPage && cfg.Status != nil {
		a.statuses = &statusCache{fn: cfg.Status, timeout: cfg.Timeout, now: cfg.Now}
		r.GET("/invitations/:code", a.page)
		r.HEAD("/invitations/:code", a.page) // link checkers and some crawlers
		r.GET("/invitations/:code/confirm", a.confirmPage)
		r.HEAD("/invitations/:code/confirm", a.confirmPage)
		r.GET("/assets/landing.css", asset("text/css; charset=utf-8", landingCSS))
		r.GET("/assets/landing.js", asset("text/javascript; charset=utf-8", landingJS))
		r.GET("/assets/confirm.js", asset("text/javascript; charset=utf-8", confirmJS))
	}
	r.NoRoute(func(c *gin.Context) { a.fail(c, "", a.cfg.Now(), errNotFound) })
	r.NoMethod(func(c *gin.Context) { a.fail(c, "", a.cfg.Now(), errMethod) })
	return r
}

// registration is the success body.
type registration struct {
	Invitation string `json:"invitation"`
	Email      string `json:"email"`
	Status     string `json:"status"`
	// ExpiresAt is a hold's deadline (202 pending_confirmation).
	ExpiresAt string `json:"expires_at,omitempty"`
}

const (
	route        = "/invitations/{code}"
	confirmRoute = "/invitations/{code}/confirm"
)

// acquire takes an in-flight slot for the Redis and MongoDB work of one
// signup, or reports false at once when MaxInFlight are taken: past
// capacity a fast "try again" beats a queue that grows. Reading the body
// happens before, so a slow client never holds a slot.
func (a *API) acquire() (release func(), ok bool) {
	if a.inFlight == nil {
		return func() {}, true
	}
	select {
	case a.inFlight <- struct{}{}:
		return func() { <-a.inFlight }, true
	default:
		return nil, false
	}
}

// clientKey is the rate-limit key of a client address: the address for
// IPv4, its /64 for IPv6, since one subscriber usually holds a whole /64
// and could otherwise take a fresh key per request.
func clientKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	if a = a.Unmap(); a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// limit applies the per-client rate limit, keyed by the client's address
// (from ClientIPHeader only when the peer is a trusted proxy).
func (a *API) limit(c *gin.Context) {
	if a.cfg.Limiter == nil {
		return
	}
	ok, wait, err := a.cfg.Limiter.Allow(c.Request.Context(), clientKey(c.ClientIP()))
	if err != nil {
		a.m.LimiterErrors.Inc()
		return
	}
	if !ok {
		c.Header("Retry-After", strconv.Itoa(int(max((wait+time.Second-1)/time.Second, 1))))
		r := route
		if strings.HasSuffix(c.FullPath(), "/confirm") {
			r = confirmRoute
		}
		a.fail(c, r, a.cfg.Now(), errRateLimited)
	}
}

func (a *API) register(c *gin.Context) {
	start := a.cfg.Now()
	code, raw, err := a.request(c, "email", errMissingEmail, errMalformed)
	if err != nil {
		a.fail(c, route, start, err)
		return
	}
	addr, err := email.Parse(raw, a.cfg.Email)
	if err != nil {
		a.fail(c, route, start, err)
		return
	}
	if a.cfg.BlockedDomain != nil && a.cfg.BlockedDomain(addr.Normalized[strings.LastIndexByte(addr.Normalized, '@')+1:]) {
		a.fail(c, route, start, errBlockedDomain)
		return
	}
	release, ok := a.acquire()
	if !ok {
		a.fail(c, route, start, errOverloaded)
		return
	}
	defer release()
	ctx, cancel := context.WithTimeout(c.Request.Context(), a.cfg.Timeout)
	defer cancel()
	res, err := a.res.Reserve(ctx, code, addr)
	hidden := a.cfg.HideEmailTaken && errors.Is(err, invite.ErrEmailTaken)
	if err != nil && !hidden {
		a.fail(c, route, start, err)
		return
	}
	status, body, outcome := http.StatusCreated, registration{Invitation: code, Email: addr.Normalized, Status: "registered"}, "created"
	switch {
	case hidden:
		status, body.Status, outcome = http.StatusOK, "already_registered", "email_taken_hidden"
	case res.Outcome == invite.Existing:
		status, body.Status, outcome = http.StatusOK, "already_registered", "existing"
	case res.Outcome == invite.Held, res.Outcome == invite.HeldAgain:
		status, body.Status, outcome = http.StatusAccepted, "pending_confirmation", "held"
		body.ExpiresAt = res.Deadline.UTC().Format(time.RFC3339)
		if res.Outcome == invite.HeldAgain {
			outcome = "held_again"
			if a.cfg.Resend != nil {
				go a.cfg.Resend(context.WithoutCancel(ctx), addr.Canonical, code, res.ID)
			}
		}
	}
	a.m.observe(route, status, outcome, a.cfg.Now().Sub(start))
	if a.debug {
		a.log.WithFields(logrus.Fields{"code": code, "email": email.Mask(addr.Normalized), "status": status}).Debug("signup")
	}
	c.JSON(status, body)
}

// isJSON accepts application/json with an optional UTF-8 charset.
func isJSON(ct string) bool {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return false
	}
	cs, ok := params["charset"]
	return !ok || strings.EqualFold(cs, "utf-8")
}

// request checks a POST on /invitations/{code}...: a possible code, a JSON
// body, and returns the code and the body's one member name (decode);
// malformed replaces errMalformed, so that its problem names the member.
func (a *API) request(c *gin.Context, name string, missing, malformed error) (code, value string, err error) {
	code = c.Param("code")
	if !invite.ValidCode(code) {
		return "", "", invite.ErrUnknownCode
	}
	if !isJSON(c.GetHeader("Content-Type")) {
		return "", "", errMediaType
	}
	value, err = a.decode(c, name, missing)
	if errors.Is(err, errMalformed) {
		err = malformed
	}
	return code, value, err
}

// decode reads the body, at most MaxBody bytes, and returns its member
// name (see decodeMember).
func (a *API) decode(c *gin.Context, name string, missing error) (string, error) {
	if c.Request.ContentLength > a.cfg.MaxBody {
		return "", errTooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, a.cfg.MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return "", errTooLarge
		}
		return "", errMalformed
	}
	return decodeMember(body, name, missing)
}

func decodeEmail(body []byte) (string, error) { return decodeMember(body, "email", errMissingEmail) }

// decodeMember returns the string member name of body, which must be
// exactly one JSON object whose only member is name (matched
// case-insensitively, so "Email" works) holding a string; duplicate
// members, other members, invalid UTF-8 and trailing data are rejected
// rather than guessed at, and a missing member is missing.
func decodeMember(body []byte, name string, missing error) (string, error) {
	if !utf8.Valid(body) {
		return "", errMalformed
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", errMalformed
	}
	var value string
	seen := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", errMalformed
		}
		key, _ := tok.(string)
		if !strings.EqualFold(key, name) || seen {
			return "", errMalformed
		}
		seen = true
		tok, err = dec.Token()
		if err != nil {
			return "", errMalformed
		}
		v, ok := tok.(string)
		if !ok {
			return "", errMalformed
		}
		value = v
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return "", errMalformed
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", errMalformed
	}
	if !seen {
		return "", missing
	}
	return value, nil
}

// confirm serves POST /invitations/{code}/confirm {"token": "..."}: the
// hold the token names becomes a registration (201), or already is (200);
// 410 once the hold is no longer live, 404 for a token that is not valid
// for this code.
func (a *API) confirm(c *gin.Context) {
	start := a.cfg.Now()
	code, token, err := a.request(c, "token", errMissingToken, errMalformedToken)
	if err != nil {
		a.fail(c, confirmRoute, start, err)
		return
	}
	if a.cfg.Tokens == nil || a.cfg.Confirmer == nil {
		a.fail(c, confirmRoute, start, errInvalidToken)
		return
	}
	h, err := a.cfg.Tokens.Open(token)
	if err != nil || h.Code != code {
		a.fail(c, confirmRoute, start, errInvalidToken)
		return
	}
	release, ok := a.acquire()
	if !ok {
		a.fail(c, confirmRoute, start, errOverloaded)
		return
	}
	defer release()
	ctx, cancel := context.WithTimeout(c.Request.Context(), a.cfg.Timeout)
	defer cancel()
	res, err := a.cfg.Confirmer.Confirm(ctx, h)
	if err != nil {
		a.fail(c, confirmRoute, start, err)
		return
	}
	status, body, outcome := http.StatusCreated, registration{Invitation: code, Email: h.Email, Status: "registered"}, "confirmed"
	if res.Outcome == invite.Existing {
		status, body.Status, outcome = http.StatusOK, "already_registered", "already_confirmed"
	}
	a.m.observe(confirmRoute, status, outcome, a.cfg.Now().Sub(start))
	if a.debug {
		a.log.WithFields(logrus.Fields{"code": code, "email": email.Mask(h.Email), "status": status}).Debug("confirmation")
	}
	c.JSON(status, body)
}

// problem is an RFC 9457 problem document.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// ProblemBase prefixes every problem type; the suffixes are stable API.
const ProblemBase = "https://invitegate.dev/problems/"

var (
	errNotFound     = errors.New("no such resource")
	errMethod       = errors.New("method not allowed")
	errMediaType    = errors.New("unsupported media type")
	errTooLarge     = errors.New("body too large")
	errMalformed    = errors.New("malformed body")
	errMissingEmail = errors.New("missing email")
	errMissingToken = errors.New("missing token")
	// errMalformedToken is errMalformed on the confirm endpoint.
	errMalformedToken = errors.New("malformed confirmation body")
	// errInvalidToken: the token was not made by this service for this
	// code (tampered, another code's, made up).
	errInvalidToken = errors.New("invalid confirmation token")
	errOverloaded   = errors.New("overloaded")
	errRateLimited  = errors.New("rate limited")
	// errBlockedDomain: the address is valid but its domain is refused.
	errBlockedDomain = errors.New("email domain not accepted")
)

// failure is one row of the error table.
type failure struct {
	status  int
	slug    string // problem type suffix
	outcome string // metric label
	title   string
	detail  string
}

// failures maps every error the API answers to its status and problem; an
// error not in it is a 500, logged once.
var failures = []struct {
	err error
	f   failure
}{
	{invite.ErrUnknownCode, failure{404, "unknown-invitation", "unknown_code", "Unknown invitation", "There is no invitation with this code."}},
	{errNotFound, failure{404, "not-found", "not_found", "Not found", "There is nothing at this address."}},
	{errMethod, failure{405, "method-not-allowed", "method_not_allowed", "Method not allowed", "Use POST with a JSON body."}},
	{email.ErrInvalid, failure{400, "invalid-email", "invalid_email", "Invalid email address", "Enter a plain email address such as name@example.com."}},
	{errMalformed, failure{400, "malformed-body", "malformed", "Malformed request body", `The body must be a JSON object with one string member "email".`}},
	{errBlockedDomain, failure{400, "email-domain-not-accepted", "blocked_domain", "Email domain not accepted", "Use a permanent email address, not a disposable one."}},
	{errMissingEmail, failure{400, "missing-email", "malformed", "Email is required", `The body must be a JSON object with one string member "email".`}},
	{errMalformedToken, failure{400, "malformed-body", "malformed", "Malformed request body", `The body must be a JSON object with one string member "token".`}},
	{errMissingToken, failure{400, "missing-token", "malformed", "Token is required", `The body must be a JSON object with one string member "token".`}},
	{errInvalidToken, failure{404, "invalid-confirmation", "invalid_token", "Invalid confirmation link", "This confirmation link is not valid for this invitation."}},
	{invite.ErrHoldExpired, failure{410, "confirmation-expired", "confirmation_expired", "Confirmation link expired", "The time to confirm this signup has passed and the place was given back. Sign up again on the invitation page."}},
	{errTooLarge, failure{413, "body-too-large", "too_large", "Request body too large", "The body is larger than a signup needs."}},
	{errMediaType, failure{415, "unsupported-media-type", "unsupported_media", "Unsupported media type", "Send Content-Type: application/json."}},
	{invite.ErrEmailTaken, failure{409, "email-already-used", "email_taken", "Email already used", "This email address has already used another invitation."}},
	{invite.ErrFull, failure{410, "invitation-full", "full", "Invitation is full", "This invitation has no places left."}},
	{invite.ErrDisabled, failure{410, "invitation-disabled", "disabled", "Invitation is disabled", "This invitation is no longer accepted."}},
	{invite.ErrExpired, failure{410, "invitation-expired", "expired", "Invitation has expired", "This invitation is no longer accepted."}},
	{errRateLimited, failure{429, "rate-limited", "rate_limited", "Too many attempts", "Too many signup attempts from your network. Try again after the time in Retry-After."}},
	{errOverloaded, failure{503, "overloaded", "shed", "Service busy", "Too many signups at once. Try again in a moment."}},
	{invite.ErrMisconfigured, failure{503, "unavailable", "misconfigured", "Service unavailable", "Try again later."}},
	{invite.ErrUnavailable, failure{503, "unavailable", "unavailable", "Service unavailable", "Try again in a moment."}},
	{context.DeadlineExceeded, failure{503, "unavailable", "unavailable", "Service unavailable", "Try again in a moment."}},
	{invite.ErrFrozen, failure{503, "invitation-reseeding", "frozen", "Invitation briefly unavailable", "This invitation is being updated. Try again in a moment."}},
}

var internalFailure = failure{500, "internal", "internal", "Internal error", "Something went wrong on our side. Try again later."}

func lookup(err error) (failure, bool) {
	for _, row := range failures {
		if errors.Is(err, row.err) {
			return row.f, true
		}
	}
	return internalFailure, false
}

// fail answers err as a problem document.
func (a *API) fail(c *gin.Context, route string, start time.Time, err error) {
	f, known := lookup(err)
	if !known {
		a.log.WithError(err).WithField("path", c.Request.URL.Path).Error("unexpected error")
	} else if f.status >= 500 && !errors.Is(err, errOverloaded) {
		// During an outage every request fails the same way: one line a
		// second, with how many were not logged, instead of a flood.
		if n, ok := a.failLog.allow(a.cfg.Now()); ok {
			a.log.WithError(err).WithField("path", c.Request.URL.Path).WithField("similar_since_last", n).Warn("request failed")
		}
	}
	if f.status == http.StatusServiceUnavailable {
		c.Header("Retry-After", strconv.Itoa(int(max(a.cfg.RetryAfter.Round(time.Second)/time.Second, 1))))
	}
	if f.status == http.StatusMethodNotAllowed {
		allow := http.MethodPost
		if a.statuses != nil {
			allow = "GET, HEAD, POST"
		}
		c.Header("Allow", allow)
	}
	if route == "" {
		route = "other"
	}
	a.m.observe(route, f.status, f.outcome, a.cfg.Now().Sub(start))
	writeProblem(c, f)
}

// problemBodies holds each failure's problem document, encoded once: the
// documents never vary, and a sold-out code answers every request of a
// spike with one of them.
var problemBodies = func() map[failure][]byte {
	m := make(map[failure][]byte, len(failures)+1)
	m[internalFailure] = encodeProblem(internalFailure)
	for _, row := range failures {
		m[row.f] = encodeProblem(row.f)
	}
	return m
}()

func encodeProblem(f failure) []byte {
	b, _ := json.Marshal(problem{Type: ProblemBase + f.slug, Title: f.title, Status: f.status, Detail: f.detail})
	return b
}

func writeProblem(c *gin.Context, f failure) {
	b, ok := problemBodies[f]
	if !ok {
		b = encodeProblem(f)
	}
	c.Header("Cache-Control", "no-store")
	c.Data(f.status, "application/problem+json", b)
	c.Abort()
}

func (a *API) recovered(c *gin.Context, v any) {
	a.log.WithField("panic", v).WithField("path", c.Request.URL.Path).Error("recovered from panic")
	if !c.Writer.Written() {
		writeProblem(c, internalFailure)
	}
}

func debugEnabled(l logrus.FieldLogger) bool {
	switch l := l.(type) {
	case *logrus.Logger:
		return l.IsLevelEnabled(logrus.DebugLevel)
	case *logrus.Entry:
		return l.Logger.IsLevelEnabled(logrus.DebugLevel)
	}
	return false
}
