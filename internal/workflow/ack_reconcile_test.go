package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
	"github.com/invitegate/invitegate/internal/workflow"
)

// TestAckMongoReconcilerLeavesCommitted: MongoAck, its marks,
// Reserver.Committed and the reconciler with Defer together, on a node and a
// cluster (real redis-server, the MongoDB-wire server): every signup answered
// 201 is acknowledged by the reconciler without a second insert, and every
// one whose wait timed out (503) is written by it.
func TestAckMongoReconcilerLeavesCommitted(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		t.Run(fmt.Sprint("cluster=", cluster), func(t *testing.T) {
			ctx := context.Background()
			st := newStore(t)
			var rdb redis.UniversalClient
			if cluster {
				rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: testenv.SharedRedisCluster(t)})
			} else {
				rdb = redis.NewClient(&redis.Options{Addr: testenv.SharedRedis(t)})
			}
			t.Cleanup(func() { rdb.Close() })
			rr := reserve.New(rdb, reserve.Config{Namespace: testenv.KeyPrefix(t), Shards: 4})
			sig := workflow.NewSignups(rr, st, workflow.SignupsConfig{})
			commit := persist.NewCommitter(st, persist.CommitterConfig{})
			t.Cleanup(commit.Close)
			ok := workflow.NewMongoAck(sig, st, commit, 5*time.Second, nil)
			fail := workflow.NewMongoAck(sig, st, commit, time.Nanosecond, nil) // every wait times out: 503
			if err := st.CreateInvitation(ctx, invite.Invitation{Code: "pc", MaxUses: 100}); err != nil {
				t.Fatal(err)
			}
			const nOK, nFail = 20, 5
			for i := range nOK + nFail {
				a, _ := email.Parse(fmt.Sprintf("p%d@example.com", i), email.Options{})
				r := ok
				if i >= nOK {
					r = fail
				}
				_, err := r.Reserve(ctx, "pc", a)
				if i < nOK && err != nil {
					t.Fatalf("signup %d: %v", i, err)
				}
				if i >= nOK && !errors.Is(err, invite.ErrUnavailable) {
					t.Fatalf("signup %d with a wait that times out: %v, want ErrUnavailable (503)", i, err)
				}
			}
			m := persist.NewMetrics(nil)
			rc := persist.NewReconciler(rr, st, persist.ReconcilerConfig{Consumer: "p", Defer: 2 * time.Second, Metrics: m, StatsEvery: time.Hour})
			rctx, cancel := context.WithCancel(ctx)
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); rc.Run(rctx) }()
			deadline := time.Now().Add(time.Minute)
			for time.Now().Before(deadline) {
				var n int64
				for s := range 4 {
					b, _, _ := rr.Backlog(ctx, s)
					n += b
				}
				if n == 0 {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			cancel()
			wg.Wait()
			cnt, _ := st.Count(ctx, "pc")
			t.Logf("committed %v written %v duplicate %v; MongoDB holds %d",
				testutil.ToFloat64(m.Rows.WithLabelValues("committed")),
				testutil.ToFloat64(m.Rows.WithLabelValues("written")),
				testutil.ToFloat64(m.Rows.WithLabelValues("duplicate")), cnt)
			if cnt != nOK+nFail {
				t.Errorf("MongoDB holds %d, want %d", cnt, nOK+nFail)
			}
			if got := testutil.ToFloat64(m.Rows.WithLabelValues("committed")); got != nOK {
				t.Errorf("committed %v, want %d", got, nOK)
			}
		})
	}
}

// TestAckMongoRefusesPastTheCap: Redis admits past the cap (seeded with 12
// seats for a code MongoDB caps at 3, as a stale replica would); with
// INVITEGATE_ACK=mongo, 12 concurrent signups get exactly 3 answers 201,
// the other 9 are 410 (full), never 201, and MongoDB holds 3. The
// reconciler then settles the 9 entries as refused, writing nothing.
func TestAckMongoRefusesPastTheCap(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		t.Run(fmt.Sprint("cluster=", cluster), func(t *testing.T) {
			ctx := context.Background()
			st := newStore(t)
			var rdb redis.UniversalClient
			if cluster {
				rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: testenv.SharedRedisCluster(t)})
			} else {
				rdb = redis.NewClient(&redis.Options{Addr: testenv.SharedRedis(t)})
			}
			t.Cleanup(func() { rdb.Close() })
			rr := reserve.New(rdb, reserve.Config{Namespace: testenv.KeyPrefix(t), Shards: 4})
			if err := st.CreateInvitation(ctx, invite.Invitation{Code: "cap", MaxUses: 3}); err != nil {
				t.Fatal(err)
			}
			if err := rr.SeedBuckets(ctx, invite.Invitation{Code: "cap", MaxUses: 12}, 0); err != nil {
				t.Fatal(err)
			}
			if err := rr.MarkSeeded(ctx); err != nil {
				t.Fatal(err)
			}
			sig := workflow.NewSignups(rr, st, workflow.SignupsConfig{})
			commit := persist.NewCommitter(st, persist.CommitterConfig{})
			t.Cleanup(commit.Close)
			ack := workflow.NewMongoAck(sig, st, commit, 5*time.Second, nil)
			var created, full sync.Map
			var wg sync.WaitGroup
			for i := range 12 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					a, _ := email.Parse(fmt.Sprintf("c%d@example.com", i), email.Options{})
					res, err := ack.Reserve(ctx, "cap", a)
					switch {
					case err == nil && res.Outcome == invite.Created:
						created.Store(a.Canonical, true)
					case errors.Is(err, invite.ErrFull):
						full.Store(a.Canonical, true)
					default:
						t.Errorf("%s: %+v %v", a.Canonical, res, err)
					}
				}()
			}
			wg.Wait()
			count := func(m *sync.Map) (n int) {
				m.Range(func(_, _ any) bool { n++; return true })
				return n
			}
			if c, f := count(&created), count(&full); c != 3 || f != 9 {
				t.Fatalf("%d answered 201, %d answered 410; want 3 and 9", c, f)
			}
			created.Range(func(k, _ any) bool {
				if reg, ok, _ := st.Registration(ctx, k.(string)); !ok || reg.Invitation != "cap" {
					t.Errorf("%s answered 201 but not in MongoDB", k)
				}
				return true
			})
			m := persist.NewMetrics(nil)
			rc := persist.NewReconciler(rr, st, persist.ReconcilerConfig{Consumer: "p", Defer: time.Second, Metrics: m, StatsEvery: time.Hour})
			rctx, cancel := context.WithCancel(ctx)
			var rwg sync.WaitGroup
			rwg.Add(1)
			go func() { defer rwg.Done(); rc.Run(rctx) }()
			testenv.WaitFor(t, time.Minute, "the streams settled", func() bool {
				var n int64
				for s := range 4 {
					b, _, _ := rr.Backlog(ctx, s)
					n += b
				}
				return n == 0
			})
			cancel()
			rwg.Wait()
			if cnt, _ := st.Count(ctx, "cap"); cnt != 3 {
				t.Fatalf("MongoDB holds %d, want 3", cnt)
			}
			if r, c := testutil.ToFloat64(m.Rows.WithLabelValues("refused")), testutil.ToFloat64(m.Rows.WithLabelValues("committed")); r != 9 || c != 3 {
				t.Fatalf("reconciler: refused %v, committed %v; want 9 and 3", r, c)
			}
		})
	}
}
