package persist

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
)

// TestReconcilerDropsVanishedEntries: a reconciler holds a batch it read,
// and before it writes, half the batch disappears from the stream (as
// after a failover to a replica that never received them, whose signups
// were answered 503 under ack=replica). With DropVanished only the entries
// the stream still holds are written and the others counted "vanished";
// without it (ack=redis) all are written. A Redis wiped meanwhile keeps
// nothing: the held batch is the only copy, and all of it is written.
// Real redis-server, node and cluster, and the MongoDB-wire server.
func TestReconcilerDropsVanishedEntries(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		for _, tc := range []struct{ drop, wipe bool }{{true, false}, {false, false}, {true, true}} {
			drop := tc.drop
			t.Run(fmt.Sprintf("cluster=%v/drop=%v/wipe=%v", cluster, drop, tc.wipe), func(t *testing.T) {
				ctx := context.Background()
				var rdb redis.UniversalClient
				if cluster {
					c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: testenv.SharedRedisCluster(t)})
					t.Cleanup(func() { c.Close() })
					rdb = c
				} else {
					c := redis.NewClient(&redis.Options{Addr: testenv.SharedRedis(t)})
					t.Cleanup(func() { c.Close() })
					rdb = c
				}
				ns := testenv.KeyPrefix(t)
				res := reserve.New(rdb, reserve.Config{Namespace: ns, Shards: 1})
				inv := invite.Invitation{Code: "v", MaxUses: 10}
				if err := res.SeedBuckets(ctx, inv, 0); err != nil {
					t.Fatal(err)
				}
				if err := res.MarkSeeded(ctx); err != nil {
					t.Fatal(err)
				}
				st := NewStore(testenv.MongoDatabase(t), nil, nil)
				if err := st.EnsureSchema(ctx); err != nil {
					t.Fatal(err)
				}
				if err := st.CreateInvitation(ctx, inv); err != nil {
					t.Fatal(err)
				}
				for i := range 6 {
					a, _ := email.Parse(fmt.Sprintf("v%d@example.com", i), email.Options{})
					if _, err := res.Reserve(ctx, "v", a); err != nil {
						t.Fatal(err)
					}
				}
				var batch []invite.Reservation
				for len(batch) == 0 { // the first read creates the group
					b, err := res.Read(ctx, 0, "c", 100, -1)
					if err != nil {
						t.Fatal(err)
					}
					batch = b
				}
				if len(batch) != 6 {
					t.Fatalf("read %d entries, want 6", len(batch))
				}
				// Entries 0, 2, 4 leave the stream while the batch is held,
				// or the whole of Redis goes.
				if tc.wipe {
					testenv.Wipe(t, rdb, ns)
				} else if err := res.Ack(ctx, 0, batch[0].ID, batch[2].ID, batch[4].ID); err != nil {
					t.Fatal(err)
				}
				m := NewMetrics(nil)
				rc := NewReconciler(res, st, ReconcilerConfig{Consumer: "c", DropVanished: drop, Metrics: m})
				log := logrus.New()
				log.SetOutput(io.Discard)
				if left := rc.attempt(ctx, log, 0, batch); len(left) != 0 {
					t.Fatalf("%d entries left to retry", len(left))
				}
				want := 6
				if drop && !tc.wipe {
					want = 3
				}
				if n, _ := st.Count(ctx, "v"); n != want {
					t.Fatalf("MongoDB holds %d, want %d", n, want)
				}
				for i, r := range batch {
					_, ok, _ := st.Registration(ctx, r.Canonical)
					if vanished := i%2 == 0 && !tc.wipe; ok == (drop && vanished) {
						t.Errorf("entry %d (vanished %v): in MongoDB %v", i, vanished, ok)
					}
				}
				if got := testutil.ToFloat64(m.Rows.WithLabelValues("vanished")); got != float64(6-want) {
					t.Fatalf("vanished = %v, want %d", got, 6-want)
				}
				if n, _, _ := res.Backlog(ctx, 0); n != 0 {
					t.Fatalf("backlog %d after the batch, want 0", n)
				}
			})
		}
	}
}
