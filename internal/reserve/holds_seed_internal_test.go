package reserve

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/testenv"
)

// TestHoldsReseedKeepsCapAndWindow: a reseed while holds are live, as
// workflow.settle runs it (Pending drops hold entries: MongoDB gets
// nothing; Rebuild from persisted 0): every live hold still confirms and
// the rebuilt tokens are handed out, never more than max seats in all, and
// the rebuilt buckets keep the window (new seats are holds too).
func TestHoldsReseedKeepsCapAndWindow(t *testing.T) {
	ctx := context.Background()
	const code, max = "rs", 2
	r, raw := holdsOn(t, false, code, max, 30*time.Second)
	held, _ := holdOutcomes(t, r, code, testenv.Emails("rsh", max))
	if len(held) != max {
		t.Fatalf("%d held", len(held))
	}
	owner, err := r.Freeze(ctx, code, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The holds' entries are pending (a reseed writes them to MongoDB's
	// holds before it rebuilds), and none is a registration.
	pending, err := r.Pending(ctx, code)
	if err != nil || len(pending) != max {
		t.Fatalf("pending %d %v, want the %d holds' entries", len(pending), err, max)
	}
	for _, p := range pending {
		if p.Kind != invite.HoldTaken || p.HoldID != held[p.Canonical].ID {
			t.Fatalf("pending entry %+v, want the hold %s", p, held[p.Canonical].ID)
		}
	}
	// MongoDB holds no registration of code: persisted = 0.
	if err := r.Rebuild(ctx, invite.Invitation{Code: code, MaxUses: max, ConfirmWindow: 30 * time.Second}, 0, owner); err != nil {
		t.Fatal(err)
	}
	cwLeft := 0
	for s := 0; s < 4; s++ {
		if v, _ := raw.HGet(ctx, r.keys.bucket(s, code), "cw").Result(); v == "30000" {
			cwLeft++
		}
	}
	seats := 0
	for c, h := range held {
		if out, _, err := r.Confirm(ctx, code, c, h.ID, c); err == nil && out == Confirmed {
			seats++
		}
	}
	plain := 0
	for _, e := range testenv.Emails("rsn", 4) {
		res, err := r.Reserve(ctx, code, testenv.Address(t, e))
		if err == nil {
			seats++
			if res.Outcome == invite.Created {
				plain++
			}
		} else if !errors.Is(err, invite.ErrFull) {
			t.Fatal(err)
		}
	}
	t.Logf("buckets with cw after rebuild: %d/4; plain (non-hold) seats after rebuild: %d", cwLeft, plain)
	if seats > max {
		t.Errorf("I1: %d seats confirmed/taken after a reseed, max %d", seats, max)
	}
	if cwLeft != 4 || plain != 0 {
		t.Errorf("rebuild dropped cw on %d of 4 buckets, %d plain seats: holds silently stop", 4-cwLeft, plain)
	}
}

// TestHoldsSeedKeepsWindow: SeedBuckets recreating a lost bucket gives it
// the invitation's window, as the surviving buckets have.
func TestHoldsSeedKeepsWindow(t *testing.T) {
	ctx := context.Background()
	r, raw := holdsOn(t, false, "sp", 8, time.Minute)
	if err := raw.Del(ctx, r.keys.bucket(2, "sp")).Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.SeedBuckets(ctx, invite.Invitation{Code: "sp", MaxUses: 8, ConfirmWindow: time.Minute}, 0); err != nil {
		t.Fatal(err)
	}
	if v, _ := raw.HGet(ctx, r.keys.bucket(2, "sp"), "cw").Result(); v != "60000" {
		t.Errorf("recreated bucket has cw %q, want 60000", v)
	}
}

// TestHoldsWaitForReplicas: INVITEGATE_ACK=replica with no
// replica: a plain signup is refused (ErrNotReplicated), a hold is
// answered Held, nor a confirmation Confirmed, before a replica holds them:
// with no replica both get ErrNotReplicated, as a plain signup does.
func TestHoldsWaitForReplicas(t *testing.T) {
	ctx := context.Background()
	rdb := sharedRedis(t)
	ns := testenv.KeyPrefix(t)
	plainR := New(rdb, Config{Namespace: ns, Shards: 4, AckReplicas: 1, AckTimeout: 50 * time.Millisecond})
	seedOne(t, plainR, "pl", 4)
	seedOne(t, plainR, "ho", 4)
	for s := 0; s < 4; s++ {
		if err := rdb.HSet(ctx, plainR.keys.bucket(s, "ho"), "cw", 60000).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := plainR.Reserve(ctx, "pl", testenv.Address(t, "p@example.com")); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("plain signup without replica: %v, want ErrNotReplicated", err)
	}
	a := testenv.Address(t, "h@example.com")
	if _, err := plainR.Reserve(ctx, "ho", a); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("hold without replica: %v, want ErrNotReplicated", err)
	}
	claim, err := rdb.Get(ctx, plainR.keys.claim(shardOf(a.Canonical, 4), a.Canonical)).Result()
	if err != nil {
		t.Fatal(err)
	}
	id := strings.Split(claim, "|")[3]
	if _, _, err := plainR.Confirm(ctx, "ho", a.Canonical, id, a.Canonical); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("confirmation without replica: %v, want ErrNotReplicated", err)
	}
}

// TestHoldsFractionalWindow: a cw that is not an integer (written by
// hand) is taken in whole milliseconds, so the hold's claim stays
// readable: it expires and its seat comes back.
func TestHoldsFractionalWindow(t *testing.T) {
	ctx := context.Background()
	r, raw := holdsOn(t, false, "fc", 4, 0)
	for s := 0; s < 4; s++ {
		raw.HSet(ctx, r.keys.bucket(s, "fc"), "cw", "100.5")
	}
	a := testenv.Address(t, "frac@example.com")
	_, err := r.Reserve(ctx, "fc", a) // the seat is taken, the answer an error
	s := shardOf(a.Canonical, 4)
	time.Sleep(200 * time.Millisecond)
	n, _ := r.ExpireDue(ctx, s, 10)
	rem, _, _ := r.Remaining(ctx, "fc")
	t.Logf("first answer: %v; remaining %d of 4", err, rem)
	_, err2 := r.Reserve(ctx, "fc", a)
	claim, _ := raw.Get(ctx, r.keys.claim(s, a.Canonical)).Result()
	t.Logf("claim %q; expired %d; repeat: %v", claim, n, err2)
	if n != 1 {
		t.Errorf("hold with fractional deadline never expires")
	}
}
