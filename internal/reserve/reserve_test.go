package reserve_test

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
	"github.com/invitegate/invitegate/scripts/lua"
)

// memSource is an in-memory Source standing in for MongoDB.
// source is the invitations MongoDB holds, as seeding reads them.
type source []invite.Invitation

func newSource(invs ...invite.Invitation) source { return invs }

// backend is a Redis deployment the tests run against.
type backend struct {
	name     string
	client   func(testing.TB) redis.UniversalClient
	pipeline bool
}

func realBackends() []backend {
	return []backend{
		{name: "redis", client: func(tb testing.TB) redis.UniversalClient {
			c := redis.NewClient(&redis.Options{Addr: testenv.SharedRedis(tb), PoolSize: 64, PoolTimeout: 30 * time.Second})
			tb.Cleanup(func() { c.Close() })
			return c
		}},
		{name: "cluster", client: func(tb testing.TB) redis.UniversalClient {
			c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: testenv.SharedRedisCluster(tb), PoolSize: 64, PoolTimeout: 30 * time.Second})
			tb.Cleanup(func() { c.Close() })
			return c
		}},
	}
}

// pipelinedBackends are realBackends with the hot path's script calls
// coalesced by go-redis' autopipeliner, as the service runs by default
// (INVITEGATE_REDIS_PIPELINE).
func pipelinedBackends() []backend {
	var out []backend
	for _, b := range realBackends() {
		out = append(out, backend{b.name + "+pipeline", b.client, true})
	}
	return out
}

// seed writes src's buckets into Redis and marks every shard seeded, as
// the seeding workflow does for a MongoDB without registrations
// (internal/workflow owns seeding and has its own tests).
func seed(tb testing.TB, r *reserve.Reserver, src source) {
	tb.Helper()
	ctx := context.Background()
	for _, inv := range src {
		if err := r.SeedBuckets(ctx, inv, 0); err != nil {
			tb.Fatal(err)
		}
	}
	if err := r.MarkSeeded(ctx); err != nil {
		tb.Fatal(err)
	}
}

// reserver is newReserver on a fresh client of b.
func (b backend) reserver(tb testing.TB, src source, shards int, now func() time.Time) *reserve.Reserver {
	tb.Helper()
	c := b.client(tb)
	cfg := reserve.Config{Namespace: testenv.KeyPrefix(tb), Shards: shards, Now: now}
	if b.pipeline {
		cfg.Pipeline = autoPipeline(tb, c)
		cfg.PipelineAbove = -1 // every call, however few: the path under test
	}
	r := reserve.New(c, cfg)
	seed(tb, r, src)
	return r
}

func autoPipeline(tb testing.TB, c redis.UniversalClient) *redis.AutoPipeliner {
	tb.Helper()
	var ap *redis.AutoPipeliner
	var err error
	switch c := c.(type) {
	case *redis.Client:
		ap, err = c.AsyncAutoPipeline()
	case *redis.ClusterClient:
		ap, err = c.AsyncAutoPipeline()
	default:
		tb.Fatalf("no autopipeliner for %T", c)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return ap
}

func miniBackend() backend {
	return backend{name: "miniredis", client: func(tb testing.TB) redis.UniversalClient {
		m := miniredis.RunT(tb)
		c := redis.NewClient(&redis.Options{Addr: m.Addr()})
		tb.Cleanup(func() { c.Close() })
		return c
	}}
}

func newReserver(tb testing.TB, c redis.UniversalClient, src source, shards int, now func() time.Time) *reserve.Reserver {
	tb.Helper()
	r := reserve.New(c, reserve.Config{Namespace: testenv.KeyPrefix(tb), Shards: shards, Now: now})
	seed(tb, r, src)
	return r
}

// eachK runs test as a subtest "backend/K=k" on every backend, once with
// one shard and once with sixteen.
func eachK(t *testing.T, backends []backend, test func(t *testing.T, b backend, k int)) {
	for _, b := range backends {
		for _, k := range []int{1, 16} {
			t.Run(fmt.Sprintf("%s/K=%d", b.name, k), func(t *testing.T) { test(t, b, k) })
		}
	}
}

func TestOutcomes(t *testing.T) {
	eachK(t, append(append(realBackends(), pipelinedBackends()...), miniBackend()), func(t *testing.T, b backend, k int) {
		ctx := context.Background()
		now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
		src := newSource(
			invite.Invitation{Code: "x", MaxUses: 2},
			invite.Invitation{Code: "y", MaxUses: 1},
			invite.Invitation{Code: "off", MaxUses: 5, Disabled: true},
			invite.Invitation{Code: "old", MaxUses: 5, ExpiresAt: now.Add(-time.Minute)},
		)
		r := b.reserver(t, src, k, func() time.Time { return now })

		steps := []struct {
			code, email string
			want        invite.Outcome
			wantErr     error
		}{
			{"x", "a@example.com", invite.Created, nil},
			{"x", "A@Example.com", invite.Existing, nil},
			{"y", "a@example.com", 0, invite.ErrEmailTaken},
			{"x", "b@example.com", invite.Created, nil},
			{"x", "c@example.com", 0, invite.ErrFull},
			{"x", "a@example.com", invite.Existing, nil}, // full, but registered here: 200
			{"y", "d@example.com", invite.Created, nil},
			{"y", "a@example.com", 0, invite.ErrEmailTaken}, // registered elsewhere beats full: 409
			{"off", "e@example.com", 0, invite.ErrDisabled},
			{"old", "e@example.com", 0, invite.ErrExpired},
			{"nope", "e@example.com", 0, reserve.ErrNoBucket}, // workflow.Signups seeds or answers unknown
			{"bad/code", "e@example.com", 0, invite.ErrUnknownCode},
			{"x", "e.x.t+spam@googlemail.com", 0, invite.ErrFull},
		}
		for i, s := range steps {
			res, err := r.Reserve(ctx, s.code, testenv.Address(t, s.email))
			if s.wantErr != nil {
				if !errors.Is(err, s.wantErr) {
					t.Fatalf("step %d %s %s: err = %v, want %v", i, s.code, s.email, err, s.wantErr)
				}
				continue
			}
			if err != nil || res.Outcome != s.want {
				t.Fatalf("step %d %s %s: got %v, %v; want %v", i, s.code, s.email, res.Outcome, err, s.want)
			}
		}
		rem, ok, err := r.Remaining(ctx, "x")
		if err != nil || !ok || rem != 0 {
			t.Fatalf("Remaining(x) = %d, %v, %v; want 0, true, nil", rem, ok, err)
		}
	})
}

// spikeInFlight bounds the reservations a spike has in flight at once: the
// service's default INVITEGATE_MAX_IN_FLIGHT, which sheds the rest. A token
// move is bounded by 2 s (ReadTimeout, so go-redis never resends a steal),
// and with thousands of unbounded callers on 64 connections a deposit's wait
// for a pooled connection alone can pass that on a loaded machine.
const spikeInFlight = 512

// spike sends one reservation per email concurrently and counts outcomes.
// The clients wait up to 30s for a pooled connection: 512 goroutines on 64
// connections under the race detector on 2 cores queue for a while.
func spike(tb testing.TB, r *reserve.Reserver, code string, emails []string) (created, existing, full int64, wins map[string]bool) {
	tb.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins = map[string]bool{}
	var c, e, f, other atomic.Int64
	var firstErr atomic.Value
	slots := make(chan struct{}, spikeInFlight)
	for _, em := range emails {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			res, err := r.Reserve(context.Background(), code, testenv.Address(tb, em))
			switch {
			case err == nil && res.Outcome == invite.Created:
				c.Add(1)
				mu.Lock()
				wins[em] = true
				mu.Unlock()
			case err == nil:
				e.Add(1)
			case errors.Is(err, invite.ErrFull), errors.Is(err, invite.ErrEmailTaken):
				f.Add(1)
			default:
				other.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		}()
	}
	wg.Wait()
	if n := other.Load(); n > 0 {
		tb.Fatalf("%d unexpected errors, first: %v", n, firstErr.Load())
	}
	return c.Load(), e.Load(), f.Load(), wins
}

// TestSpikeExactCapacity is I1 and I4 at the Redis layer: 5,000 concurrent
// distinct emails on a code of 1,000 admit exactly 1,000, leave 0 remaining
// and 1,000 entries in the streams.
func TestSpikeExactCapacity(t *testing.T) {
	eachK(t, append(realBackends(), pipelinedBackends()...), func(t *testing.T, b backend, k int) {
		ctx := context.Background()
		r := b.reserver(t, newSource(invite.Invitation{Code: "spike", MaxUses: 1000}), k, nil)
		created, _, full, _ := spike(t, r, "spike", testenv.Emails("s", 5000))
		if created != 1000 || full != 4000 {
			t.Fatalf("created %d, rejected %d; want 1000, 4000", created, full)
		}
		rem, _, err := r.Remaining(ctx, "spike")
		if err != nil || rem != 0 {
			t.Fatalf("remaining = %d, %v; want 0", rem, err)
		}
		var backlog int64
		for s := 0; s < k; s++ {
			n, _, err := r.Backlog(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			backlog += n
		}
		if backlog != 1000 {
			t.Fatalf("stream entries = %d, want 1000", backlog)
		}
	})
}

// TestSameEmailsThreeCodes is I2 under a race: the same emails hit three
// codes at once; each email wins exactly one code.
func TestSameEmailsThreeCodes(t *testing.T) {
	eachK(t, append(realBackends(), pipelinedBackends()...), func(t *testing.T, b backend, k int) {
		codes := []string{"c1", "c2", "c3"}
		src := newSource(invite.Invitation{Code: "c1", MaxUses: 1000}, invite.Invitation{Code: "c2", MaxUses: 1000}, invite.Invitation{Code: "c3", MaxUses: 1000})
		r := b.reserver(t, src, k, nil)
		list := testenv.Emails("m", 1500)
		var wg sync.WaitGroup
		results := make([]map[string]bool, len(codes))
		counts := make([]int64, len(codes))
		for i, c := range codes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				counts[i], _, _, results[i] = spike(t, r, c, list)
			}()
		}
		wg.Wait()
		total := counts[0] + counts[1] + counts[2]
		if total != 1500 {
			t.Fatalf("total wins %d, want 1500 (one per email)", total)
		}
		for _, em := range list {
			n := 0
			for i := range codes {
				if results[i][em] {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("%s won %d codes, want 1", em, n)
			}
		}
		for i, c := range codes {
			if counts[i] > 1000 {
				t.Fatalf("%s admitted %d > 1000", c, counts[i])
			}
		}
	})
}

// TestTokenStealing: with 16 shards and a capacity of 16, every shard holds
// one token; emails that all hash to one shard still fill the code, because
// an empty shard moves tokens from the others before it answers full.
func TestTokenStealing(t *testing.T) {
	for _, b := range append(realBackends(), miniBackend()) {
		t.Run(b.name, func(t *testing.T) {
			r := newReserver(t, b.client(t), newSource(invite.Invitation{Code: "st", MaxUses: 16}), 16, nil)
			var same []string
			for i := 0; len(same) < 40; i++ {
				em := fmt.Sprintf("u%d@example.com", i)
				if r.ShardOf(testenv.Address(t, em).Canonical) == 3 {
					same = append(same, em)
				}
			}
			created, _, full, _ := spike(t, r, "st", same)
			if created != 16 || full != 24 {
				t.Fatalf("created %d, full %d; want 16, 24", created, full)
			}
		})
	}
}

// TestSoldOutCostsOneCall: once every shard is empty, a shard remembers it
// for SoldOutTTL, so further rejections do not sweep the other shards.
func TestSoldOutCostsOneCall(t *testing.T) {
	ctx := context.Background()
	var nowNs atomic.Int64
	nowNs.Store(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	clock := func() time.Time { return time.Unix(0, nowNs.Load()) }
	c := realBackends()[0].client(t)
	m := reserve.NewMetrics(nil)
	r := reserve.New(c, reserve.Config{
		Namespace: testenv.KeyPrefix(t), Shards: 16, Now: clock, SoldOutTTL: time.Second, Metrics: m,
	})
	seed(t, r, newSource(invite.Invitation{Code: "so", MaxUses: 4}))
	for i := 0; i < 4; i++ {
		if _, err := r.Reserve(ctx, "so", testenv.Address(t, fmt.Sprintf("w%d@example.com", i))); err != nil {
			t.Fatal(err)
		}
	}
	before := testutil.ToFloat64(m.Sweeps)
	for i := 0; i < 500; i++ {
		if _, err := r.Reserve(ctx, "so", testenv.Address(t, fmt.Sprintf("l%d@example.com", i))); !errors.Is(err, invite.ErrFull) {
			t.Fatalf("err = %v, want ErrFull", err)
		}
	}
	sweeps := testutil.ToFloat64(m.Sweeps) - before
	if sweeps > 16 {
		t.Fatalf("%v sweeps for 500 rejections, want at most one per shard", sweeps)
	}
	// After the TTL a shard looks again, once, also when a crowd arrives
	// at once: the first request on a shard sweeps under a lease, the
	// others keep the full answer meanwhile.
	nowNs.Add(int64(2 * time.Second))
	before = testutil.ToFloat64(m.Sweeps)
	crowd := make([]email.Address, 400)
	for i := range crowd {
		crowd[i] = testenv.Address(t, fmt.Sprintf("z%d@example.com", i))
	}
	var wg sync.WaitGroup
	for _, a := range crowd {
		wg.Go(func() {
			if _, err := r.Reserve(ctx, "so", a); !errors.Is(err, invite.ErrFull) {
				t.Errorf("err = %v, want ErrFull", err)
			}
		})
	}
	wg.Wait()
	if d := testutil.ToFloat64(m.Sweeps) - before; d < 1 || d > 16 {
		t.Fatalf("%v sweeps by 400 concurrent rejections after the TTL, want 1..16 (one per shard)", d)
	}
	// Each sweep that found every shard empty set a full mark again, not
	// just the lease: past the lease, rejections still cost one call.
	nowNs.Add(int64(500 * time.Millisecond))
	before = testutil.ToFloat64(m.Sweeps)
	for i := 0; i < 200; i++ {
		if _, err := r.Reserve(ctx, "so", testenv.Address(t, fmt.Sprintf("y%d@example.com", i))); !errors.Is(err, invite.ErrFull) {
			t.Fatalf("err = %v, want ErrFull", err)
		}
	}
	// (400 emails reach all 16 shards, so every shard was swept and marked.)
	if d := testutil.ToFloat64(m.Sweeps) - before; d != 0 {
		t.Fatalf("%v sweeps 500 ms later, want 0: the marks (1 s) still hold", d)
	}
}

// TestGiveBackOnce: a refused reservation returns its token exactly once,
// even when the entry is delivered again.
func TestGiveBackOnce(t *testing.T) {
	ctx := context.Background()
	src := newSource(invite.Invitation{Code: "g", MaxUses: 2})
	r := newReserver(t, realBackends()[0].client(t), src, 1, nil)
	a := testenv.Address(t, "x@example.com")
	res, err := r.Reserve(ctx, "g", a)
	if err != nil {
		t.Fatal(err)
	}
	entry := invite.Reservation{ID: res.ID, Shard: res.Shard, Code: "g", Canonical: a.Canonical, Email: a.Normalized}
	for i, want := range []bool{true, false} {
		got, err := r.GiveBack(ctx, entry, "elsewhere")
		if err != nil || got != want {
			t.Fatalf("give back #%d = %v, %v; want %v", i, got, err, want)
		}
	}
	if rem, _, _ := r.Remaining(ctx, "g"); rem != 2 {
		t.Fatalf("remaining = %d, want 2", rem)
	}
	if _, err := r.Reserve(ctx, "g", a); !errors.Is(err, invite.ErrEmailTaken) {
		t.Fatalf("email now points at its MongoDB code: %v, want ErrEmailTaken", err)
	}
}

// TestRedisDown: an unreachable Redis is ErrUnavailable within the
// caller's deadline, not a hang.
func TestRedisDown(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	r := reserve.New(c, reserve.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := r.Reserve(ctx, "x", testenv.Address(t, "a@example.com"))
	if !errors.Is(err, invite.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

// TestLoadScripts: every script is on every cluster master after
// LoadScripts, so a fresh replica runs by SHA from its first request.
func TestLoadScripts(t *testing.T) {
	ctx := context.Background()
	addrs := testenv.SharedRedisCluster(t)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { c.Close() })
	r := reserve.New(c, reserve.Config{Namespace: testenv.KeyPrefix(t)})
	if err := r.LoadScripts(ctx); err != nil {
		t.Fatal(err)
	}
	sha := fmt.Sprintf("%x", sha1.Sum([]byte(lua.Reserve)))
	err := c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		ok, err := n.ScriptExists(ctx, sha).Result()
		if err != nil {
			return err
		}
		if !ok[0] {
			return fmt.Errorf("reserve.lua missing on %s", n.Options().Addr)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestLostBucketKeepsTheEpoch: a bucket lost with its node (one shard of
// a code gone) is recreated empty in the survivors' epoch, so the sweeps
// of the shard it is on keep the tokens they move: seats left plus seats
// taken stay what they were, and the shard's callers are admitted.
func TestLostBucketKeepsTheEpoch(t *testing.T) {
	ctx := context.Background()
	c := realBackends()[0].client(t)
	r := newReserver(t, c, newSource(invite.Invitation{Code: "lb", MaxUses: 100}), 4, nil)
	lost := r.ShardOf(testenv.Address(t, "lost0@example.com").Canonical)
	if err := c.Del(ctx, r.BucketKey(lost, "lb")).Err(); err != nil {
		t.Fatal(err)
	}
	before, _, err := r.Remaining(ctx, "lb")
	if err != nil || before != 75 {
		t.Fatalf("remaining after the loss: %d, %v; want 75", before, err)
	}
	if err := r.SeedBuckets(ctx, invite.Invitation{Code: "lb", MaxUses: 100}, 0); err != nil {
		t.Fatal(err)
	}
	created := 0
	for i := 0; created < 5 && i < 2000; i++ {
		a := testenv.Address(t, fmt.Sprintf("lost%d@example.com", i))
		if r.ShardOf(a.Canonical) != lost {
			continue
		}
		res, err := r.Reserve(ctx, "lb", a)
		if err != nil || res.Outcome != invite.Created {
			t.Fatalf("signup %d on the recreated shard: %+v, %v", created, res, err)
		}
		created++
	}
	if after, _, err := r.Remaining(ctx, "lb"); err != nil || after+created != before {
		t.Fatalf("remaining %d + created %d != %d before (%v): tokens were dropped", after, created, before, err)
	}
}

// TestRebuildNeedsItsFreeze: a reseed whose freeze was taken over by a
// newer one rebuilds nothing; the newer one rebuilds exactly.
func TestRebuildNeedsItsFreeze(t *testing.T) {
	ctx := context.Background()
	src := newSource(invite.Invitation{Code: "rb", MaxUses: 40})
	r := newReserver(t, realBackends()[0].client(t), src, 4, nil)
	for i := 0; i < 10; i++ {
		if _, err := r.Reserve(ctx, "rb", testenv.Address(t, fmt.Sprintf("r%d@example.com", i))); err != nil {
			t.Fatal(err)
		}
	}
	ownerA, err := r.Freeze(ctx, "rb", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reserve(ctx, "rb", testenv.Address(t, "frozen@example.com")); !errors.Is(err, invite.ErrFrozen) {
		t.Fatalf("signup while frozen: %v, want ErrFrozen", err)
	}
	ownerB, err := r.Freeze(ctx, "rb", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	inv := invite.Invitation{Code: "rb", MaxUses: 40}
	if err := r.Rebuild(ctx, inv, 0, ownerA); !errors.Is(err, reserve.ErrFreezeLost) {
		t.Fatalf("rebuild by the older reseed: %v, want ErrFreezeLost", err)
	}
	if rem, _, _ := r.Remaining(ctx, "rb"); rem != 30 {
		t.Fatalf("the lost rebuild changed tokens: remaining %d, want 30", rem)
	}
	if err := r.Rebuild(ctx, inv, 12, ownerB); err != nil {
		t.Fatal(err)
	}
	if rem, _, _ := r.Remaining(ctx, "rb"); rem != 28 {
		t.Fatalf("remaining after rebuild %d, want 28", rem)
	}
	if res, err := r.Reserve(ctx, "rb", testenv.Address(t, "after@example.com")); err != nil || res.Outcome != invite.Created {
		t.Fatalf("after rebuild: %v %v", res.Outcome, err)
	}
	// An expired freeze cannot be rebuilt either.
	ownerC, _ := r.Freeze(ctx, "rb", time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	if err := r.Rebuild(ctx, inv, 0, ownerC); !errors.Is(err, reserve.ErrFreezeLost) {
		t.Fatalf("rebuild after the freeze expired: %v, want ErrFreezeLost", err)
	}
}

// TestPipelineReloadsFlushedScripts: a pipelined call that finds Redis
// without the script (restarted, flushed) falls back to a plain call that
// loads it, on a single node and on a cluster.
func TestPipelineReloadsFlushedScripts(t *testing.T) {
	for _, b := range pipelinedBackends() {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			c := b.client(t)
			r := reserve.New(c, reserve.Config{
				Namespace: testenv.KeyPrefix(t), Shards: 4, Pipeline: autoPipeline(t, c), PipelineAbove: -1,
			})
			seed(t, r, newSource(invite.Invitation{Code: "fl", MaxUses: 10}))
			flush := func() {
				t.Helper()
				var err error
				if cc, ok := c.(*redis.ClusterClient); ok {
					err = cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return n.ScriptFlush(ctx).Err() })
				} else {
					err = c.ScriptFlush(ctx).Err()
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < 3; i++ {
				flush()
				res, err := r.Reserve(ctx, "fl", testenv.Address(t, fmt.Sprintf("f%d@example.com", i)))
				if err != nil || res.Outcome != invite.Created {
					t.Fatalf("after SCRIPT FLUSH: %+v, %v; want Created", res, err)
				}
			}
			// And the pipeline carries the next calls again.
			res, err := r.Reserve(ctx, "fl", testenv.Address(t, "f0@example.com"))
			if err != nil || res.Outcome != invite.Existing {
				t.Fatalf("repeat: %+v, %v; want Existing", res, err)
			}
		})
	}
}

// TestStatus: what the landing page says before anyone types, from the
// live counters: open, full once every shard is empty, disabled, expired,
// no counters for a code Redis does not hold (workflow.Signups seeds it).
func TestStatus(t *testing.T) {
	eachK(t, append(realBackends(), miniBackend()), func(t *testing.T, b backend, k int) {
		ctx := context.Background()
		now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
		src := newSource(
			invite.Invitation{Code: "st", MaxUses: 3},
			invite.Invitation{Code: "off", MaxUses: 5, Disabled: true},
			invite.Invitation{Code: "old", MaxUses: 5, ExpiresAt: now.Add(-time.Minute)},
		)
		r := b.reserver(t, src, k, func() time.Time { return now })
		want := func(code string, st invite.Status, wantErr error) {
			t.Helper()
			got, err := r.Status(ctx, code)
			if got != st || !errors.Is(err, wantErr) {
				t.Fatalf("Status(%q) = %q, %v; want %q, %v", code, got, err, st, wantErr)
			}
		}
		want("st", invite.StatusOpen, nil)
		want("off", invite.StatusDisabled, nil)
		want("old", invite.StatusExpired, nil)
		want("nope", "", reserve.ErrNoBucket)
		want("../x", "", invite.ErrUnknownCode)
		for i := 0; i < 3; i++ {
			if _, err := r.Reserve(ctx, "st", testenv.Address(t, fmt.Sprintf("s%d@example.com", i))); err != nil {
				t.Fatal(err)
			}
		}
		want("st", invite.StatusFull, nil)
	})
}

// countingPipe counts the calls that took the pipeline.
type countingPipe struct {
	reserve.Submitter
	n atomic.Int64
}

func (c *countingPipe) Submit(ctx context.Context, cmd redis.Cmder) redis.AutoFuture {
	c.n.Add(1)
	return c.Submitter.Submit(ctx, cmd)
}

// TestPipelineOnlyUnderACrowd: by default a call takes the pipeline only
// when more than 4 are waiting on Redis; one at a time they go out on
// their own, and a crowd shares batches.
func TestPipelineOnlyUnderACrowd(t *testing.T) {
	ctx := context.Background()
	c := realBackends()[0].client(t)
	pipe := &countingPipe{Submitter: autoPipeline(t, c)}
	r := reserve.New(c, reserve.Config{
		Namespace: testenv.KeyPrefix(t), Shards: 1, Pipeline: pipe,
	})
	seed(t, r, newSource(invite.Invitation{Code: "crowd", MaxUses: 1000}))
	for i := 0; i < 20; i++ {
		if _, err := r.Reserve(ctx, "crowd", testenv.Address(t, fmt.Sprintf("alone%d@example.com", i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := pipe.n.Load(); n != 0 {
		t.Fatalf("%d of 20 sequential calls took the pipeline, want 0", n)
	}
	created, _, _, _ := spike(t, r, "crowd", testenv.Emails("crowd", 3000))
	if created != 980 {
		t.Fatalf("created %d, want the 980 seats left", created)
	}
	if n := pipe.n.Load(); n == 0 {
		t.Fatal("a crowd of concurrent calls never took the pipeline")
	} else {
		t.Logf("%d script calls of 3000 concurrent signups took the pipeline", n)
	}
}
