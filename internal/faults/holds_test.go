package faults_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/invitegate/invitegate/internal/confirm"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
)

const holdSecret = "fault-suite-secret-of-32-characters-or-more"

// TestKillReplicaBetweenHoldAndConfirm: holds are taken on one of two
// replicas, which is then killed with SIGKILL before any is confirmed
// (its reconciler may not have written them yet: the other one takes its
// batch over). Through the surviving replica every hold's link still
// confirms (201), the holds left unconfirmed expire by its expirer alone
// within 2 s of their deadline, and exactly their seats are taken again;
// MongoDB ends with exactly the confirmed registrations.
func TestKillReplicaBetweenHoldAndConfirm(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	const code, max, confirmN = "kill-hold", 10, 6
	window := 8 * time.Second
	if err := s.store.CreateInvitation(ctx, invite.Invitation{Code: code, MaxUses: max, ConfirmWindow: window}); err != nil {
		t.Fatal(err)
	}
	links := []string{"INVITEGATE_PUBLIC_URL=https://beta.example", "INVITEGATE_CONFIRM_SECRET=" + holdSecret}
	reps := s.start(2, "serve", links...)
	client := &http.Client{Timeout: 10 * time.Second}
	post := func(target, path, body string) (int, []byte) {
		t.Helper()
		resp, err := client.Post("http://"+target+path, "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	var last time.Time
	for i := range max {
		st, b := post(reps[0].Public, "/invitations/"+code, fmt.Sprintf(`{"email":"held-%d@example.com"}`, i))
		var v struct {
			ExpiresAt time.Time `json:"expires_at"`
		}
		if st != http.StatusAccepted || json.Unmarshal(b, &v) != nil {
			t.Fatalf("hold %d: %d %s", i, st, b)
		}
		last = v.ExpiresAt
	}
	reps[0].Kill(t)

	// The links are the holds' as MongoDB recorded them, sealed as the
	// mailer seals them.
	var holds []persist.Hold
	waitFor(t, 30*time.Second, "the holds in MongoDB", func() bool {
		var err error
		holds, err = s.store.LiveHolds(ctx, code, time.Now())
		return err == nil && len(holds) == max
	})
	sealer, err := confirm.New(holdSecret)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range holds[:confirmN] {
		tok := sealer.Seal(confirm.Hold{Code: code, HoldID: h.HoldID, Canonical: h.Canonical, Email: h.Email})
		if st, b := post(reps[1].Public, "/invitations/"+code+"/confirm", `{"token":"`+tok+`"}`); st != http.StatusCreated {
			t.Fatalf("confirm %s on the surviving replica: %d %s", h.HoldID, st, b)
		}
	}
	time.Sleep(time.Until(last.Add(2 * time.Second)))
	got := map[int]int{}
	for i := range 2 * max {
		st, _ := post(reps[1].Public, "/invitations/"+code, fmt.Sprintf(`{"email":"after-%d@example.com"}`, i))
		got[st]++
	}
	if got[http.StatusAccepted] != max-confirmN || got[http.StatusGone] != 2*max-(max-confirmN) {
		t.Fatalf("after the deadline: %v, want exactly the %d unconfirmed seats held again", got, max-confirmN)
	}
	waitFor(t, 30*time.Second, "the confirmed registrations in MongoDB", func() bool {
		n, err := s.store.Count(ctx, code)
		return err == nil && n == confirmN
	})
	time.Sleep(time.Second)
	if n, err := s.store.Count(ctx, code); err != nil || n != confirmN {
		t.Fatalf("%d registrations (%v), want exactly the %d confirmed", n, err, confirmN)
	}
}
