package http

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"html/template"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gin-contrib/cors"
	"github.com/gin-gonic/gin"
	"golang.org/x/sync/singleflight"

	"github.com/invitegate/invitegate/internal/invite"
)

// The landing page: plain HTML, CSS and JavaScript embedded in the binary,
// no build step. GET /invitations/{code} serves it to browsers (by Accept)
// and the code's status as JSON to everyone else.

//go:embed web
var web embed.FS

var (
	pages      = template.Must(template.ParseFS(web, "web/*.html"))
	landingCSS = mustRead("web/landing.css")
	landingJS  = mustRead("web/landing.js")
)

func mustRead(name string) []byte {
	b, err := web.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return b
}

// StatusFunc reports whether a code takes signups (workflow.Signups.Status
// and persist.MongoReserver.Status).
type StatusFunc func(ctx context.Context, code string) (invite.Status, error)

// pageHeaders keep the page to its own scripts and styles and out of
// frames; nothing inline is allowed.
var pageHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
	"X-Content-Type-Options":  "nosniff",
	"Referrer-Policy":         "no-referrer",
	"X-Frame-Options":         "DENY",
}

// closedText is what the page says instead of the form for a code that
// takes no signups.
var closedText = map[invite.Status]string{
	invite.StatusFull:     "Sorry, this invitation is full.",
	invite.StatusDisabled: "This invitation is no longer accepted.",
	invite.StatusExpired:  "This invitation has expired.",
}

type pageData struct {
	Game, Code, State, Closed string
}

// statusTTL is how long one replica reuses a code's status for the page:
// during a spike every visitor loads the page, and "full" may show up to
// this much later than the API answers it.
const statusTTL = time.Second

// statusCache remembers codes' statuses (and that a code does not exist)
// for statusTTL; concurrent misses for one code share one lookup.
type statusCache struct {
	fn      StatusFunc
	timeout time.Duration
	now     func() time.Time
	group   singleflight.Group
	mu      sync.Mutex
	m       map[string]cachedStatus
}

type cachedStatus struct {
	st      invite.Status
	unknown bool // no such code
	until   time.Time
}

// maxCachedStatuses bounds the cache; it starts over when full.
const maxCachedStatuses = 4096

func (sc *statusCache) get(ctx context.Context, code string) (invite.Status, error) {
	now := sc.now()
	sc.mu.Lock()
	e, ok := sc.m[code]
	sc.mu.Unlock()
	if ok && now.Before(e.until) {
		if e.unknown {
			return "", invite.ErrUnknownCode
		}
		return e.st, nil
	}
	ch := sc.group.DoChan(code, func() (any, error) {
		// Shared by every waiting request: detached from the first one's
		// cancellation, bounded by its own timeout.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sc.timeout)
		defer cancel()
		st, err := sc.fn(lctx, code)
		// Unknown codes are remembered too, so a flood of made-up codes
		// costs one lookup per code per second, like the API's.
		if unknown := errors.Is(err, invite.ErrUnknownCode); err == nil || unknown {
			sc.mu.Lock()
			if sc.m == nil || len(sc.m) >= maxCachedStatuses {
				sc.m = make(map[string]cachedStatus)
			}
			sc.m[code] = cachedStatus{st: st, unknown: unknown, until: sc.now().Add(statusTTL)}
			sc.mu.Unlock()
		}
		return st, err
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return "", res.Err
		}
		return res.Val.(invite.Status), nil
	case <-ctx.Done():
		return "", invite.Unavailable(ctx.Err())
	}
}

// wantsHTML reports whether the client asked for a page: browsers send
// text/html in Accept; API clients (curl's */*, fetch, no Accept) get JSON.
// Link-preview crawlers of the networks the links are posted on get the
// page too, with its Open Graph tags, although most send only */*.
// NOTE: a substring test, not content negotiation: "text/html;q=0" still
// gets the page. Every browser and API client we know is answered right.
func wantsHTML(c *gin.Context) bool {
	return strings.Contains(c.GetHeader("Accept"), "text/html") || isPreviewBot(c.GetHeader("User-Agent"))
}

// previewBots are User-Agent fragments of link-preview crawlers.
var previewBots = []string{"facebookexternalhit", "facebookcatalog", "twitterbot", "slackbot", "discordbot", "telegrambot", "whatsapp", "linkedinbot", "redditbot", "mastodon", "skypeuripreview", "embedly", "pinterest"}

func isPreviewBot(ua string) bool {
	ua = strings.ToLower(ua)
	for _, b := range previewBots {
		if strings.Contains(ua, b) {
			return true
		}
	}
	return false
}

// page serves GET /invitations/{code}.
func (a *API) page(c *gin.Context) {
	start := a.cfg.Now()
	code := c.Param("code")
	ctx, cancel := context.WithTimeout(c.Request.Context(), a.cfg.Timeout)
	defer cancel()
	st, err := a.statuses.get(ctx, code)
	if !wantsHTML(c) {
		if err != nil {
			a.fail(c, "page", start, err)
			return
		}
		c.Header("Cache-Control", "no-store")
		c.Writer.Header().Add("Vary", "Accept")
		c.JSON(http.StatusOK, gin.H{"invitation": code, "status": st})
		a.m.observe("page", http.StatusOK, "status_"+string(st), a.cfg.Now().Sub(start))
		return
	}
	data := pageData{Game: a.cfg.GameName, Code: code}
	name, status, outcome := "landing.html", http.StatusOK, "page_"+string(st)
	switch {
	case errors.Is(err, invite.ErrUnknownCode):
		name, status, outcome = "notfound.html", http.StatusNotFound, "page_unknown"
		if !invite.ValidCode(code) {
			data.Code = "" // not echoed: it cannot be anyone's code
		}
	case err != nil:
		// The form still works; its answer will say what is wrong.
		outcome = "page_status_unavailable"
	default:
		data.State, data.Closed = string(st), closedText[st]
	}
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, data); err != nil {
		a.fail(c, "page", start, err)
		return
	}
	for k, v := range pageHeaders {
		c.Header(k, v)
	}
	c.Header("Cache-Control", "no-cache")
	c.Writer.Header().Add("Vary", "Accept") // next to CORS' Vary: Origin
	c.Data(status, "text/html; charset=utf-8", buf.Bytes())
	a.m.observe("page", status, outcome, a.cfg.Now().Sub(start))
}

// asset serves an embedded file; browsers may keep it for five minutes.
func asset(contentType string, body []byte) gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Header("Cache-Control", "public, max-age=300")
		c.Header("X-Content-Type-Options", "nosniff")
		c.Data(http.StatusOK, contentType, body)
	}
}

// corsMiddleware lets landing pages on the listed origins call the API
// from the browser: preflights are answered 204 for them (POST with
// Content-Type; Retry-After readable; cached 10 minutes) and refused 403
// for any other origin, as are actual requests from other origins.
// Same-origin requests (the built-in page) need no entry.
func corsMiddleware(origins []string) gin.HandlerFunc {
	return cors.New(cors.Config{
		AllowOrigins:  origins,
		AllowMethods:  []string{http.MethodGet, http.MethodPost},
		AllowHeaders:  []string{"Content-Type", "Accept"},
		ExposeHeaders: []string{"Retry-After"},
		MaxAge:        10 * time.Minute,
	})
}
