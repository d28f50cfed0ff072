package workflow_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
	"github.com/invitegate/invitegate/internal/workflow"
)

// TestExpiryFollowsRedisClock: deadlines are set by Redis' clock, and the
// expirer sweeps by it (it has no clock of its own to lag): a seat comes
// back within 2 s of the deadline by Redis' clock.
func TestExpiryFollowsRedisClock(t *testing.T) {
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: testenv.SharedRedis(t)})
	t.Cleanup(func() { c.Close() })
	ns := testenv.KeyPrefix(t)
	src := newSource(invite.Invitation{Code: "clk", MaxUses: 1, ConfirmWindow: 500 * time.Millisecond})
	res := reserve.New(c, reserve.Config{Namespace: ns, Shards: 1})
	s := workflow.NewSignups(res, src, workflow.SignupsConfig{})
	r, err := s.Reserve(ctx, "clk", testenv.Address(t, "late@example.com"))
	if err != nil || r.Outcome != invite.Held {
		t.Fatalf("hold: %+v %v", r, err)
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go workflow.NewExpirer(res, workflow.ExpirerConfig{}).Run(rctx)
	time.Sleep(time.Until(r.Deadline) + 2*time.Second)
	left, _, err := res.Remaining(ctx, "clk")
	if err != nil {
		t.Fatal(err)
	}
	if left != 1 {
		t.Fatalf("2 s after the hold's deadline (Redis' clock) %d seats remain, want 1: the expirer filters the index by the replica's clock (reserve.ExpireDue)", left)
	}
}
