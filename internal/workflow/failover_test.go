package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
	"github.com/invitegate/invitegate/internal/workflow"
)

// staleFailover sets up the failover the issue measured, with real
// processes: a primary A and its replica B; B is cut off (SIGSTOP, its
// link killed) while A takes more signups, which reach MongoDB; then A is
// killed and B promoted with the older data. It returns a client that
// followed the promotion (as go-redis' Sentinel client does), the
// reservations MongoDB holds, and how many of them B still knows.
func staleFailover(t *testing.T, shards, before, after int) (c *redis.Client, persisted []invite.Reservation, st failoverEnv) {
	t.Helper()
	ctx := context.Background()
	a := testenv.StartRedis(t, testenv.RedisOptions{})
	b := testenv.StartRedis(t, testenv.RedisOptions{})
	var addr atomic.Value
	addr.Store(a.Addr)
	c = redis.NewClient(&redis.Options{
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
	st = failoverEnv{Store: newStore(t), ns: testenv.KeyPrefix(t), shards: shards}
	for _, inv := range []invite.Invitation{{Code: "fo", MaxUses: 10}, {Code: "other", MaxUses: 10}} {
		if err := st.CreateInvitation(ctx, inv); err != nil {
			t.Fatal(err)
		}
	}
	const code = "fo"
	s := workflow.NewSignups(st.reserver(c), st.Store, workflow.SignupsConfig{})
	signup := func(i int) invite.Reservation {
		t.Helper()
		em := testenv.Address(t, fmt.Sprintf("p%d@example.com", i))
		r, err := s.Reserve(ctx, code, em)
		if err != nil || r.Outcome != invite.Created {
			t.Fatalf("signup %d on the primary: %+v, %v", i, r, err)
		}
		return invite.Reservation{ID: r.ID, Shard: r.Shard, Code: code, Canonical: em.Canonical, Email: em.Normalized, ReservedAt: time.Now()}
	}
	for i := 0; i < before; i++ {
		persisted = append(persisted, signup(i))
	}
	// B holds everything so far.
	testenv.WaitFor(t, 20*time.Second, "the replica to catch up", func() bool { n, err := c.Wait(ctx, 1, 100*time.Millisecond).Result(); return err == nil && n == 1 })
	b.Pause(t)
	if err := c.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	for i := before; i < before+after; i++ {
		persisted = append(persisted, signup(i))
	}
	// The reconciler wrote every reservation of A to MongoDB.
	if _, err := st.Persist(ctx, persisted); err != nil {
		t.Fatal(err)
	}
	a.Kill(t)
	b.Resume(t)
	if err := bc.ReplicaOf(ctx, "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	addr.Store(b.Addr)
	return c, persisted, st
}

// failoverEnv is MongoDB and the Redis namespace and K the failover runs with.
type failoverEnv struct {
	*persist.Store
	ns     string
	shards int
}

func (e failoverEnv) reserver(c redis.UniversalClient) *reserve.Reserver {
	return reserve.New(c, reserve.Config{Namespace: e.ns, Shards: e.shards})
}

// TestFailoverRecovery: after a failover to a replica that missed the
// newest signups (which MongoDB holds), no seat is handed out until every
// code is rebuilt from MongoDB; then exactly max_uses minus MongoDB's
// count are left, and the lost claims are back.
func TestFailoverRecovery(t *testing.T) {
	for _, k := range []int{1, 4} {
		t.Run(fmt.Sprintf("K=%d", k), func(t *testing.T) {
			ctx := context.Background()
			c, persisted, st := staleFailover(t, k, 4, 3)
			res := st.reserver(c)
			m := workflow.NewFailoverMetrics(nil)
			f := workflow.NewFailover(workflow.NewInvitations(st.Store, res, nil), workflow.FailoverConfig{Metrics: m})
			woken := make(chan struct{}, 100)
			s := workflow.NewSignups(res, st.Store, workflow.SignupsConfig{Stale: func() { woken <- struct{}{} }})

			// The promoted replica refuses to hand out a seat; the signup
			// wakes the recovery.
			if r, err := s.Reserve(ctx, "fo", testenv.Address(t, "new0@example.com")); !errors.Is(err, reserve.ErrHistory) {
				t.Fatalf("a signup on the stale replica: %+v, %v; want ErrHistory", r, err)
			}
			select {
			case <-woken:
			default:
				t.Fatal("the signup did not wake the recovery")
			}
			if why := func() string { _ = f.Recover(ctx); return f.State().Reason() }(); why != "" {
				t.Fatalf("after Recover, still: %s", why)
			}
			if n := testutil.ToFloat64(m.Recoveries); n != 1 {
				t.Fatalf("recoveries = %v, want 1", n)
			}
			// MongoDB holds 7 of 10: exactly 3 more, whatever the demand.
			created := 0
			for i := 0; i < 20; i++ {
				r, err := s.Reserve(ctx, "fo", testenv.Address(t, fmt.Sprintf("new%d@example.com", i)))
				switch {
				case err == nil && r.Outcome == invite.Created:
					created++
				case errors.Is(err, invite.ErrFull):
				default:
					t.Fatalf("new%d: %+v, %v", i, r, err)
				}
			}
			if created != 3 {
				t.Fatalf("created %d after the recovery, want 3 (max 10, MongoDB holds %d)", created, len(persisted))
			}
			// A signup the replica lost is known again.
			lost := persisted[len(persisted)-1]
			if r, err := s.Reserve(ctx, "fo", testenv.Address(t, lost.Email)); err != nil || r.Outcome != invite.Existing {
				t.Fatalf("a signup the replica lost: %+v, %v; want Existing", r, err)
			}
			if _, err := s.Reserve(ctx, "other", testenv.Address(t, lost.Email)); !errors.Is(err, invite.ErrEmailTaken) {
				t.Fatalf("a lost signup's email on another code: %v; want ErrEmailTaken", err)
			}
			// Nothing is stale any more: a second check does nothing.
			if err := f.Recover(ctx); err != nil || testutil.ToFloat64(m.Recoveries) != 1 {
				t.Fatalf("second Recover: %v, recoveries %v", err, testutil.ToFloat64(m.Recoveries))
			}
		})
	}
}

// TestFailoverRecoveryTakesOver: a replica that died mid-recovery (its
// lock and a code's freeze left behind) delays the next one, which
// finishes the work.
func TestFailoverRecoveryTakesOver(t *testing.T) {
	ctx := context.Background()
	c, _, st := staleFailover(t, 4, 2, 2)
	res := st.reserver(c)
	if _, err := res.Lock(ctx, "!failover", time.Second); err != nil { // never released
		t.Fatal(err)
	}
	if _, err := res.Freeze(ctx, "fo", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	f := workflow.NewFailover(workflow.NewInvitations(st.Store, res, nil), workflow.FailoverConfig{})
	if err := f.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if rem, _, err := res.Remaining(ctx, "fo"); err != nil || rem != 6 {
		t.Fatalf("remaining %d, %v; want 6 (10 - 4 in MongoDB)", rem, err)
	}
	s := workflow.NewSignups(res, st.Store, workflow.SignupsConfig{})
	if r, err := s.Reserve(ctx, "fo", testenv.Address(t, "after@example.com")); err != nil || r.Outcome != invite.Created {
		t.Fatalf("after the takeover: %+v, %v", r, err)
	}
}

// TestNoHistoryNoRecovery: a Redis that reports no replication ID
// (miniredis, make run's embedded default) is never taken for stale.
func TestNoHistoryNoRecovery(t *testing.T) {
	ctx := context.Background()
	res := reserve.New(client(t, 2), reserve.Config{Namespace: "h", Shards: 4})
	s := workflow.NewSignups(res, newSource(invite.Invitation{Code: "x", MaxUses: 2}), workflow.SignupsConfig{})
	if r, err := s.Reserve(ctx, "x", testenv.Address(t, "a@example.com")); err != nil || r.Outcome != invite.Created {
		t.Fatalf("%+v, %v", r, err)
	}
	hs, err := res.Histories(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range hs {
		if h.Stale() || h.Current != "" {
			t.Fatalf("shard %d: %+v", i, h)
		}
	}
}
