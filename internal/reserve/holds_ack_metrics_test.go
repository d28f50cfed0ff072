package reserve_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
)

// TestAckReplicaHoldCountedOnce: with INVITEGATE_ACK=replica, a hold whose
// first WAIT came back short is answered 503 (ErrNotReplicated) although
// Redis took it; the client's retry gets the same hold (HeldAgain, 202)
// and it is then confirmed. invitegate_holds_created_total must count
// that hold once ("each counted by the replica that did it, once per
// hold"): result() counts only a reply that reached it as a new hold, so
// a hold whose first answer was ErrNotReplicated is never counted, while
// the confirmation is.
func TestAckReplicaHoldCountedOnce(t *testing.T) {
	ctx := context.Background()
	p := testenv.StartRedis(t, testenv.RedisOptions{})
	rep := testenv.StartRedis(t, testenv.RedisOptions{ReplicaOf: p.Addr})
	c := redis.NewClient(&redis.Options{Addr: p.Addr})
	t.Cleanup(func() { c.Close() })
	testenv.WaitFor(t, 20*time.Second, "the replica to attach", func() bool {
		n, err := c.Wait(ctx, 1, 100*time.Millisecond).Result()
		return err == nil && n == 1
	})
	m := reserve.NewMetrics(nil)
	r := reserve.New(c, reserve.Config{Namespace: testenv.KeyPrefix(t), Shards: 1, AckReplicas: 1, AckTimeout: ackTimeout, Metrics: m})
	seed(t, r, newSource(invite.Invitation{Code: "ack-hold", MaxUses: 5, ConfirmWindow: time.Minute}))
	a := testenv.Address(t, "once@example.com")

	rep.Pause(t)
	_, err := r.Reserve(ctx, "ack-hold", a)
	rep.Resume(t)
	if !errors.Is(err, reserve.ErrNotReplicated) {
		t.Fatalf("hold with the replica paused: %v, want ErrNotReplicated", err)
	}
	var res invite.Result
	testenv.WaitFor(t, 20*time.Second, "the retry to be acknowledged", func() bool {
		res, err = r.Reserve(ctx, "ack-hold", a)
		return err == nil
	})
	if res.Outcome != invite.HeldAgain {
		t.Fatalf("retry: %+v, want HeldAgain", res)
	}
	out, _, err := r.Confirm(ctx, "ack-hold", a.Canonical, res.ID, a.Normalized)
	if err != nil || out != reserve.Confirmed {
		t.Fatalf("confirm: %v %v", out, err)
	}
	created, confirmed := testutil.ToFloat64(m.HoldsCreated), testutil.ToFloat64(m.HoldsConfirmed)
	if created != 1 || confirmed != 1 {
		t.Fatalf("holds_created_total = %v, holds_confirmed_total = %v; want 1 and 1 (one hold, taken and confirmed)", created, confirmed)
	}
}
