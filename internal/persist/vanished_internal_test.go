package persist

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
)

// failedOver is a real Reserver whose Redis reports another replication ID
// from the moment switched is set, as after a failover.
type failedOver struct {
	*reserve.Reserver
	switched bool
}

func (q *failedOver) ReplicationID(ctx context.Context, shard int) (string, error) {
	id, err := q.Reserver.ReplicationID(ctx, shard)
	if q.switched {
		id = "promoted-" + id
	}
	return id, err
}

func discard() logrus.FieldLogger {
	log := logrus.New()
	log.SetOutput(io.Discard)
	return log
}

// TestReconcilerDropsVanishedEntries: a reconciler holds a batch it read,
// and before it writes, half the batch disappears from the stream. When
// Redis changed history meanwhile (a failover promoted a replica that
// never received them: under ack=replica their signups got 503), the
// DropVanished reconciler writes only the entries the stream still holds
// and counts the others "vanished". Without a history change (entries
// acknowledged by another consumer, a Redis wiped and refilled: the held
// batch is the only copy) and without DropVanished (ack=redis), all are
// written. Real redis-server, node and cluster, and the MongoDB-wire
// server.
func TestReconcilerDropsVanishedEntries(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		for _, tc := range []struct {
			drop, failover, wipe bool
			written              int
		}{
			{drop: true, failover: true, written: 3},
			{drop: false, failover: true, written: 6},
			{drop: true, failover: false, written: 6},
			{drop: true, wipe: true, written: 6},
		} {
			t.Run(fmt.Sprintf("cluster=%v/drop=%v/failover=%v/wipe=%v", cluster, tc.drop, tc.failover, tc.wipe), func(t *testing.T) {
				ctx := context.Background()
				rdb := testenv.SharedRedisClient(t, cluster)
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
				q := &failedOver{Reserver: res}
				m := NewMetrics(nil)
				rc := NewReconciler(q, st, ReconcilerConfig{Consumer: "c", DropVanished: tc.drop, Metrics: m})
				from := rc.history(ctx, 0)
				if tc.drop && from == "" {
					t.Fatal("redis-server reports no replication ID")
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
				// or the whole of Redis goes and another replica's read
				// creates the group again.
				if tc.wipe {
					testenv.Wipe(t, rdb, ns)
					if _, err := res.Read(ctx, 0, "other", 100, -1); err != nil {
						t.Fatal(err)
					}
				} else if err := res.Ack(ctx, 0, batch[0].ID, batch[2].ID, batch[4].ID); err != nil {
					t.Fatal(err)
				}
				q.switched = tc.failover
				if left := rc.attempt(ctx, discard(), 0, batch, from); len(left) != 0 {
					t.Fatalf("%d entries left to retry", len(left))
				}
				if n, _ := st.Count(ctx, "v"); n != tc.written {
					t.Fatalf("MongoDB holds %d, want %d", n, tc.written)
				}
				for i, r := range batch {
					_, ok, _ := st.Registration(ctx, r.Canonical)
					if dropped := tc.written == 3 && i%2 == 0; ok == dropped {
						t.Errorf("entry %d (dropped %v): in MongoDB %v", i, dropped, ok)
					}
				}
				if got := testutil.ToFloat64(m.Rows.WithLabelValues("vanished")); got != float64(6-tc.written) {
					t.Fatalf("vanished = %v, want %d", got, 6-tc.written)
				}
			})
		}
	}
}

// TestReconcilerParksRowsWithoutInvitation: a reservation whose code lost
// its invitation document (a tool wrote max_uses 0) is left pending, not
// refused and not retried in a loop: the shard goes on writing the other
// codes' reservations, and the parked one is written once the invitation
// is fixed, taken over after ClaimIdle.
func TestReconcilerParksRowsWithoutInvitation(t *testing.T) {
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: testenv.SharedRedis(t)})
	t.Cleanup(func() { c.Close() })
	res := reserve.New(c, reserve.Config{Namespace: testenv.KeyPrefix(t), Shards: 1})
	db := testenv.MongoDatabase(t)
	st := NewStore(db, nil, nil)
	if err := st.EnsureSchema(ctx); err != nil {
		t.Fatal(err)
	}
	for _, code := range []string{"gone", "good"} {
		inv := invite.Invitation{Code: code, MaxUses: 10}
		if err := st.CreateInvitation(ctx, inv); err != nil {
			t.Fatal(err)
		}
		if err := res.SeedBuckets(ctx, inv, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := res.MarkSeeded(ctx); err != nil {
		t.Fatal(err)
	}
	reserveOn := func(code string, names ...string) {
		for _, n := range names {
			a, _ := email.Parse(n+"@example.com", email.Options{})
			if _, err := res.Reserve(ctx, code, a); err != nil {
				t.Fatal(err)
			}
		}
	}
	setMax := func(v any) {
		if _, err := db.Collection(InvitationsCollection).UpdateOne(ctx, bson.D{{Key: "_id", Value: "gone"}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "max_uses", Value: v}}}}); err != nil {
			t.Fatal(err)
		}
	}
	reserveOn("gone", "g0")
	setMax(0)
	m := NewMetrics(nil)
	rc := NewReconciler(res, st, ReconcilerConfig{Consumer: "a", DropVanished: true, Logger: discard(), Metrics: m, ClaimIdle: time.Second})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); rc.Run(rctx) }()
	defer func() { cancel(); <-done }()
	testenv.WaitFor(t, 30*time.Second, "the parked row counted", func() bool {
		return testutil.ToFloat64(m.Rows.WithLabelValues("no_invitation")) >= 1
	})
	reserveOn("good", "ok0", "ok1")
	testenv.WaitFor(t, 30*time.Second, "good's reservations written behind the parked one", func() bool {
		n, _ := st.Count(ctx, "good")
		return n == 2
	})
	if n, _ := st.Count(ctx, "gone"); n != 0 {
		t.Fatalf("%d registrations on a code without usable invitation", n)
	}
	setMax(int32(10))
	testenv.WaitFor(t, 30*time.Second, "the parked row written once the invitation is fixed", func() bool {
		n, _ := st.Count(ctx, "gone")
		return n == 1
	})
	if r := testutil.ToFloat64(m.Rows.WithLabelValues("refused")); r != 0 {
		t.Fatalf("refused %v, want 0", r)
	}
}
