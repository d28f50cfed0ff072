package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
	"github.com/invitegate/invitegate/internal/workflow"
)

// TestRebuildHoldExpiringBeforeOpenGivesSeatBack: a reseed's (or a
// failover recovery's) Rebuild zeroes the buckets, restamps the live
// holds into the new epoch (counting them), then opens the buckets with
// max_uses - registrations - live. A hold counted by restamp whose
// deadline passes before its bucket is opened is expired by the expirer
// (every replica runs one; expire.lua does not look at the freeze):
// its seat goes back to the zeroed bucket of the new epoch, and the
// "open" step (rebuild.lua: DEL + HSET tok) then overwrites it. The seat
// never comes back (contract: exactly once, within 2 s of the deadline;
// I4). The window is as long as restamp's walk over every hold of every
// shard (all codes), here widened by holds of another code.
func TestRebuildHoldExpiringBeforeOpenGivesSeatBack(t *testing.T) {
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: testenv.SharedRedis(t)})
	t.Cleanup(func() { c.Close() })
	ns := testenv.KeyPrefix(t)
	inv := invite.Invitation{Code: "rx", MaxUses: 2, ConfirmWindow: 1500 * time.Millisecond}
	src := newSource(inv)
	res := reserve.New(c, reserve.Config{Namespace: ns, Shards: 1})
	s := workflow.NewSignups(res, src, workflow.SignupsConfig{})

	// Holds of another code, live for an hour: restamp reads each one.
	const fillers = 6000
	hx := "{" + ns + ":0}:hx"
	far := time.Now().Add(time.Hour).UnixMilli()
	pipe := c.Pipeline()
	for i := 0; i < fillers; i++ {
		canon := fmt.Sprintf("f%d@example.com", i)
		pipe.Set(ctx, "{"+ns+":0}:e:"+canon, fmt.Sprintf("h|fill|%d|0-%d|x", far, i+1), 0)
		pipe.ZAdd(ctx, hx, redis.Z{Score: float64(far), Member: canon})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}

	r, err := s.Reserve(ctx, "rx", testenv.Address(t, "target@example.com"))
	if err != nil || r.Outcome != invite.Held {
		t.Fatalf("hold: %+v %v", r, err)
	}

	// Replicas' expirers sweep all along.
	exp := workflow.NewExpirer(res, workflow.ExpirerConfig{Every: 5 * time.Millisecond})
	ectx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = exp.Run(ectx) }()

	// A reseed of rx starts just before the hold's deadline (Redis'
	// clock; the deadline came from it).
	time.Sleep(time.Until(r.Deadline) - 40*time.Millisecond)
	owner, err := res.Freeze(ctx, "rx", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := res.Rebuild(ctx, inv, 0, owner); err != nil {
		t.Fatal(err)
	}
	t.Logf("rebuild took %v; deadline was %v after its start", time.Since(start), r.Deadline.Sub(start))
	time.Sleep(300 * time.Millisecond) // past the deadline, swept
	stop()
	wg.Wait()
	if n, _ := c.ZScore(ctx, hx, "target@example.com").Result(); n != 0 {
		t.Fatalf("the hold is still indexed (%v): not expired", n)
	}

	// No registration, no live hold: both seats must be free.
	granted := 0
	for i := 0; i < 3; i++ {
		r, err := s.Reserve(ctx, "rx", testenv.Address(t, fmt.Sprintf("n%d@example.com", i)))
		switch {
		case err == nil && r.Outcome == invite.Held:
			granted++
		case errors.Is(err, invite.ErrFull):
		default:
			t.Fatalf("signup %d: %+v %v", i, r, err)
		}
	}
	if granted != 2 {
		t.Fatalf("max_uses 2, nothing registered or held: %d seats granted, want 2 (the expired hold's seat was given back into the zeroed bucket and overwritten by the rebuild's open)", granted)
	}
}
