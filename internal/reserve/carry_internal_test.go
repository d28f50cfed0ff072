package reserve

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/testenv"
	"github.com/invitegate/invitegate/scripts/lua"
)

// seedOne seeds code with max seats, as the seeding workflow does.
func seedOne(tb testing.TB, r *Reserver, code string, max int) {
	tb.Helper()
	ctx := context.Background()
	if err := r.SeedBuckets(ctx, invite.Invitation{Code: code, MaxUses: max}, 0); err != nil {
		tb.Fatal(err)
	}
	if err := r.MarkSeeded(ctx); err != nil {
		tb.Fatal(err)
	}
}

// sharedRedis returns a client of the shared redis-server, closed when
// the test ends.
func sharedRedis(tb testing.TB) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.SharedRedis(tb)})
	tb.Cleanup(func() { rdb.Close() })
	return rdb
}

// afterSteal is a Client that runs hook once a steal.lua call has returned
// from Redis: between a token move's steal and its deposit.
type afterSteal struct {
	Client
	hook func()
}

func (c afterSteal) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	cmd := c.Client.EvalSha(ctx, sha1, keys, args...)
	// NOSCRIPT: not run; *redis.Script falls back to Eval.
	if sha1 == stealScript.Hash() && !redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		c.hook()
	}
	return cmd
}

func (c afterSteal) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	cmd := c.Client.Eval(ctx, script, keys, args...)
	if script == lua.Steal {
		c.hook()
	}
	return cmd
}

// TestCarryAppliedOnce: a reserve.lua call that carries tokens moved from
// another shard, run twice (a client resending it after a lost reply: the
// autopipeliner resends whole batches, go-redis resends a command after a
// dropped connection), deposits the tokens once. Without the transfer mark
// the second run would create a seat.
func TestCarryAppliedOnce(t *testing.T) {
	ctx := context.Background()
	rdb := sharedRedis(t)
	r := New(rdb, Config{Namespace: testenv.KeyPrefix(t), Shards: 2})
	seedOne(t, r, "c", 2)
	// One token per shard. Move shard 1's to shard 0.
	taken, epoch, err := evalSteal(ctx, rdb, r.keys.bucket(1, "c"), r.keys.history(1))
	if err != nil || taken != 1 {
		t.Fatalf("steal: %d %v", taken, err)
	}
	a := testenv.Address(t, "carrier@example.com")
	in := reserveCall{
		sentinel: r.keys.sentinel(0), bucket: r.keys.bucket(0, "c"), claim: r.keys.claim(0, a.Canonical), stream: r.keys.stream(0),
		history: r.keys.history(0), holds: r.keys.holds(0), transfer: r.keys.transfer(0, "t1"),
		code: "c", canonical: a.Canonical, email: a.Normalized, now: 1, carry: taken, carryEpoch: epoch, shards: r.kArg,
	}
	run := func() reply {
		t.Helper()
		rep, err := evalReserve(ctx, rdb, nil, in)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := run(); rep.status != stReserved {
		t.Fatalf("first run: %+v, want reserved", rep)
	}
	if rep := run(); rep.status != stExisting {
		t.Fatalf("resend: %+v, want existing", rep)
	}
	// Shard 0 had 1, got 1 carried, gave 1 seat: 1 left. Shard 1: 0.
	rem, _, err := r.Remaining(ctx, "c")
	if err != nil || rem != 1 {
		t.Fatalf("remaining %d (%v), want 1: the resend deposited the carried token again", rem, err)
	}
}

// TestMoveSurvivesItsRequest: a signup whose request ends (deadline, client
// gone) between stealing tokens from another shard and depositing them
// still deposits them, so the seat is not stranded: the code ends exactly
// full. Before moves ran on a detached context, the deposit failed with the
// canceled context and the stolen token was lost until a reseed.
func TestMoveSurvivesItsRequest(t *testing.T) {
	rdb := sharedRedis(t)
	ctx, cancel := context.WithCancel(context.Background())
	// The second signup's request ends right after the steal.
	r := New(afterSteal{Client: rdb, hook: cancel}, Config{Namespace: testenv.KeyPrefix(t), Shards: 2})
	seedOne(t, r, "c", 2)
	// Two emails of shard 0: the first takes its one token, the second
	// has to move shard 1's token.
	var on0 []email.Address
	for i := 0; len(on0) < 2; i++ {
		a := testenv.Address(t, fmt.Sprintf("mover%d@example.com", i))
		if shardOf(a.Canonical, 2) == 0 {
			on0 = append(on0, a)
		}
	}
	if res, err := r.Reserve(context.Background(), "c", on0[0]); err != nil || res.Outcome != invite.Created {
		t.Fatalf("first signup: %+v %v", res, err)
	}
	res, err := r.Reserve(ctx, "c", on0[1])
	if err != nil || res.Outcome != invite.Created {
		t.Fatalf("second signup, its request canceled mid-move: %+v %v, want created", res, err)
	}
	rem, _, err := r.Remaining(context.Background(), "c")
	if err != nil || rem != 0 {
		t.Fatalf("remaining %d (%v), want 0: 2 seats, 2 signups", rem, err)
	}
	if n, err := rdb.XLen(context.Background(), r.keys.stream(0)).Result(); err != nil || n != 2 {
		t.Fatalf("shard 0's stream holds %d (%v), want both signups", n, err)
	}
}

// TestSweepLeaseScript: on a shard whose sold-out mark has expired, the
// first call takes the sweep lease (answer 5: sweep), a resend of that very
// call (same arguments: the pipeliner resends after a lost reply) is
// answered 5 again, another caller within the lease gets 4 (full), even in
// the same millisecond, and a requested mark replaces the lease.
func TestSweepLeaseScript(t *testing.T) {
	ctx := context.Background()
	rdb := sharedRedis(t)
	r := New(rdb, Config{Namespace: testenv.KeyPrefix(t), Shards: 1})
	seedOne(t, r, "c", 1)
	if err := rdb.HSet(ctx, r.keys.bucket(0, "c"), "tok", 0, "so", 1000).Err(); err != nil { // empty, mark expired long ago
		t.Fatal(err)
	}
	call := func(who string, now, markTTL int64) reserveStatus {
		t.Helper()
		a := testenv.Address(t, who+"@example.com")
		rep, err := evalReserve(ctx, rdb, nil, reserveCall{
			sentinel: r.keys.sentinel(0), bucket: r.keys.bucket(0, "c"), claim: r.keys.claim(0, a.Canonical), stream: r.keys.stream(0),
			history: r.keys.history(0), holds: r.keys.holds(0),
			code: "c", canonical: a.Canonical, email: a.Normalized, now: now, markTTL: markTTL, shards: r.kArg, sweepLease: 100,
		})
		if err != nil {
			t.Fatal(err)
		}
		return rep.status
	}
	steps := []struct {
		what    string
		who     string
		now     int64
		markTTL int64
		want    reserveStatus
		so      string // the bucket's sold-out mark or lease after the call ("": not checked)
	}{
		{"first after expiry: a sweep and a lease", "first", 5000, 0, stEmpty, "5100"},
		{"resend of the lease holder's call", "first", 5000, 0, stEmpty, ""},
		{"another caller within the lease, same millisecond", "second", 5000, 0, stSoldOut, ""},
		{"another caller within the lease", "second", 5040, 0, stSoldOut, ""},
		{"the sweeper's mark replaces the lease", "first", 5060, 2000, stSoldOut, "7060"},
		{"after the lease, under the mark", "third", 5200, 0, stSoldOut, ""},
		{"the former lease holder under the mark", "first", 5300, 0, stSoldOut, ""},
	}
	for _, st := range steps {
		got := call(st.who, st.now, st.markTTL)
		so := rdb.HGet(ctx, r.keys.bucket(0, "c"), "so").Val()
		if got != st.want || (st.so != "" && so != st.so) {
			t.Fatalf("%s: status %d, so %s; want %d and so %q", st.what, got, so, st.want, st.so)
		}
	}
}
