package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/invitegate/invitegate/internal/app"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/testenv"
	"github.com/invitegate/invitegate/internal/workflow"
)

const testSecret = "test-secret-of-at-least-32-characters!"

// confirmLinkRE finds a confirmation link in an email (quoted-printable
// soft breaks and "=3D" undone first).
var confirmLinkRE = regexp.MustCompile(`https://beta\.example/invitations/([A-Za-z0-9_-]+)/confirm\?token=([A-Za-z0-9_-]+)`)

// links returns the confirmation tokens the SMTP server received, by
// recipient (the latest per recipient and code), and how many arrived.
func links(smtp *testenv.SMTPServer) (map[string]map[string]string, int) {
	out := map[string]map[string]string{}
	n := 0
	for _, m := range smtp.Messages() {
		body := strings.ReplaceAll(strings.ReplaceAll(string(m.Data), "=\r\n", ""), "=3D", "=")
		if mm := confirmLinkRE.FindStringSubmatch(body); mm != nil {
			n++
			if out[m.To] == nil {
				out[m.To] = map[string]string{}
			}
			out[m.To][mm[1]] = mm[2]
		}
	}
	return out, n
}

type answer struct {
	Status    int
	Body      string
	ExpiresAt time.Time
	At        time.Time // when the answer arrived
}

func signup(tb testing.TB, base, code, email string) answer {
	resp, err := client.Post("http://"+base+"/invitations/"+code, "application/json", bytes.NewBufferString(fmt.Sprintf(`{"email":%q}`, email)))
	if err != nil {
		tb.Errorf("POST %s: %v", code, err)
		return answer{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{Status: resp.StatusCode, Body: string(b), At: time.Now()}
	if resp.StatusCode == http.StatusAccepted {
		var v struct {
			Status    string    `json:"status"`
			ExpiresAt time.Time `json:"expires_at"`
		}
		if err := json.Unmarshal(b, &v); err != nil || v.Status != "pending_confirmation" || v.ExpiresAt.IsZero() {
			tb.Errorf("202 body %s: %v", b, err)
		}
		a.ExpiresAt = v.ExpiresAt
	}
	return a
}

func confirmPost(tb testing.TB, base, code, token string) answer {
	resp, err := client.Post("http://"+base+"/invitations/"+code+"/confirm", "application/json", bytes.NewBufferString(fmt.Sprintf(`{"token":%q}`, token)))
	if err != nil {
		tb.Errorf("POST confirm: %v", err)
		return answer{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{Status: resp.StatusCode, Body: string(b), At: time.Now()}
}

// TestConfirmationLoop drives confirmation holds through the HTTP API of
// two replicas on a real Redis (node and cluster, 16 shards) and MongoDB:
// a spike takes exactly max_uses holds (202) and the rest 410; each hold
// gets its email with a link; Redis is wiped while the holds live and the
// service restores them from MongoDB; part of them are confirmed through
// the links (201, then 200 on a reuse; tampered and cross-code tokens
// 404); the rest expire, both replicas sweeping, and their seats, exactly
// those, come back within 2 s of the deadline, taken by new emails and by
// an expired one signing up again; MongoDB ends with exactly the
// confirmed registrations.
func TestConfirmationLoop(t *testing.T) {
	for _, d := range []deployment{deployments[1], deployments[3]} {
		t.Run(d.name, func(t *testing.T) {
			ctx := context.Background()
			smtp := testenv.StartSMTP(t)
			e := newEnv(t, d)
			e.cfg.SMTPAddr, e.cfg.SMTPTLS = smtp.Addr, "none"
			e.cfg.PublicURL, e.cfg.ConfirmSecret = "https://beta.example", testSecret
			if d.cluster {
				// No secret configured: the replicas share the one generated
				// in MongoDB (each link is confirmed on either replica).
				e.cfg.ConfirmSecret = ""
			}
			const max, confirmN, window = 12, 5, 8 * time.Second
			for _, code := range []string{"hold", "other"} {
				if err := e.store.CreateInvitation(ctx, invite.Invitation{Code: code, MaxUses: max, ConfirmWindow: window}); err != nil {
					t.Fatal(err)
				}
			}
			m1, _ := e.start(t)
			m2, _ := e.start(t)
			servers := []string{m1.PublicAddr, m2.PublicAddr}

			// The spike: exactly max holds.
			first := emails("h", 40)
			answers := make(map[string]answer, len(first))
			var mu sync.Mutex
			var wg sync.WaitGroup
			for i, em := range first {
				wg.Add(1)
				go func() {
					defer wg.Done()
					a := signup(t, servers[i%2], "hold", em)
					mu.Lock()
					answers[em] = a
					mu.Unlock()
				}()
			}
			wg.Wait()
			var held []string
			var lastDeadline time.Time
			for _, em := range first {
				switch a := answers[em]; a.Status {
				case http.StatusAccepted:
					held = append(held, em)
					if a.ExpiresAt.After(lastDeadline) {
						lastDeadline = a.ExpiresAt
					}
				case http.StatusGone:
				default:
					t.Fatalf("%s: %d %s", em, a.Status, a.Body)
				}
			}
			if len(held) != max {
				t.Fatalf("%d holds, want exactly %d", len(held), max)
			}
			// A repeat: the same hold and deadline.
			if a := signup(t, m2.PublicAddr, "hold", held[0]); a.Status != http.StatusAccepted || !a.ExpiresAt.Equal(answers[held[0]].ExpiresAt) {
				t.Fatalf("repeat: %d %v, want 202 with %v", a.Status, a.ExpiresAt, answers[held[0]].ExpiresAt)
			}
			// Another code's hold, for the cross-code token.
			if a := signup(t, m1.PublicAddr, "other", "cross@example.com"); a.Status != http.StatusAccepted {
				t.Fatalf("other code: %d %s", a.Status, a.Body)
			}
			// The same email on another code while its hold lives: 409.
			if a := signup(t, m1.PublicAddr, "other", held[1]); a.Status != http.StatusConflict {
				t.Fatalf("held email on another code: %d, want 409", a.Status)
			}

			// Every hold gets its email (the repeat may add one more).
			var toks map[string]map[string]string
			testenv.WaitFor(t, 15*time.Second, "a confirmation email per hold", func() bool {
				toks, _ = links(smtp)
				for _, em := range held {
					if toks[em]["hold"] == "" {
						return false
					}
				}
				return toks["cross@example.com"]["other"] != ""
			})
			if len(toks) != max+1 {
				t.Fatalf("confirmation emails to %d addresses, want %d", len(toks), max+1)
			}

			// MongoDB records the holds; then Redis loses everything.
			testenv.WaitFor(t, 15*time.Second, "the holds in MongoDB", func() bool {
				hs, err := e.store.LiveHolds(ctx, "hold", time.Now())
				return err == nil && len(hs) == max
			})
			testenv.Wipe(t, e.rdb, e.cfg.RedisNamespace)

			// Tokens that are not valid for this code: 404, nothing changes.
			tok := toks[held[0]]["hold"]
			bad := []byte(tok)
			bad[10] = map[bool]byte{true: 'B', false: 'A'}[bad[10] == 'A']
			for name, tk := range map[string]string{"tampered": string(bad), "cross-code": toks["cross@example.com"]["other"], "made up": "bm90LWEtdG9rZW4"} {
				if a := confirmPost(t, m1.PublicAddr, "hold", tk); a.Status != http.StatusNotFound || !strings.Contains(a.Body, "invalid-confirmation") {
					t.Fatalf("%s token: %d %s, want 404 invalid-confirmation", name, a.Status, a.Body)
				}
			}
			// Confirmations after the wipe: the holds came back.
			for i, em := range held[:confirmN] {
				if a := confirmPost(t, servers[i%2], "hold", toks[em]["hold"]); a.Status != http.StatusCreated || !strings.Contains(a.Body, `"registered"`) {
					t.Fatalf("confirm %s: %d %s", em, a.Status, a.Body)
				}
			}
			if a := confirmPost(t, m2.PublicAddr, "hold", tok); a.Status != http.StatusOK || !strings.Contains(a.Body, "already_registered") {
				t.Fatalf("reused token: %d %s, want 200 already_registered", a.Status, a.Body)
			}
			// A confirmed email signing up again: 200, as today.
			if a := signup(t, m1.PublicAddr, "hold", held[0]); a.Status != http.StatusOK {
				t.Fatalf("confirmed email again: %d", a.Status)
			}
			// While the other holds live the code stays full.
			if a := signup(t, m1.PublicAddr, "hold", "early@example.com"); a.Status != http.StatusGone {
				t.Fatalf("a new email while every seat is held or confirmed: %d, want 410", a.Status)
			}

			// The rest expire: by 2 s after the last deadline, with no
			// signup of theirs to expire them lazily, their seats are back.
			time.Sleep(time.Until(lastDeadline.Add(2 * time.Second)))
			lapsed := held[confirmN]
			if a := confirmPost(t, m1.PublicAddr, "hold", toks[lapsed]["hold"]); a.Status != http.StatusGone || !strings.Contains(a.Body, "confirmation-expired") {
				t.Fatalf("confirm after the deadline: %d %s, want 410 confirmation-expired", a.Status, a.Body)
			}
			second := append([]string{lapsed}, emails("n", 20)...)
			got := map[int]int{}
			for i, em := range second {
				a := signup(t, servers[i%2], "hold", em)
				got[a.Status]++
				if em == lapsed && a.Status != http.StatusAccepted {
					t.Fatalf("an expired email signing up again: %d, want a new hold", a.Status)
				}
			}
			if got[http.StatusAccepted] != max-confirmN || got[http.StatusGone] != len(second)-(max-confirmN) {
				t.Fatalf("after expiry: %v, want exactly the %d expired seats held again, the rest 410", got, max-confirmN)
			}
			// MongoDB: exactly the confirmed registrations, and the first
			// holds that lapsed recorded as expired.
			testenv.WaitFor(t, 15*time.Second, "MongoDB to record the expiries", func() bool {
				n, err := e.db.Collection(persist.HoldsCollection).CountDocuments(ctx, bson.D{{Key: "invitation", Value: "hold"}, {Key: "state", Value: persist.HoldExpired}})
				return err == nil && n == int64(max-confirmN)
			})
			regs := e.registrations(t)
			n := 0
			for canon, code := range regs {
				if code == "hold" {
					n++
					if !strings.HasPrefix(canon, "h") {
						t.Fatalf("registration %s was never confirmed", canon)
					}
				}
			}
			if n != confirmN {
				t.Fatalf("%d registrations of hold in MongoDB, want the %d confirmed", n, confirmN)
			}
			// invitectl list's HELD and CONFIRMED: the second wave's holds,
			// the confirmed ones.
			var row workflow.Counters
			testenv.WaitFor(t, 15*time.Second, "list to show the second wave's holds", func() bool {
				rows, err := workflow.NewInvitations(e.store, nil, nil).List(ctx)
				for _, r := range rows {
					if r.Code == "hold" {
						row = r
					}
				}
				return err == nil && row.Held == max-confirmN
			})
			if row.Confirmed != confirmN || row.Persisted != confirmN || row.ConfirmWindowMs != window.Milliseconds() {
				t.Fatalf("list row %+v, want %d confirmed and persisted, window %v", row, confirmN, window)
			}
		})
	}
}

// TestConfirmNeedsPublicURL: a process refuses to start while an
// invitation has a confirmation window and INVITEGATE_PUBLIC_URL is not
// set (its links could not be made), and says how to fix it.
func TestConfirmNeedsPublicURL(t *testing.T) {
	e := newEnv(t, deployments[0])
	if err := e.store.CreateInvitation(context.Background(), invite.Invitation{Code: "needs-url", MaxUses: 3, ConfirmWindow: time.Minute}); err != nil {
		t.Fatal(err)
	}
	m := &app.Main{Config: e.cfg, Mode: app.Serve}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := m.Open(ctx)
	m.Close()
	if err == nil || !strings.Contains(err.Error(), "INVITEGATE_PUBLIC_URL") || !strings.Contains(err.Error(), "needs-url") {
		t.Fatalf("open without a public URL: %v, want a refusal naming INVITEGATE_PUBLIC_URL and the code", err)
	}
}
