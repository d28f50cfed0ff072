package app_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// chromium returns the path of Debian's chromium (installed by .ci/run), or
// fails the test: the landing page is part of the product and is tested in
// a real browser.
func chromium(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("the browser test starts chromium")
	}
	for _, name := range []string{os.Getenv("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium not found: apt-get install -y chromium (or set CHROMIUM to a Chrome binary)")
	return ""
}

// TestLandingPageInBrowser drives the built-in landing page in headless
// chromium against a real service (redis-server, MongoDB-wire server): a
// signup, the same email again, a full code announced before anyone types,
// an email that used another invitation, and a signup with the keyboard
// alone.
func TestLandingPageInBrowser(t *testing.T) {
	bin := chromium(t)
	e := newEnv(t, deployments[0])
	e.cfg.GameName = "Starfall"
	e.create(t, "beta", 1000)
	e.create(t, "tiny", 1)
	e.create(t, "other", 10)
	m, _ := e.start(t)
	base := "http://" + m.PublicAddr

	// tiny is full before the browser comes.
	resp, err := http.Post(base+"/invitations/tiny", "application/json", strings.NewReader(`{"email":"first@example.com"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("filling tiny: %d", resp.StatusCode)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(390, 844)) // a phone's screen
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	// result waits until the page's live region says something other than
	// the progress text, and returns it.
	result := func(t *testing.T) string {
		t.Helper()
		text, err := chromedp.Run(ctx, chromedp.Poll[string](`(() => { const r = document.getElementById("result"); return r && r.textContent && r.textContent !== "Sending…" ? r.textContent : false })()`))
		if err != nil {
			t.Fatalf("waiting for the result: %v", err)
		}
		return text
	}
	submit := func(t *testing.T, code, email string) string {
		t.Helper()
		err := chromedp.Do(ctx,
			chromedp.Navigate(base+"/invitations/"+code),
			chromedp.WaitVisible(chromedp.ID("email")),
			chromedp.SendKeys(chromedp.ID("email"), email),
			chromedp.Click(chromedp.CSS("button[type=submit]")),
		)
		if err != nil {
			t.Fatalf("submit %s on %s: %v", email, code, err)
		}
		return result(t)
	}
	expect := func(t *testing.T, got, want string) {
		t.Helper()
		if !strings.Contains(got, want) {
			t.Fatalf("page says %q, want %q", got, want)
		}
	}

	t.Run("signup", func(t *testing.T) {
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"/invitations/beta")); err != nil {
			t.Fatal(err)
		}
		title, err := chromedp.Run(ctx, chromedp.Title())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(title, "Starfall") {
			t.Errorf("title %q lacks the game's name", title)
		}
		expect(t, submit(t, "beta", "player@example.com"), "You're in")
	})
	t.Run("again", func(t *testing.T) {
		expect(t, submit(t, "beta", "Player@Example.com"), "already registered")
	})
	t.Run("other invitation", func(t *testing.T) {
		expect(t, submit(t, "other", "player@example.com"), "already used another invitation")
	})
	t.Run("invalid email", func(t *testing.T) {
		expect(t, submit(t, "beta", "not an email"), "valid email address")
	})
	t.Run("full before typing", func(t *testing.T) {
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"/invitations/tiny")); err != nil {
			t.Fatal(err)
		}
		text, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("result")))
		if err != nil {
			t.Fatal(err)
		}
		forms, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("form").length`))
		if err != nil {
			t.Fatal(err)
		}
		expect(t, text, "full")
		if forms != 0 {
			t.Errorf("a full code shows %d forms, want none", forms)
		}
	})
	t.Run("unknown code", func(t *testing.T) {
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"/invitations/no-such-code")); err != nil {
			t.Fatal(err)
		}
		text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
		if err != nil {
			t.Fatal(err)
		}
		expect(t, text, "There is no invitation with the code no-such-code")
	})
	t.Run("keyboard only", func(t *testing.T) {
		err := chromedp.Do(ctx,
			chromedp.Navigate(base+"/invitations/beta"),
			chromedp.WaitVisible(chromedp.ID("email")),
			chromedp.KeyEvent(kb.Tab),
		)
		if err != nil {
			t.Fatal(err)
		}
		focused, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.activeElement.id`))
		if err != nil {
			t.Fatal(err)
		}
		if focused != "email" {
			t.Fatalf("the first Tab focuses %q, want the email field", focused)
		}
		if err := chromedp.Do(ctx, chromedp.KeyEvent("keys@example.com"), chromedp.KeyEvent(kb.Enter)); err != nil {
			t.Fatal(err)
		}
		expect(t, result(t), "You're in")
	})
	t.Run("keyboard to the button", func(t *testing.T) {
		// Tab to the field, type, Tab to the button, Enter: the answer is
		// announced and the focus stays on the button.
		err := chromedp.Do(ctx,
			chromedp.Navigate(base+"/invitations/beta"),
			chromedp.WaitVisible(chromedp.ID("email")),
			chromedp.KeyEvent(kb.Tab),
			chromedp.KeyEvent("button@example.com"),
			chromedp.KeyEvent(kb.Tab),
			chromedp.KeyEvent(kb.Enter),
		)
		if err != nil {
			t.Fatal(err)
		}
		expect(t, result(t), "You're in")
		focused, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.activeElement.tagName + "/" + document.activeElement.type`))
		if err != nil {
			t.Fatal(err)
		}
		if focused != "BUTTON/submit" {
			t.Errorf("after the answer the focus is on %q, want the button", focused)
		}
	})

	// What the browser did is in MongoDB: exactly the three signups on beta.
	if n, err := e.store.Count(context.Background(), "beta"); err != nil || n != 3 {
		deadline := time.Now().Add(10 * time.Second)
		for (err != nil || n != 3) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			n, err = e.store.Count(context.Background(), "beta")
		}
		if err != nil || n != 3 {
			t.Fatalf("beta has %d registrations (%v), want 3", n, err)
		}
	}
}
