package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
	"github.com/invitegate/invitegate/internal/workflow"
)

// slowHolds is MongoDB for a seeder that read the live holds, then was
// slow (a GC pause, a long SeedAll over many codes, a lock wait).
type slowHolds struct {
	*memSource
	read, release chan struct{}
}

func (s *slowHolds) LiveHolds(ctx context.Context, code string, now time.Time) ([]persist.Hold, error) {
	hs, err := s.memSource.LiveHolds(ctx, code, now)
	close(s.read)
	<-s.release
	return hs, err
}

// TestSeedAllRacingExpiryGivesBackOnce: two replicas seed a wiped Redis at
// once; one read MongoDB's live holds just before a hold's deadline and
// restores it after the other's seeding restored it and the expirer gave
// its seat back. The seat must not come back twice (I1').
func TestSeedAllRacingExpiryGivesBackOnce(t *testing.T) {
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: testenv.SharedRedis(t)})
	t.Cleanup(func() { c.Close() })
	ns := testenv.KeyPrefix(t)
	const window = 600 * time.Millisecond
	src := newSource(invite.Invitation{Code: "rh", MaxUses: 1, ConfirmWindow: window})
	ra := reserve.New(c, reserve.Config{Namespace: ns, Shards: 1})
	a := workflow.NewSignups(ra, src, workflow.SignupsConfig{})
	held := testenv.Address(t, "held@example.com")
	r, err := a.Reserve(ctx, "rh", held)
	if err != nil || r.Outcome != invite.Held {
		t.Fatalf("hold: %+v %v", r, err)
	}
	// The reconciler recorded the hold.
	src.hold(persist.Hold{Canonical: held.Canonical, Invitation: "rh", HoldID: r.ID, Deadline: r.Deadline, State: persist.HoldHeld})

	testenv.Wipe(t, c, ns)
	slow := &slowHolds{memSource: src, read: make(chan struct{}), release: make(chan struct{})}
	b := workflow.NewSignups(reserve.New(c, reserve.Config{Namespace: ns, Shards: 1}), slow, workflow.SignupsConfig{})
	done := make(chan error, 1)
	go func() { done <- b.SeedAll(ctx) }()
	<-slow.read // b read the hold as live
	if err := a.SeedAll(ctx); err != nil {
		t.Fatal(err)
	}
	exp := workflow.NewExpirer(ra, workflow.ExpirerConfig{})
	time.Sleep(time.Until(r.Deadline) + 50*time.Millisecond)
	n1, err := exp.Sweep(ctx)
	if err != nil || n1 != 1 {
		t.Fatalf("first sweep after the deadline: %d %v, want the hold expired", n1, err)
	}
	close(slow.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	n2, err := exp.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	granted := 0
	for i := 0; i < 3; i++ {
		r, err := a.Reserve(ctx, "rh", testenv.Address(t, fmt.Sprintf("n%d@example.com", i)))
		switch {
		case err == nil && r.Outcome == invite.Held:
			granted++
		case errors.Is(err, invite.ErrFull):
		default:
			t.Fatalf("signup %d: %+v %v", i, r, err)
		}
	}
	if granted > 1 {
		t.Fatalf("max_uses 1: %d new holds granted after the seeding race (second sweep expired %d: the stale restore put the expired hold back and its seat came back again)", granted, n2)
	}
}

// confirmsAfterRead is MongoDB where a hold's confirmation is written
// right after a seeder read the live holds.
type confirmsAfterRead struct {
	*memSource
	then func()
}

func (s *confirmsAfterRead) LiveHolds(ctx context.Context, code string, now time.Time) ([]persist.Hold, error) {
	hs, err := s.memSource.LiveHolds(ctx, code, now)
	s.then()
	return hs, err
}

// TestSeedCountsAHoldConfirmedMeanwhileOnce: a hold confirmed between a
// seeding's read of the live holds and its read of the registrations is
// in both reads; it takes one seat (the registration's), not two, and its
// email is registered, not held.
func TestSeedCountsAHoldConfirmedMeanwhileOnce(t *testing.T) {
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: testenv.SharedRedis(t)})
	t.Cleanup(func() { c.Close() })
	src := newSource(invite.Invitation{Code: "cm", MaxUses: 3, ConfirmWindow: time.Minute})
	a := testenv.Address(t, "confirmed@example.com")
	src.hold(persist.Hold{Canonical: a.Canonical, Invitation: "cm", HoldID: "1-0", Deadline: time.Now().Add(time.Minute), State: persist.HoldHeld})
	res := reserve.New(c, reserve.Config{Namespace: testenv.KeyPrefix(t), Shards: 2})
	s := workflow.NewSignups(res, &confirmsAfterRead{memSource: src, then: func() { src.register(a.Canonical, "cm") }}, workflow.SignupsConfig{})
	if err := s.SeedAll(ctx); err != nil {
		t.Fatal(err)
	}
	if left, _, err := res.Remaining(ctx, "cm"); err != nil || left != 2 {
		t.Fatalf("remaining %d (%v), want 2: the confirmed hold counted once", left, err)
	}
	if r, err := s.Reserve(ctx, "cm", a); err != nil || r.Outcome != invite.Existing {
		t.Fatalf("the confirmed email: %+v %v, want Existing (registered, not held)", r, err)
	}
}
