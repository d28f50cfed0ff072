package reserve_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
)

// ackTimeout is the tests' INVITEGATE_ACK_TIMEOUT: short, so a stopped
// replica costs little, and long enough for a replica on a loaded machine.
const ackTimeout = 300 * time.Millisecond

// ackReserver is a Reserver with AckReplicas 1 over c, seeded from src.
func ackReserver(tb testing.TB, c reserve.Client, src source, ns string, shards int, pipeline reserve.Submitter) *reserve.Reserver {
	tb.Helper()
	r := reserve.New(c, reserve.Config{
		Namespace: ns, Shards: shards, AckReplicas: 1, AckTimeout: ackTimeout,
		Pipeline: pipeline, PipelineAbove: -1,
	})
	seed(tb, r, src)
	return r
}

// claimKey is the key of a's claim on shard s (docs/ARCHITECTURE.md, "Redis
// key schema").
func claimKey(ns string, s int, a email.Address) string {
	return fmt.Sprintf("{%s:%d}:e:%s", ns, s, a.Canonical)
}

// onReplica reads key from the replica at addr (READONLY, for a cluster
// replica); "" when it does not hold it.
func onReplica(tb testing.TB, addr, key string) string {
	tb.Helper()
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr, OnConnect: func(ctx context.Context, cn *redis.Conn) error {
		_ = cn.ReadOnly(ctx).Err() // a cluster replica serves reads only after it; other nodes refuse it
		return nil
	}})
	defer c.Close()
	v, err := c.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return ""
	}
	if err != nil {
		tb.Fatalf("GET %s on replica %s: %v", key, addr, err)
	}
	return v
}

// TestAckReplica: with INVITEGATE_ACK=replica on a primary and a replica
// (followed through Sentinel), a signup is answered only once the replica
// holds it; with the replica stopped the answer is ErrNotReplicated
// (503) after AckTimeout, a retry from another process is not answered
// before the replica holds the claim either, rejections do not wait for
// the missing replica, nothing is admitted twice, and once the replica is
// back every retry of a seat taken meanwhile answers Existing (200).
func TestAckReplica(t *testing.T) {
	g := testenv.StartSentinelGroup(t, testenv.SentinelOptions{})
	client := func(tb testing.TB) *redis.Client {
		c := redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: g.MasterName, SentinelAddrs: g.SentinelAddrs(), PoolSize: 32,
		})
		tb.Cleanup(func() { c.Close() })
		return c
	}
	for _, pipelined := range []bool{false, true} {
		t.Run(fmt.Sprintf("pipeline=%v", pipelined), func(t *testing.T) {
			ctx := context.Background()
			ns := testenv.KeyPrefix(t)
			src := newSource(invite.Invitation{Code: "acked", MaxUses: 30}, invite.Invitation{Code: "other", MaxUses: 5})
			c := client(t)
			var ap reserve.Submitter
			if pipelined {
				// Configured, as the service does by default: the WAIT must
				// still follow each call on its own connection.
				ap = autoPipeline(t, c)
			}
			r := ackReserver(t, c, src, ns, 1, ap)
			// A second process: its own client, its own connections.
			r2 := ackReserver(t, client(t), src, ns, 1, nil)
			replica := g.Replica(t)

			// Replica up: every 201 is already on the replica.
			var wg sync.WaitGroup
			for i := range 10 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					a := testenv.Address(t, fmt.Sprintf("up%d@example.com", i))
					res, err := r.Reserve(ctx, "acked", a)
					if err != nil || res.Outcome != invite.Created {
						t.Errorf("%s with the replica up: %v, %v; want created", a.Canonical, res.Outcome, err)
						return
					}
					if got := onReplica(t, replica.Addr, claimKey(ns, res.Shard, a)); got != "acked" {
						t.Errorf("%s answered created, but the replica's claim is %q", a.Canonical, got)
					}
				}()
			}
			wg.Wait()
			if _, err := r.Reserve(ctx, "other", testenv.Address(t, "up0@example.com")); !errors.Is(err, invite.ErrEmailTaken) {
				t.Fatalf("up0 on another code: %v, want ErrEmailTaken", err)
			}

			replica.Pause(t)
			paused := true
			defer func() {
				if paused {
					replica.Resume(t)
				}
			}()
			late := testenv.Address(t, "late@example.com")
			start := time.Now()
			_, err := r.Reserve(ctx, "acked", late)
			if took := time.Since(start); !errors.Is(err, reserve.ErrNotReplicated) || !errors.Is(err, invite.ErrUnavailable) || took < ackTimeout || took > ackTimeout+2*time.Second {
				t.Fatalf("signup with the replica stopped: %v after %v; want ErrNotReplicated after about %v", err, took, ackTimeout)
			}
			// The seat is taken on the primary alone. A retry through
			// another process (other connections) must not answer 200
			// before the replica holds the claim.
			if res, err := r2.Reserve(ctx, "acked", late); !errors.Is(err, reserve.ErrNotReplicated) {
				t.Fatalf("retry from another process with the replica stopped: %v, %v; want ErrNotReplicated", res.Outcome, err)
			}
			if res, err := r.Reserve(ctx, "acked", late); !errors.Is(err, reserve.ErrNotReplicated) {
				t.Fatalf("retry with the replica stopped: %v, %v; want ErrNotReplicated", res.Outcome, err)
			}
			// Rejections acknowledge nothing: they do not wait for it.
			start = time.Now()
			if _, err := r.Reserve(ctx, "other", testenv.Address(t, "up1@example.com")); !errors.Is(err, invite.ErrEmailTaken) {
				t.Fatalf("an email of another code with the replica stopped: %v, want ErrEmailTaken", err)
			}
			if took := time.Since(start); took >= ackTimeout {
				t.Fatalf("a rejection took %v with the replica stopped; it must not wait for it", took)
			}

			// A crowd on the rest of the seats while the replica is stopped:
			// none is answered created, and none takes more than a seat.
			crowd := make([]email.Address, 40)
			for i := range crowd {
				crowd[i] = testenv.Address(t, fmt.Sprintf("crowd%d@example.com", i))
			}
			for _, a := range crowd {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if res, err := r.Reserve(ctx, "acked", a); err == nil || (!errors.Is(err, reserve.ErrNotReplicated) && !errors.Is(err, invite.ErrFull)) {
						t.Errorf("%s with the replica stopped: %v, %v; want ErrNotReplicated or ErrFull", a.Canonical, res.Outcome, err)
					}
				}()
			}
			wg.Wait()

			replica.Resume(t)
			paused = false
			for _, rr := range []*reserve.Reserver{r2, r} {
				res, err := rr.Reserve(ctx, "acked", late)
				if err != nil || res.Outcome != invite.Existing {
					t.Fatalf("retry after the replica is back: %v, %v; want existing (200)", res.Outcome, err)
				}
				if got := onReplica(t, replica.Addr, claimKey(ns, res.Shard, late)); got != "acked" {
					t.Fatalf("answered existing, but the replica's claim is %q", got)
				}
			}
			held := 0
			for _, a := range crowd {
				res, err := r.Reserve(ctx, "acked", a)
				switch {
				case err == nil && res.Outcome == invite.Existing:
					held++
				case errors.Is(err, invite.ErrFull):
				default:
					t.Fatalf("retry of %s: %v, %v; want existing or full", a.Canonical, res.Outcome, err)
				}
			}
			// 10 before the stop, late, and the crowd's seats: exactly 30.
			if held != 30-10-1 {
				t.Fatalf("%d of the crowd hold a seat, want %d", held, 30-10-1)
			}
			if n, _, err := r.Remaining(ctx, "acked"); err != nil || n != 0 {
				t.Fatalf("%d remaining (%v), want 0", n, err)
			}
		})
	}
}

// TestAckReplicaOnCluster: on a cluster whose masters each have a replica,
// the WAIT runs on the master that owns the email's shard: a signup
// answered created is on that master's replica, one whose master's replica
// is stopped is answered ErrNotReplicated, and signups on the other
// masters go on.
func TestAckReplicaOnCluster(t *testing.T) {
	ctx := context.Background()
	rc := testenv.StartReplicatedCluster(t)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs(), PoolSize: 32})
	defer c.Close()
	ns := testenv.KeyPrefix(t)
	r := ackReserver(t, c, newSource(invite.Invitation{Code: "cl", MaxUses: 200}), ns, 16, autoPipeline(t, c))

	master := func(a email.Address, s int) string {
		m, err := c.MasterForKey(ctx, claimKey(ns, s, a))
		if err != nil {
			t.Fatal(err)
		}
		return m.Options().Addr
	}
	for i := range 30 {
		a := testenv.Address(t, fmt.Sprintf("c%d@example.com", i))
		res, err := r.Reserve(ctx, "cl", a)
		if err != nil || res.Outcome != invite.Created {
			t.Fatalf("%s: %v, %v; want created", a.Canonical, res.Outcome, err)
		}
		rep := rc.ReplicaOf(master(a, res.Shard))
		if got := onReplica(t, rep.Addr, claimKey(ns, res.Shard, a)); got != "cl" {
			t.Fatalf("%s answered created on shard %d, but replica %s holds %q", a.Canonical, res.Shard, rep.Addr, got)
		}
	}

	stopped := rc.Replicas[0]
	stopped.Pause(t)
	var refused, created []email.Address
	for i := 0; len(refused) < 2 || len(created) < 2; i++ {
		if i == 60 {
			t.Fatalf("after 60 signups: %d refused, %d created", len(refused), len(created))
		}
		a := testenv.Address(t, fmt.Sprintf("p%d@example.com", i))
		res, err := r.Reserve(ctx, "cl", a)
		switch {
		case errors.Is(err, reserve.ErrNotReplicated):
			refused = append(refused, a)
		case err == nil && res.Outcome == invite.Created:
			if m := master(a, res.Shard); m == rc.Masters[0].Addr {
				t.Fatalf("%s created on %s, whose replica is stopped", a.Canonical, m)
			}
			created = append(created, a)
		default:
			t.Fatalf("%s: %v, %v", a.Canonical, res.Outcome, err)
		}
	}
	stopped.Resume(t)
	for _, a := range refused {
		res, err := r.Reserve(ctx, "cl", a)
		if err != nil || res.Outcome != invite.Existing {
			t.Fatalf("retry of %s after the replica is back: %v, %v; want existing", a.Canonical, res.Outcome, err)
		}
		if got := onReplica(t, stopped.Addr, claimKey(ns, res.Shard, a)); got != "cl" {
			t.Fatalf("%s answered existing, but the replica holds %q", a.Canonical, got)
		}
	}
}

// TestAckReplicaStealWaitsOnCluster: tokens moved from a shard on one
// master to a shard on another are deposited only once the first master's
// replica holds the steal. Otherwise a failover of that master would give
// the tokens back to their shard while the deposit keeps them too. With
// that replica stopped the move stops after the steal: the tokens are
// stranded (under-admission, repaired by a reseed) and the answer is
// ErrNotReplicated; with it back the next move goes through.
func TestAckReplicaStealWaitsOnCluster(t *testing.T) {
	ctx := context.Background()
	rc := testenv.StartReplicatedCluster(t)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs()})
	defer c.Close()
	ns := testenv.KeyPrefix(t)
	const k = 16
	r := ackReserver(t, c, newSource(invite.Invitation{Code: "mv", MaxUses: k}), ns, k, nil)

	bucket := func(s int) string { return fmt.Sprintf("{%s:%d}:b:mv", ns, s) }
	masterOf := func(key string) string {
		m, err := c.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return m.Options().Addr
	}
	// a's shard s is emptied; every other shard too but j, on another
	// master, which keeps 2 tokens.
	a := testenv.Address(t, "mover@example.com")
	if n, _, err := r.Remaining(ctx, "mv"); err != nil || n != k {
		t.Fatalf("%d remaining (%v), want %d", n, err, k)
	}
	s := r.ShardOf(a.Canonical)
	j := -1
	for i := 0; i < k; i++ {
		if i != s && masterOf(bucket(i)) != masterOf(bucket(s)) {
			j = i
			break
		}
	}
	for i := 0; i < k; i++ {
		tok := 0
		if i == j {
			tok = 2
		}
		if err := c.HSet(ctx, bucket(i), "tok", tok).Err(); err != nil {
			t.Fatal(err)
		}
	}
	rep := rc.ReplicaOf(masterOf(bucket(j)))
	rep.Pause(t)
	_, err := r.Reserve(ctx, "mv", a)
	rep.Resume(t)
	if !errors.Is(err, reserve.ErrNotReplicated) {
		t.Fatalf("signup needing a move, the source's replica stopped: %v; want ErrNotReplicated", err)
	}
	tok := func(i int) int {
		n, err := c.HGet(ctx, bucket(i), "tok").Int()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if tok(j) != 1 || tok(s) != 0 {
		t.Fatalf("after the unconfirmed steal: shard %d has %d tokens (want 1: one taken), shard %d has %d (want 0: nothing deposited)", j, tok(j), s, tok(s))
	}
	if n, err := c.Exists(ctx, claimKey(ns, s, a)).Result(); err != nil || n != 0 {
		t.Fatalf("claim of %s exists (%d, %v) after an unconfirmed move", a.Canonical, n, err)
	}
	got, err := r.Reserve(ctx, "mv", a)
	if err != nil || got.Outcome != invite.Created || got.Shard != s {
		t.Fatalf("signup with the replica back: %+v, %v; want created on shard %d", got, err, s)
	}
	if tok(j) != 0 {
		t.Fatalf("shard %d has %d tokens after the second move, want 0", j, tok(j))
	}
}
