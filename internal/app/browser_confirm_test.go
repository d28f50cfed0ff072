package app_test

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/testenv"
)

// TestConfirmPageInBrowser drives a signup on a code with a confirmation
// window in headless chromium against a real service (Redis, MongoDB-wire
// server, SMTP capture): the landing page answers "Check your inbox …
// before HH:MM" (the hold's deadline in the visitor's time zone) and
// offers to resend the email; the link in the captured email opens the
// confirm page, which registers nothing by being opened (by a mail
// scanner's GET and HEAD, or by the browser); its one button, reached with
// Tab and pressed with Enter, registers the email, and MongoDB has it.
func TestConfirmPageInBrowser(t *testing.T) {
	bin := chromium(t)
	ctx := context.Background()
	smtp := testenv.StartSMTP(t)
	e := newEnv(t, deployments[0])
	e.cfg.GameName = "Starfall"
	// The link in the email must reach this service: its address is
	// picked before it starts.
	e.cfg.HTTPAddr = testenv.FreeAddr(t)
	base := "http://" + e.cfg.HTTPAddr
	e.cfg.SMTPAddr, e.cfg.SMTPTLS = smtp.Addr, "none"
	e.cfg.PublicURL, e.cfg.ConfirmSecret = base, testSecret
	const code, window = "hold", 30 * time.Minute
	if err := e.store.CreateInvitation(ctx, invite.Invitation{Code: code, MaxUses: 5, ConfirmWindow: window}); err != nil {
		t.Fatal(err)
	}
	m, _ := e.start(t)
	if m.PublicAddr != e.cfg.HTTPAddr {
		t.Fatalf("the service listens on %s, not on %s", m.PublicAddr, e.cfg.HTTPAddr)
	}
	const addr = "confirm.me@example.com"
	canonical := testenv.Address(t, addr).Canonical

	// The visitor's time zone is not the server's (UTC): +05:30, no DST.
	zone := time.FixedZone("IST", 5*3600+30*60)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Env("TZ=Asia/Kolkata"),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(390, 844)) // a phone's screen
	actx, cancel := chromedp.NewExecAllocator(ctx, opts...)
	defer cancel()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	bctx, cancel = context.WithTimeout(bctx, 2*time.Minute)
	defer cancel()

	// result waits until the live region says something other than the
	// progress text, and returns it.
	result := func(t *testing.T, progress string) string {
		t.Helper()
		text, err := chromedp.Run(bctx, chromedp.Poll[string](fmt.Sprintf(`(() => { const r = document.getElementById("result"); return r && r.textContent && r.textContent !== %q ? r.textContent : false })()`, progress)))
		if err != nil {
			t.Fatalf("waiting for the result: %v", err)
		}
		return text
	}
	eval := func(t *testing.T, js string) string {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return v
	}
	if offset := eval(t, `String(new Date(Date.UTC(2026, 0, 15)).getTimezoneOffset())`); offset != "-330" {
		t.Fatalf("chromium's time zone offset is %s minutes, want -330 (TZ=Asia/Kolkata)", offset)
	}

	var link string
	t.Run("signup", func(t *testing.T) {
		err := chromedp.Do(bctx,
			chromedp.Navigate(base+"/invitations/"+code),
			chromedp.WaitVisible(chromedp.ID("email")),
			chromedp.SendKeys(chromedp.ID("email"), addr),
			chromedp.Click(chromedp.CSS("button[type=submit]")),
		)
		if err != nil {
			t.Fatal(err)
		}
		text := result(t, "Sending…")
		if !strings.Contains(text, "Check your inbox") {
			t.Fatalf("page says %q, want it to ask to check the inbox", text)
		}
		hhmm := regexp.MustCompile(`before ([0-2][0-9]:[0-5][0-9])`).FindStringSubmatch(text)
		if hhmm == nil {
			t.Fatalf("page says %q: no deadline HH:MM", text)
		}
		// The deadline said is the hold's, in the visitor's zone, cut to
		// the minute.
		var deadline time.Time
		testenv.WaitFor(t, 15*time.Second, "the hold in MongoDB", func() bool {
			hs, err := e.store.LiveHolds(ctx, code, time.Now())
			if err != nil || len(hs) != 1 {
				return false
			}
			deadline = hs[0].Deadline
			return hs[0].Canonical == canonical
		})
		if want := deadline.In(zone).Format("15:04"); hhmm[1] != want {
			t.Errorf("page says %q, want the deadline %s (%s in the visitor's zone)", text, want, deadline.UTC().Format(time.RFC3339))
		}
		if d := time.Until(deadline); d < window-time.Minute || d > window {
			t.Errorf("the hold's deadline %v is %v away, want about %v", deadline, d, window)
		}
		if visible := eval(t, `(() => { const b = document.getElementById("resend"); return b && !b.hidden && b.offsetParent !== null ? b.textContent.trim() : "" })()`); visible != "Resend the email" {
			t.Errorf("the resend button shows %q, want %q", visible, "Resend the email")
		}
		// Pressed within a minute of the email, it says when it can send
		// again.
		if err := chromedp.Do(bctx, chromedp.Click(chromedp.ID("resend"))); err != nil {
			t.Fatal(err)
		}
		if text := result(t, "Sending the email again…"); !strings.Contains(text, "less than a minute ago") {
			t.Errorf("resend at once: page says %q", text)
		}

		// The email's link.
		linkRE := regexp.MustCompile(regexp.QuoteMeta(base) + `/invitations/` + code + `/confirm\?token=[A-Za-z0-9_-]+`)
		testenv.WaitFor(t, 15*time.Second, "the confirmation email", func() bool {
			for _, msg := range smtp.Messages() {
				body := strings.ReplaceAll(strings.ReplaceAll(string(msg.Data), "=\r\n", ""), "=3D", "=")
				if msg.To == addr {
					if l := linkRE.FindString(body); l != "" {
						link = l
						return true
					}
				}
			}
			return false
		})
	})
	if link == "" {
		t.FailNow()
	}

	registered := func(t *testing.T) bool {
		t.Helper()
		_, ok, err := e.store.Registration(ctx, canonical)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	t.Run("opening registers nothing", func(t *testing.T) {
		// A mail scanner prefetches the link.
		for _, method := range []string{http.MethodHead, http.MethodGet} {
			req, _ := http.NewRequest(method, link, nil)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s of the link: %d", method, resp.StatusCode)
			}
		}
		err := chromedp.Do(bctx,
			chromedp.Navigate(link),
			chromedp.WaitVisible(chromedp.CSS("#confirm button")),
		)
		if err != nil {
			t.Fatal(err)
		}
		if label := eval(t, `document.querySelector("#confirm button").textContent.trim()`); label != "Confirm my email" {
			t.Errorf("the button says %q", label)
		}
		if n := eval(t, `String(document.querySelectorAll("button").length)`); n != "1" {
			t.Errorf("the confirm page has %s buttons, want one", n)
		}
		if text := eval(t, `document.getElementById("result").textContent`); text != "" {
			t.Errorf("before the button, the page says %q", text)
		}
		time.Sleep(time.Second) // time for a write anything would have made
		if registered(t) {
			t.Fatal("opening the confirm page registered the email")
		}
		if hs, err := e.store.LiveHolds(ctx, code, time.Now()); err != nil || len(hs) != 1 {
			t.Fatalf("after opening the page: %d live holds (%v), want the one", len(hs), err)
		}
	})
	t.Run("confirm with the keyboard", func(t *testing.T) {
		if err := chromedp.Do(bctx, chromedp.KeyEvent(kb.Tab)); err != nil {
			t.Fatal(err)
		}
		if focused := eval(t, `document.activeElement.tagName + "/" + document.activeElement.textContent.trim()`); focused != "BUTTON/Confirm my email" {
			t.Fatalf("the first Tab focuses %q, want the button", focused)
		}
		if err := chromedp.Do(bctx, chromedp.KeyEvent(kb.Enter)); err != nil {
			t.Fatal(err)
		}
		if text := result(t, "Confirming…"); text != "You are registered." {
			t.Fatalf("after Enter the page says %q, want %q", text, "You are registered.")
		}
		if focused := eval(t, `document.activeElement.tagName + "/" + document.activeElement.textContent.trim()`); focused != "BUTTON/Confirm my email" {
			t.Errorf("after the answer the focus is on %q, want the button", focused)
		}
		testenv.WaitFor(t, 15*time.Second, "the registration in MongoDB", func() bool { return registered(t) })
		reg, _, err := e.store.Registration(ctx, canonical)
		if err != nil {
			t.Fatal(err)
		}
		if reg.Invitation != code || reg.Email != addr {
			t.Errorf("MongoDB has %+v, want %s on %s", reg, addr, code)
		}
		if regs := e.registrations(t); len(regs) != 1 || regs[canonical] != code {
			t.Errorf("MongoDB has the registrations %v, want only %s on %s", regs, canonical, code)
		}
	})
}
