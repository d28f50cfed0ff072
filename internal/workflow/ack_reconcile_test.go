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
