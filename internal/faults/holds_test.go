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

// TestRedisRestartKeepsHolds: redis-server is killed with SIGKILL while
// holds live and restarted on its append-only file (appendfsync always)
// after one code's deadline passed. The holds that still live confirm
// (201) once the service recovered; the one whose deadline passed while
// Redis was down is refused (410) and its seat is taken again; the
// unconfirmed holds expire, exactly their seats coming back.
func TestRedisRestartKeepsHolds(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	const max, confirmN = 8, 5
	for code, w := range map[string]time.Duration{"aof-hold": 12 * time.Second, "aof-late": 2 * time.Second} {
		n := max
		if code == "aof-late" {
			n = 1
		}
		if err := s.store.CreateInvitation(ctx, invite.Invitation{Code: code, MaxUses: n, ConfirmWindow: w}); err != nil {
			t.Fatal(err)
		}
	}
	reps := s.start(2, "serve", "INVITEGATE_PUBLIC_URL=https://beta.example", "INVITEGATE_CONFIRM_SECRET="+holdSecret)
	client := &http.Client{Timeout: 10 * time.Second}
	post := func(path, body string) (int, []byte) {
		t.Helper()
		resp, err := client.Post("http://"+reps[1].Public+path, "application/json", bytes.NewBufferString(body))
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	var last time.Time
	for i := range max {
		st, b := post("/invitations/aof-hold", fmt.Sprintf(`{"email":"aof-%d@example.com"}`, i))
		var v struct {
			ExpiresAt time.Time `json:"expires_at"`
		}
		if st != http.StatusAccepted || json.Unmarshal(b, &v) != nil {
			t.Fatalf("hold %d: %d %s", i, st, b)
		}
		last = v.ExpiresAt
	}
	if st, b := post("/invitations/aof-late", `{"email":"late@example.com"}`); st != http.StatusAccepted {
		t.Fatalf("late hold: %d %s", st, b)
	}
	var holds, late []persist.Hold
	waitFor(t, 30*time.Second, "the holds in MongoDB", func() bool {
		var err1, err2 error
		holds, err1 = s.store.LiveHolds(ctx, "aof-hold", time.Now())
		late, err2 = s.store.LiveHolds(ctx, "aof-late", time.Now())
		return err1 == nil && err2 == nil && len(holds) == max && len(late) == 1
	})
	s.redis.Kill(t)
	time.Sleep(time.Until(late[0].Deadline) + 500*time.Millisecond) // aof-late's deadline passes while Redis is down
	s.redis.Restart(t)

	sealer, err := confirm.New(holdSecret)
	if err != nil {
		t.Fatal(err)
	}
	token := func(h persist.Hold) string {
		return sealer.Seal(confirm.Hold{Code: h.Invitation, HoldID: h.HoldID, Canonical: h.Canonical, Email: h.Email})
	}
	// 503 while the service recovers from the restart; then the answer.
	answer := func(path, body string) (int, []byte) {
		t.Helper()
		var st int
		var b []byte
		waitFor(t, 30*time.Second, "an answer after the restart", func() bool {
			st, b = post(path, body)
			return st != 0 && st != http.StatusServiceUnavailable
		})
		return st, b
	}
	for _, h := range holds[:confirmN] {
		if st, b := answer("/invitations/aof-hold/confirm", `{"token":"`+token(h)+`"}`); st != http.StatusCreated {
			t.Fatalf("confirm %s after the restart: %d %s", h.HoldID, st, b)
		}
	}
	if st, b := answer("/invitations/aof-late/confirm", `{"token":"`+token(late[0])+`"}`); st != http.StatusGone {
		t.Fatalf("confirm after a deadline that passed while Redis was down: %d %s, want 410", st, b)
	}
	if st, b := answer("/invitations/aof-late", `{"email":"next@example.com"}`); st != http.StatusAccepted {
		t.Fatalf("aof-late's seat after its hold lapsed: %d %s, want a new hold", st, b)
	}
	time.Sleep(time.Until(last.Add(2 * time.Second)))
	got := map[int]int{}
	for i := range 2 * max {
		st, _ := answer("/invitations/aof-hold", fmt.Sprintf(`{"email":"after-%d@example.com"}`, i))
		got[st]++
	}
	if got[http.StatusAccepted] != max-confirmN || got[http.StatusGone] != 2*max-(max-confirmN) {
		t.Fatalf("after the deadline: %v, want exactly the %d unconfirmed seats held again", got, max-confirmN)
	}
	waitFor(t, 30*time.Second, "the confirmed registrations in MongoDB", func() bool {
		n, err := s.store.Count(ctx, "aof-hold")
		return err == nil && n == confirmN
	})
}

// TestSentinelFailoverKeepsHolds: with INVITEGATE_ACK=replica a 202 means
// the replica holds the hold. The primary is killed and the Sentinels
// promote the replica; once the old primary is back as its replica (so
// the new one can confirm writes again), every hold's link still confirms
// (201), and the holds left unconfirmed expire, exactly their seats coming
// back.
func TestSentinelFailoverKeepsHolds(t *testing.T) {
	s := newStackOn(t, layout{sentinel: true})
	ctx := context.Background()
	const code, max, confirmN = "fo-hold", 8, 5
	if err := s.store.CreateInvitation(ctx, invite.Invitation{Code: code, MaxUses: max, ConfirmWindow: 25 * time.Second}); err != nil {
		t.Fatal(err)
	}
	reps := s.start(2, "serve", "INVITEGATE_ACK=replica", "INVITEGATE_PUBLIC_URL=https://beta.example", "INVITEGATE_CONFIRM_SECRET="+holdSecret)
	client := &http.Client{Timeout: 10 * time.Second}
	post := func(path, body string) (int, []byte) {
		resp, err := client.Post("http://"+reps[1].Public+path, "application/json", bytes.NewBufferString(body))
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	// answer retries past 503s (the failover, the replicas not confirming
	// yet) and says whether one came first: then a confirmation may have
	// landed, and its retry is answered 200 (a 503 is not a "no").
	answer := func(path, body string) (int, []byte, bool) {
		t.Helper()
		var st int
		var b []byte
		unavailable := false
		waitFor(t, 60*time.Second, "an answer other than 503", func() bool {
			st, b = post(path, body)
			unavailable = unavailable || st == http.StatusServiceUnavailable || st == 0
			return st != 0 && st != http.StatusServiceUnavailable
		})
		return st, b, unavailable
	}
	var last time.Time
	for i := range max {
		st, b, _ := answer("/invitations/"+code, fmt.Sprintf(`{"email":"fo-%d@example.com"}`, i))
		var v struct {
			ExpiresAt time.Time `json:"expires_at"`
		}
		if st != http.StatusAccepted || json.Unmarshal(b, &v) != nil {
			t.Fatalf("hold %d: %d %s", i, st, b)
		}
		last = v.ExpiresAt
	}
	var holds []persist.Hold
	waitFor(t, 30*time.Second, "the holds in MongoDB", func() bool {
		var err error
		holds, err = s.store.LiveHolds(ctx, code, time.Now())
		return err == nil && len(holds) == max
	})
	primary, replica := s.group.Primary(t), s.group.Replica(t)
	primary.Kill(t)
	if got := s.group.WaitForPromotion(t, primary, 30*time.Second); got != replica {
		t.Fatalf("the Sentinels promoted %s, want the replica %s", got.Addr, replica.Addr)
	}
	primary.Restart(t) // back as the new primary's replica: ack=replica confirms again
	s.group.WaitReplicated(t)

	sealer, err := confirm.New(holdSecret)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range holds[:confirmN] {
		tok := sealer.Seal(confirm.Hold{Code: code, HoldID: h.HoldID, Canonical: h.Canonical, Email: h.Email})
		st, b, after503 := answer("/invitations/"+code+"/confirm", `{"token":"`+tok+`"}`)
		if st != http.StatusCreated && !(after503 && st == http.StatusOK) {
			t.Fatalf("confirm %s after the failover: %d %s", h.HoldID, st, b)
		}
	}
	// While the other holds live the code is full.
	if st, b, _ := answer("/invitations/"+code, `{"email":"early@example.com"}`); st != http.StatusGone {
		t.Fatalf("a new email while every seat is held or confirmed: %d %s, want 410", st, b)
	}
	time.Sleep(time.Until(last.Add(2 * time.Second)))
	got := map[int]int{}
	for i := range 2 * max {
		st, _, _ := answer("/invitations/"+code, fmt.Sprintf(`{"email":"after-%d@example.com"}`, i))
		got[st]++
	}
	if got[http.StatusAccepted] != max-confirmN || got[http.StatusGone] != 2*max-(max-confirmN) {
		t.Fatalf("after the deadline: %v, want exactly the %d unconfirmed seats held again", got, max-confirmN)
	}
	waitFor(t, 30*time.Second, "the confirmed registrations in MongoDB", func() bool {
		n, err := s.store.Count(ctx, code)
		return err == nil && n == confirmN
	})
}
