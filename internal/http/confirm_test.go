package http_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/invitegate/invitegate/internal/confirm"
	"github.com/invitegate/invitegate/internal/email"
	api "github.com/invitegate/invitegate/internal/http"
	"github.com/invitegate/invitegate/internal/invite"
)

const testSecret = "0123456789abcdef0123456789abcdef-test-only"

func newSealer(t testing.TB, secret string) *confirm.Sealer {
	t.Helper()
	s, err := confirm.New(secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// holding is a Reserver that answers every signup with res: a code with a
// confirmation window.
type holding struct{ res invite.Result }

func (h holding) Reserve(context.Context, string, email.Address) (invite.Result, error) {
	return h.res, nil
}

// confirmer is a Confirmer that answers as told and records the holds it
// was asked to confirm.
type confirmer struct {
	res invite.Result
	err error

	mu  sync.Mutex
	got []confirm.Hold
}

func (c *confirmer) Confirm(_ context.Context, h confirm.Hold) (invite.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, h)
	return c.res, c.err
}

func (c *confirmer) calls() []confirm.Hold {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]confirm.Hold(nil), c.got...)
}

// tokenBody is the JSON body carrying tok.
func tokenBody(tok string) string {
	b, _ := json.Marshal(map[string]string{"token": tok})
	return string(b)
}

func decodeRegistration(t *testing.T, b []byte) map[string]string {
	t.Helper()
	var got map[string]string
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("body %s: %v", b, err)
	}
	return got
}

var aliceHold = confirm.Hold{Code: "open", HoldID: "1712000000000-3", Canonical: "aliceb@gmail.com", Email: "alice.b+beta@gmail.com"}

func TestConfirmPassesTheTokensHold(t *testing.T) {
	sealer := newSealer(t, testSecret)
	for _, tt := range []struct {
		name    string
		outcome invite.Outcome
		status  int
		body    string
	}{
		{"first time", invite.Created, http.StatusCreated, "registered"},
		{"repeat", invite.Existing, http.StatusOK, "already_registered"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := &confirmer{res: invite.Result{Outcome: tt.outcome}}
			h := api.New(stub{}, api.Config{Tokens: sealer, Confirmer: c})
			w := do(t, h, req{path: "/invitations/open/confirm", body: tokenBody(sealer.Seal(aliceHold))})
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d (%s)", w.Code, tt.status, w.Body)
			}
			if got := c.calls(); len(got) != 1 || got[0] != aliceHold {
				t.Fatalf("Confirmer got %+v, want exactly [%+v]", got, aliceHold)
			}
			want := map[string]string{"invitation": "open", "email": aliceHold.Email, "status": tt.body}
			if got := decodeRegistration(t, w.Body.Bytes()); len(got) != len(want) || got["invitation"] != want["invitation"] || got["email"] != want["email"] || got["status"] != want["status"] {
				t.Fatalf("body %v, want %v", got, want)
			}
		})
	}
}

func TestConfirmFieldNameAnyCase(t *testing.T) {
	sealer := newSealer(t, testSecret)
	c := &confirmer{res: invite.Result{Outcome: invite.Created}}
	h := api.New(stub{}, api.Config{Tokens: sealer, Confirmer: c})
	w := do(t, h, req{path: "/invitations/open/confirm", body: `{"Token":"` + sealer.Seal(aliceHold) + `"}`})
	if w.Code != http.StatusCreated || len(c.calls()) != 1 {
		t.Fatalf("status %d, %d calls (%s)", w.Code, len(c.calls()), w.Body)
	}
}

// TestConfirmRefusedTokens: a token that does not open under this secret,
// or opens to another code, is 404 invalid-confirmation and never reaches
// the Confirmer.
func TestConfirmRefusedTokens(t *testing.T) {
	sealer := newSealer(t, testSecret)
	good := sealer.Seal(aliceHold)
	otherCode := aliceHold
	otherCode.Code = "two"
	tampered := []byte(good)
	mid := len(tampered) / 2
	if tampered[mid] == 'A' {
		tampered[mid] = 'B'
	} else {
		tampered[mid] = 'A'
	}
	tests := []struct {
		name, path, token string
	}{
		{"token of code two posted to open", "/invitations/open/confirm", sealer.Seal(otherCode)},
		{"token of open posted to two", "/invitations/two/confirm", good},
		{"one character changed", "/invitations/open/confirm", string(tampered)},
		{"truncated", "/invitations/open/confirm", good[:len(good)-4]},
		{"another secret's", "/invitations/open/confirm", newSealer(t, strings.Repeat("z", 40)).Seal(aliceHold)},
		{"not base64url", "/invitations/open/confirm", good[:10] + "!" + good[11:]},
		{"empty", "/invitations/open/confirm", ""},
		{"made up", "/invitations/open/confirm", "dG9rZW4"},
		{"too long", "/invitations/open/confirm", strings.Repeat("A", confirm.MaxTokenLen+4)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &confirmer{res: invite.Result{Outcome: invite.Created}}
			h := api.New(stub{}, api.Config{Tokens: sealer, Confirmer: c})
			w := do(t, h, req{path: tt.path, body: tokenBody(tt.token)})
			if w.Code != http.StatusNotFound {
				t.Fatalf("status %d, want 404 (%s)", w.Code, w.Body)
			}
			checkProblem(t, tt.name, w, "invalid-confirmation")
			if got := c.calls(); len(got) != 0 {
				t.Fatalf("Confirmer called with %+v", got)
			}
		})
	}
}

// TestConfirmNotConfigured: without Tokens or without a Confirmer the
// endpoint answers every token 404 invalid-confirmation.
func TestConfirmNotConfigured(t *testing.T) {
	sealer := newSealer(t, testSecret)
	c := &confirmer{res: invite.Result{Outcome: invite.Created}}
	for name, cfg := range map[string]api.Config{
		"no tokens":    {Confirmer: c},
		"no confirmer": {Tokens: sealer},
		"neither":      {},
	} {
		w := do(t, api.New(stub{}, cfg), req{path: "/invitations/open/confirm", body: tokenBody(sealer.Seal(aliceHold))})
		if w.Code != http.StatusNotFound {
			t.Fatalf("%s: status %d, want 404", name, w.Code)
		}
		checkProblem(t, name, w, "invalid-confirmation")
	}
	if got := c.calls(); len(got) != 0 {
		t.Fatalf("Confirmer called with %+v", got)
	}
}

func TestConfirmErrors(t *testing.T) {
	sealer := newSealer(t, testSecret)
	for _, tt := range []struct {
		name       string
		err        error
		status     int
		slug       string
		retryAfter bool
	}{
		{"hold expired", invite.ErrHoldExpired, 410, "confirmation-expired", false},
		{"hold expired, wrapped", errors.Join(errors.New("context"), invite.ErrHoldExpired), 410, "confirmation-expired", false},
		{"Redis down", invite.Unavailable(errors.New("dial tcp: refused")), 503, "unavailable", true},
		{"reseeding", invite.ErrFrozen, 503, "invitation-reseeding", true},
		{"unexpected", errors.New("boom secret detail"), 500, "internal", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := api.New(stub{}, api.Config{Tokens: sealer, Confirmer: &confirmer{err: tt.err}})
			w := do(t, h, req{path: "/invitations/open/confirm", body: tokenBody(sealer.Seal(aliceHold))})
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d", w.Code, tt.status)
			}
			checkProblem(t, tt.name, w, tt.slug)
			if got := w.Header().Get("Retry-After") != ""; got != tt.retryAfter {
				t.Fatalf("Retry-After present = %v, want %v", got, tt.retryAfter)
			}
			if strings.Contains(w.Body.String(), "secret") || strings.Contains(w.Body.String(), "boom") {
				t.Fatalf("internal error text leaked: %s", w.Body)
			}
		})
	}
}

type resendCall struct{ canonical, code, holdID string }

// TestConfirmResendOnHeldAgain: a repeat signup while the hold lives
// (HeldAgain) asks for the confirmation email again, once, with the hold's
// canonical email, code and ID; a new hold (Held) does not, its email is
// sent by the hold itself. In a synctest bubble, synctest.Wait returns
// once the background Resend has run.
func TestConfirmResendOnHeldAgain(t *testing.T) {
	const raw = " Alice.B+Beta@GoogleMail.com "
	addr, err := email.Parse(raw, email.Options{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Date(2026, 5, 1, 12, 30, 0, 0, time.UTC)
	for _, tt := range []struct {
		name    string
		outcome invite.Outcome
		want    []resendCall
	}{
		{"held", invite.Held, nil},
		{"held again", invite.HeldAgain, []resendCall{{addr.Canonical, "open", "1712000000000-3"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var mu sync.Mutex
				var calls []resendCall
				resend := func(ctx context.Context, canonical, code, holdID string) {
					mu.Lock()
					defer mu.Unlock()
					calls = append(calls, resendCall{canonical, code, holdID})
				}
				res := invite.Result{Outcome: tt.outcome, ID: "1712000000000-3", Deadline: deadline}
				h := api.New(holding{res}, api.Config{Resend: resend})
				w := do(t, h, req{path: "/invitations/open", body: `{"email":"` + raw + `"}`})
				if w.Code != http.StatusAccepted {
					t.Fatalf("status %d, want 202 (%s)", w.Code, w.Body)
				}
				synctest.Wait()
				mu.Lock()
				defer mu.Unlock()
				if len(calls) != len(tt.want) || (len(calls) == 1 && calls[0] != tt.want[0]) {
					t.Fatalf("Resend calls %+v, want %+v", calls, tt.want)
				}
			})
		})
	}
}

// TestConfirmPendingBody: the 202 carries the hold's deadline as RFC 3339
// in UTC, whatever the zone of the Deadline.
func TestConfirmPendingBody(t *testing.T) {
	deadline := time.Date(2026, 5, 1, 14, 30, 5, 0, time.FixedZone("CEST", 2*3600))
	for _, outcome := range []invite.Outcome{invite.Held, invite.HeldAgain} {
		h := api.New(holding{invite.Result{Outcome: outcome, ID: "1-0", Deadline: deadline}}, api.Config{})
		w := do(t, h, req{path: "/invitations/open", body: `{"email":"Bob@Example.com"}`})
		if w.Code != http.StatusAccepted {
			t.Fatalf("outcome %d: status %d, want 202", outcome, w.Code)
		}
		got := decodeRegistration(t, w.Body.Bytes())
		want := map[string]string{"invitation": "open", "email": "bob@example.com", "status": "pending_confirmation", "expires_at": "2026-05-01T12:30:05Z"}
		if len(got) != len(want) {
			t.Fatalf("outcome %d: body %v, want %v", outcome, got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("outcome %d: %s = %q, want %q", outcome, k, got[k], v)
			}
		}
		if at, err := time.Parse(time.RFC3339, got["expires_at"]); err != nil || !at.Equal(deadline) {
			t.Fatalf("outcome %d: expires_at %q is not the deadline %v", outcome, got["expires_at"], deadline)
		}
	}
}

// TestConfirmLogsNoAddressNorToken: with debug logging on, a 202 and
// confirmations (201, 410, 500, 404) log neither a full email address
// nor a token.
func TestConfirmLogsNoAddressNorToken(t *testing.T) {
	sealer := newSealer(t, testSecret)
	var buf bytes.Buffer
	l := logrus.New()
	l.SetOutput(&buf)
	l.SetLevel(logrus.DebugLevel)

	tok := sealer.Seal(aliceHold)
	deadline := time.Date(2026, 5, 1, 12, 30, 0, 0, time.UTC)
	held := api.New(holding{invite.Result{Outcome: invite.Held, ID: aliceHold.HoldID, Deadline: deadline}}, api.Config{Logger: l})
	if w := do(t, held, req{path: "/invitations/open", body: `{"email":"` + aliceHold.Email + `"}`}); w.Code != http.StatusAccepted {
		t.Fatalf("signup: status %d", w.Code)
	}
	for _, c := range []struct {
		confirmer *confirmer
		status    int
	}{
		{&confirmer{res: invite.Result{Outcome: invite.Created}}, 201},
		{&confirmer{err: invite.ErrHoldExpired}, 410},
		{&confirmer{err: invite.Unavailable(errors.New("timeout"))}, 503},
		{&confirmer{err: errors.New("boom")}, 500},
	} {
		h := api.New(stub{}, api.Config{Logger: l, Tokens: sealer, Confirmer: c.confirmer})
		if w := do(t, h, req{path: "/invitations/open/confirm", body: tokenBody(tok)}); w.Code != c.status {
			t.Fatalf("confirm: status %d, want %d", w.Code, c.status)
		}
	}
	h := api.New(stub{}, api.Config{Logger: l, Tokens: sealer, Confirmer: &confirmer{}})
	if w := do(t, h, req{path: "/invitations/two/confirm", body: tokenBody(tok)}); w.Code != http.StatusNotFound {
		t.Fatalf("confirm elsewhere: status %d", w.Code)
	}

	out := buf.String()
	if !strings.Contains(out, "signup") || !strings.Contains(out, "confirmation") {
		t.Fatalf("the debug lines are missing; the test checks nothing:\n%s", out)
	}
	for _, secret := range []string{aliceHold.Email, aliceHold.Canonical, "alice.b", tok, tok[:24]} {
		if strings.Contains(out, secret) {
			t.Fatalf("the log holds %q:\n%s", secret, out)
		}
	}
}
