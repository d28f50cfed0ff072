package persist_test

import (
	"context"
	"testing"
	"time"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
)

// TestHoldRecords: hold entries become hold documents once however often
// they are written; an expiry or a confirmation settles a hold once, also
// when it arrives before the hold's own entry (another consumer took that
// batch); LiveHolds skips settled, past and registered ones; list counts.
func TestHoldRecords(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	if err := st.CreateInvitation(ctx, invite.Invitation{Code: "h", MaxUses: 5, ConfirmWindow: time.Minute}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	hold := func(id, em string, dl time.Time) invite.Reservation {
		return invite.Reservation{ID: id, Code: "h", Canonical: em, Email: em, ReservedAt: now, Kind: invite.HoldTaken, HoldID: id, Deadline: dl}
	}
	live := hold("1-0", "live@example.com", now.Add(time.Minute))
	past := hold("2-0", "past@example.com", now.Add(-time.Second))
	ended := hold("3-0", "ended@example.com", now.Add(time.Minute))
	conf := hold("4-0", "conf@example.com", now.Add(time.Minute))
	early := invite.Reservation{ID: "6-0", Code: "h", Canonical: "early@example.com", Kind: invite.HoldEnded, HoldID: "5-0"}
	batch := []invite.Reservation{live, past, ended, conf, early,
		{ID: "7-0", Code: "h", Canonical: "ended@example.com", Kind: invite.HoldEnded, HoldID: "3-0"},
		{ID: "8-0", Code: "h", Canonical: "conf@example.com", Email: "conf@example.com", ReservedAt: now, HoldID: "4-0"},
	}
	for round := 0; round < 2; round++ { // written twice: duplicates are settled
		res, err := st.Persist(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.Outcome != persist.Written && r.Outcome != persist.AlreadyWritten {
				t.Fatalf("round %d row %d (%+v): %+v", round, i, batch[i], r)
			}
		}
	}
	// The expired hold's own entry comes last: it stays expired.
	if _, err := st.Persist(ctx, []invite.Reservation{hold("5-0", "early@example.com", now.Add(time.Minute))}); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		persist.HoldKey("live@example.com", "1-0"): persist.HoldHeld, persist.HoldKey("ended@example.com", "3-0"): persist.HoldExpired,
		persist.HoldKey("conf@example.com", "4-0"): persist.HoldConfirmed, persist.HoldKey("early@example.com", "5-0"): persist.HoldExpired,
	} {
		h, ok, err := st.Hold(ctx, key)
		if err != nil || !ok || h.State != want {
			t.Fatalf("%s: %+v %v %v, want state %s", key, h, ok, err, want)
		}
	}
	hs, err := st.LiveHolds(ctx, "h", now)
	if err != nil || len(hs) != 1 || hs[0].Canonical != "live@example.com" || hs[0].HoldID != "1-0" || !hs[0].Deadline.Equal(live.Deadline.Truncate(time.Millisecond)) {
		t.Fatalf("live holds %+v %v, want live@example.com's", hs, err)
	}
	if n, err := st.Count(ctx, "h"); err != nil || n != 1 {
		t.Fatalf("%d registrations (%v), want the confirmed one", n, err)
	}
	held, confirmed, err := st.HoldCounts(ctx, now)
	if err != nil || held["h"] != 1 || confirmed["h"] != 1 {
		t.Fatalf("counts held %v confirmed %v (%v)", held, confirmed, err)
	}
}

// TestResendHoldMail: a live hold's email is sent again at most once per
// gap, whoever asks, also once it was given up; never for a hold that is
// over.
func TestResendHoldMail(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	now := time.Now().UTC().Truncate(time.Millisecond)
	r := invite.Reservation{ID: "1-0", Code: "h", Canonical: "a@example.com", Email: "a@example.com", ReservedAt: now, Kind: invite.HoldTaken, HoldID: "1-0", Deadline: now.Add(time.Hour)}
	if err := st.RecordHold(ctx, r); err != nil {
		t.Fatal(err)
	}
	key := persist.HoldKey("a@example.com", "1-0")
	resend := func(at time.Time) bool {
		t.Helper()
		ok, err := st.ResendHoldMail(ctx, key, at, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if resend(now) {
		t.Fatal("reopened while its first email is still pending")
	}
	if ok, err := st.ClaimHoldMail(ctx, key, 0, 0, "m", now, time.Minute); err != nil || !ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
	if err := st.HoldMailSent(ctx, key, 0, 0, now); err != nil {
		t.Fatal(err)
	}
	if resend(now.Add(30 * time.Second)) {
		t.Fatal("resent 30 s after the email")
	}
	if !resend(now.Add(61 * time.Second)) {
		t.Fatal("not resent a minute after the email")
	}
	due, err := st.DueHoldMail(ctx, now.Add(62*time.Second), 10)
	if err != nil || len(due) != 1 || due[0].Mail.Round != 1 || due[0].Mail.Attempts != 0 {
		t.Fatalf("due after a resend: %+v %v", due, err)
	}
	// Given up (e.g. a permanent refusal): reopened once per gap, not once
	// per replica asking.
	if ok, err := st.ClaimHoldMail(ctx, key, 1, 0, "m", now.Add(62*time.Second), time.Minute); err != nil || !ok {
		t.Fatalf("claim round 1: %v %v", ok, err)
	}
	if err := st.HoldMailFailed(ctx, key, 1, 0, "550 no such user", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if resend(now.Add(90 * time.Second)) {
		t.Fatal("a given-up email reopened 29 s after the last reopening")
	}
	if !resend(now.Add(125 * time.Second)) {
		t.Fatal("a given-up email not reopened a minute after the last reopening")
	}
	if resend(now.Add(126 * time.Second)) {
		t.Fatal("reopened twice within a minute")
	}
	// Past its deadline: never.
	if resend(now.Add(2 * time.Hour)) {
		t.Fatal("resent past the hold's deadline")
	}
	if due, err := st.DueHoldMail(ctx, now.Add(2*time.Hour), 10); err != nil || len(due) != 0 {
		t.Fatalf("due past the deadline: %+v %v", due, err)
	}
}
