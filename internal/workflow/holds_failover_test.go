package workflow_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/confirm"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
	"github.com/invitegate/invitegate/internal/workflow"
)

// TestFailoverRestoresNewerHoldOverStaleDueHold: an email's first hold
// passes its deadline on the primary A; the email signs up again on the
// same code and gets a new hold (202); the reconciler writes both holds
// and the expiry to MongoDB. The replica B missed all of that (it still
// has the first hold, now past its deadline) and is promoted. The
// recovery restores MongoDB's live holds with restorehold.lua, which
// writes only where the email has no claim: the stale, due claim of the
// first hold stays, the new hold is not restored, restamp counts neither,
// and the 202'd hold that MongoDB holds is gone: its confirmation before
// its deadline is refused and its seat is handed out again.
func TestFailoverRestoresNewerHoldOverStaleDueHold(t *testing.T) {
	ctx := context.Background()
	a := testenv.StartRedis(t, testenv.RedisOptions{})
	b := testenv.StartRedis(t, testenv.RedisOptions{})
	var addr atomic.Value
	addr.Store(a.Addr)
	c := redis.NewClient(&redis.Options{
		Addr: "primary", MaxRetries: -1,
		Dialer: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr.Load().(string))
		},
	})
	t.Cleanup(func() { c.Close() })
	bc := redis.NewClient(&redis.Options{Addr: b.Addr})
	t.Cleanup(func() { bc.Close() })
	host, port, _ := net.SplitHostPort(a.Addr)
	if err := bc.ReplicaOf(ctx, host, port).Err(); err != nil {
		t.Fatal(err)
	}
	st := newStore(t)
	const code = "fh"
	if err := st.CreateInvitation(ctx, invite.Invitation{Code: code, MaxUses: 1, ConfirmWindow: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	ns := testenv.KeyPrefix(t)
	res := reserve.New(c, reserve.Config{Namespace: ns, Shards: 1})
	s := workflow.NewSignups(res, st, workflow.SignupsConfig{})
	e := testenv.Address(t, "again@example.com")

	first, err := s.Reserve(ctx, code, e)
	if err != nil || first.Outcome != invite.Held {
		t.Fatalf("first hold: %+v %v", first, err)
	}
	testenv.WaitFor(t, 20*time.Second, "the replica to catch up", func() bool {
		n, err := c.Wait(ctx, 1, 100*time.Millisecond).Result()
		return err == nil && n == 1
	})
	b.Pause(t)
	if err := c.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(first.Deadline) + 50*time.Millisecond)
	second, err := s.Reserve(ctx, code, e) // expires the first (reserve.lua 13), holds again
	if err != nil || second.Outcome != invite.Held || second.ID == first.ID {
		t.Fatalf("second hold: %+v %v", second, err)
	}
	// The reconciler wrote A's stream: first hold, its expiry, second hold.
	pend, err := res.Pending(ctx, code)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := st.Persist(ctx, pend); err != nil {
		t.Fatal(out, err)
	}
	if hs, err := st.LiveHolds(ctx, code, time.Now()); err != nil || len(hs) != 1 || hs[0].HoldID != second.ID {
		t.Fatalf("MongoDB's live holds: %+v %v; want the second hold", hs, err)
	}

	a.Kill(t)
	b.Resume(t)
	if err := bc.ReplicaOf(ctx, "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	addr.Store(b.Addr)
	f := workflow.NewFailover(workflow.NewInvitations(st, res, nil), workflow.FailoverConfig{})
	if err := f.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if time.Until(second.Deadline) < 200*time.Millisecond {
		t.Skipf("the recovery took too long (%v left of the window)", time.Until(second.Deadline))
	}
	r, err := s.Confirm(ctx, confirm.Hold{Code: code, HoldID: second.ID, Canonical: e.Canonical, Email: e.Normalized})
	if err != nil || r.Outcome != invite.Created {
		t.Fatalf("confirming the 202'd hold MongoDB holds, %v before its deadline, after the failover: %+v %v; want Created",
			time.Until(second.Deadline).Round(time.Millisecond), r, err)
	}
}
