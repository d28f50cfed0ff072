package reserve

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/testenv"
)

// holdsOn returns a Reserver over K=4 shards of a real redis-server node,
// or of a 3-node cluster, with code seeded for max seats and a
// confirmation window of window (every bucket's cw).
func holdsOn(t *testing.T, cluster bool, code string, max int, window time.Duration) (*Reserver, redis.UniversalClient) {
	t.Helper()
	return holdsOnK(t, cluster, 4, code, max, window)
}

// holdsOnK is holdsOn with K shards.
func holdsOnK(t *testing.T, cluster bool, shards int, code string, max int, window time.Duration) (*Reserver, redis.UniversalClient) {
	t.Helper()
	rdb := testenv.SharedRedisClient(t, cluster)
	r := New(rdb, Config{Namespace: testenv.KeyPrefix(t), Shards: shards})
	ctx := context.Background()
	if err := r.SeedBuckets(ctx, invite.Invitation{Code: code, MaxUses: max, ConfirmWindow: window}, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.MarkSeeded(ctx); err != nil {
		t.Fatal(err)
	}
	return r, rdb
}

// holdOutcomes signs up every email concurrently and returns the held
// results by canonical email and how many were full.
func holdOutcomes(t *testing.T, r *Reserver, code string, emails []string) (map[string]invite.Result, int) {
	t.Helper()
	var mu sync.Mutex
	held := map[string]invite.Result{}
	full := 0
	var wg sync.WaitGroup
	for _, e := range emails {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := testenv.Address(t, e)
			res, err := r.Reserve(context.Background(), code, a)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, invite.ErrFull):
				full++
			case err != nil:
				t.Errorf("%s: %v", e, err)
			case res.Outcome != invite.Held:
				t.Errorf("%s: outcome %v, want Held", e, res.Outcome)
			default:
				held[a.Canonical] = res
			}
		}()
	}
	wg.Wait()
	return held, full
}

// TestHoldsSpikeConfirmExpire: a spike of 60 on a confirm code of 20 over
// 4 shards holds exactly 20 seats (the rest full); a repeat gets the same
// hold; 8 confirmed become registrations; when the window ends two sweepers
// at once give back exactly the other 12, and exactly 12 new emails are
// held again. Real redis-server node and 3-node cluster.
func TestHoldsSpikeConfirmExpire(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		t.Run(map[bool]string{false: "node", true: "cluster"}[cluster], func(t *testing.T) {
			ctx := context.Background()
			const code, max = "hc", 20
			window := 1500 * time.Millisecond
			r, _ := holdsOn(t, cluster, code, max, window)
			held, full := holdOutcomes(t, r, code, testenv.Emails("spike", 60))
			if len(held) != max || full != 60-max {
				t.Fatalf("%d held, %d full; want %d and %d", len(held), full, max, 60-max)
			}
			var canon []string
			for c := range held {
				canon = append(canon, c)
			}
			again, err := r.Reserve(ctx, code, testenv.Address(t, canon[0]))
			if err != nil || again.Outcome != invite.HeldAgain || again.ID != held[canon[0]].ID || !again.Deadline.Equal(held[canon[0]].Deadline) {
				t.Fatalf("repeat: %+v %v, want the same hold %+v", again, err, held[canon[0]])
			}
			if d := time.Until(again.Deadline); d <= 0 || d > window {
				t.Fatalf("deadline %v from now, want within the window %v", d, window)
			}
			for _, c := range canon[:8] {
				out, _, err := r.Confirm(ctx, code, c, held[c].ID, c)
				if err != nil || out != Confirmed {
					t.Fatalf("confirm %s: %v %v", c, out, err)
				}
				if out, _, _ := r.Confirm(ctx, code, c, held[c].ID, c); out != AlreadyConfirmed {
					t.Fatalf("repeat confirm: %v, want AlreadyConfirmed", out)
				}
			}
			if rem, _, _ := r.Remaining(ctx, code); rem != 0 {
				t.Fatalf("remaining %d while every seat is held or confirmed", rem)
			}
			time.Sleep(time.Until(again.Deadline) + 50*time.Millisecond)
			var expired atomic.Int64
			var wg sync.WaitGroup
			for range 2 { // two replicas sweeping the same shards
				wg.Add(1)
				go func() {
					defer wg.Done()
					for s := 0; s < 4; s++ {
						n, err := r.ExpireDue(ctx, s, 100)
						if err != nil {
							t.Error(err)
						}
						expired.Add(int64(n))
					}
				}()
			}
			wg.Wait()
			if expired.Load() != max-8 {
				t.Fatalf("%d holds expired, want %d", expired.Load(), max-8)
			}
			if rem, _, _ := r.Remaining(ctx, code); rem != max-8 {
				t.Fatalf("remaining %d after expiry, want %d", rem, max-8)
			}
			// A confirmed email is registered; an expired one may sign up
			// again (a new hold); the seats that came back go exactly once.
			if res, err := r.Reserve(ctx, code, testenv.Address(t, canon[0])); err != nil || res.Outcome != invite.Existing {
				t.Fatalf("confirmed email again: %+v %v, want Existing", res, err)
			}
			if out, _, _ := r.Confirm(ctx, code, canon[10], held[canon[10]].ID, canon[10]); out != NoHold {
				t.Fatalf("confirm after expiry and sweep: %v, want NoHold", out)
			}
			emails := append(testenv.Emails("second", 30), canon[10])
			held2, full2 := holdOutcomes(t, r, code, emails)
			if len(held2) != max-8 || full2 != len(emails)-(max-8) {
				t.Fatalf("after expiry: %d held, %d full; want %d and %d", len(held2), full2, max-8, len(emails)-(max-8))
			}
			if h, ok := held2[canon[10]]; ok && h.ID == held[canon[10]].ID {
				t.Fatalf("an expired email got its old hold back: %+v", h)
			}
		})
	}
}

// TestHoldConfirmRacesExpiry: at each hold's deadline a confirmation and
// two expiries run at once; exactly one of confirm and expire wins each
// hold, and the seats left are max less the confirmed.
func TestHoldConfirmRacesExpiry(t *testing.T) {
	ctx := context.Background()
	const code, max = "race", 30
	r, _ := holdsOn(t, false, code, max, 200*time.Millisecond)
	held, _ := holdOutcomes(t, r, code, testenv.Emails("race", max))
	if len(held) != max {
		t.Fatalf("%d held, want %d", len(held), max)
	}
	var confirmed, expired atomic.Int64
	var wg sync.WaitGroup
	i := 0
	for c, h := range held {
		wg.Add(3)
		at := h.Deadline
		// Confirmations land from 3 ms before the deadline to just after.
		early := time.Duration(i%4) * time.Millisecond
		i++
		go func() {
			defer wg.Done()
			time.Sleep(time.Until(at) - early)
			if out, _, err := r.Confirm(ctx, code, c, h.ID, c); err != nil {
				t.Error(err)
			} else if out == Confirmed {
				confirmed.Add(1)
			}
		}()
		for range 2 {
			go func() {
				defer wg.Done()
				time.Sleep(time.Until(at) - 3*time.Millisecond)
				for {
					done, err := r.Expire(ctx, h.Shard, c, code)
					if err != nil {
						t.Error(err)
						return
					}
					if done {
						expired.Add(1)
					}
					own, _ := r.rdb.Get(ctx, r.keys.claim(h.Shard, c)).Result()
					if done || !strings.HasPrefix(own, "h|") {
						return // settled: confirmed, or expired by either
					}
					time.Sleep(5 * time.Millisecond)
				}
			}()
		}
	}
	wg.Wait()
	if confirmed.Load()+expired.Load() != max {
		t.Fatalf("%d confirmed + %d expired, want %d holds settled once each", confirmed.Load(), expired.Load(), max)
	}
	rem, _, err := r.Remaining(ctx, code)
	if err != nil || rem != int(expired.Load()) {
		t.Fatalf("remaining %d %v, want the %d expired", rem, err, expired.Load())
	}
	t.Logf("at the deadline: %d confirmed, %d expired", confirmed.Load(), expired.Load())
}

// TestHoldExpiryAfterRebuild: a hold taken before a rebuild of its bucket
// (another epoch: the rebuild counted it from MongoDB) gives no seat back
// to the rebuilt bucket; a confirmation with another hold's ID or code is
// refused.
func TestHoldExpiryAfterRebuild(t *testing.T) {
	ctx := context.Background()
	r, raw := holdsOn(t, false, "eb", 4, 100*time.Millisecond)
	held, _ := holdOutcomes(t, r, "eb", testenv.Emails("eb", 1))
	var c string
	var h invite.Result
	for c, h = range held {
	}
	if out, _, _ := r.Confirm(ctx, "eb", c, "0-1", c); out != NoHold {
		t.Fatalf("another hold's ID: %v, want NoHold", out)
	}
	if out, _, _ := r.Confirm(ctx, "other", c, h.ID, c); out != NoHold {
		t.Fatalf("another code: %v, want NoHold", out)
	}
	if err := raw.HSet(ctx, r.keys.bucket(h.Shard, "eb"), "ep", "rebuilt").Err(); err != nil {
		t.Fatal(err)
	}
	before, _, _ := r.Remaining(ctx, "eb")
	time.Sleep(time.Until(h.Deadline) + 20*time.Millisecond)
	if out, _, _ := r.Confirm(ctx, "eb", c, h.ID, c); out != HoldExpired {
		t.Fatalf("confirm after the deadline: %v, want HoldExpired", out)
	}
	if done, err := r.Expire(ctx, h.Shard, c, "eb"); err != nil || !done {
		t.Fatalf("expire: %v %v", done, err)
	}
	if after, _, _ := r.Remaining(ctx, "eb"); after != before {
		t.Fatalf("remaining %d -> %d: a hold of an older epoch gave a seat to the rebuilt bucket", before, after)
	}
}

// TestHoldEntriesDecode: the stream entries of a hold and of its expiry
// decode as such (never as registrations), the confirmation's as a
// registration of the confirmed email naming its hold.
func TestHoldEntriesDecode(t *testing.T) {
	ctx := context.Background()
	r, raw := holdsOn(t, false, "he", 4, 50*time.Millisecond)
	held, _ := holdOutcomes(t, r, "he", []string{"kept@example.com", "lapsed@example.com"})
	kept, lapsed := held["kept@example.com"], held["lapsed@example.com"]
	if out, _, err := r.Confirm(ctx, "he", "kept@example.com", kept.ID, "kept@example.com"); err != nil || out != Confirmed {
		t.Fatalf("confirm: %v %v", out, err)
	}
	time.Sleep(time.Until(lapsed.Deadline) + 20*time.Millisecond)
	if done, err := r.Expire(ctx, lapsed.Shard, "lapsed@example.com", "he"); err != nil || !done {
		t.Fatalf("expire: %v %v", done, err)
	}
	regs := map[string]bool{}
	kinds := map[invite.EntryKind]int{}
	entries := 0
	for s := 0; s < 4; s++ {
		msgs, err := raw.XRange(ctx, r.keys.stream(s), "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		entries += len(msgs)
		for _, res := range r.appendEntries(nil, s, msgs) {
			if res.Code == "" {
				t.Fatalf("entry %s does not decode: %+v", res.ID, res)
			}
			kinds[res.Kind]++
			if res.Kind == invite.Registration {
				regs[res.Canonical] = true
				if res.HoldID == "" {
					t.Fatalf("confirmation %s names no hold", res.ID)
				}
			}
		}
	}
	if kinds[invite.HoldTaken] != 2 || kinds[invite.HoldEnded] != 1 {
		t.Fatalf("entry kinds %v, want 2 holds taken and 1 ended", kinds)
	}
	if entries != 4 || len(regs) != 1 || !regs["kept@example.com"] {
		t.Fatalf("%d entries decode to registrations %v; want 4 entries (2 holds, a confirmation, an expiry) and only kept@example.com", entries, regs)
	}
}

// TestHoldsCountedByRebuild: a reseed's rebuild while holds live (the code
// frozen: confirmations wait) counts them, so holds + new seats never pass
// max_uses; the counted holds still confirm after it, and one that expires
// after it gives its seat back to the rebuilt bucket. cw survives the
// rebuild.
func TestHoldsCountedByRebuild(t *testing.T) {
	ctx := context.Background()
	const code, max = "rb", 4
	r, _ := holdsOn(t, false, code, max, 400*time.Millisecond)
	held, _ := holdOutcomes(t, r, code, []string{"h1@example.com", "h2@example.com"})
	if len(held) != 2 {
		t.Fatalf("%d held, want 2", len(held))
	}
	inv := invite.Invitation{Code: code, MaxUses: max, ConfirmWindow: 400 * time.Millisecond}
	owner, err := r.Freeze(ctx, code, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h1 := held["h1@example.com"]
	if _, _, err := r.Confirm(ctx, code, "h1@example.com", h1.ID, "h1@example.com"); !errors.Is(err, invite.ErrFrozen) {
		t.Fatalf("confirm while frozen: %v, want ErrFrozen", err)
	}
	if err := r.Rebuild(ctx, inv, 0, owner); err != nil {
		t.Fatal(err)
	}
	if rem, _, _ := r.Remaining(ctx, code); rem != max-2 {
		t.Fatalf("remaining %d after the rebuild, want %d (2 live holds counted)", rem, max-2)
	}
	if out, _, err := r.Confirm(ctx, code, "h1@example.com", h1.ID, "h1@example.com"); err != nil || out != Confirmed {
		t.Fatalf("confirm after the rebuild: %v %v", out, err)
	}
	more, full := holdOutcomes(t, r, code, testenv.Emails("more", 5))
	if len(more) != max-2 || full != 5-(max-2) {
		t.Fatalf("after the rebuild %d held, %d full; want %d, %d", len(more), full, max-2, 5-(max-2))
	}
	h2 := held["h2@example.com"]
	time.Sleep(time.Until(h2.Deadline) + 20*time.Millisecond)
	if done, err := r.Expire(ctx, h2.Shard, "h2@example.com", code); err != nil || !done {
		t.Fatalf("expire: %v %v", done, err)
	}
	if rem, _, _ := r.Remaining(ctx, code); rem != 1 {
		t.Fatalf("remaining %d after a counted hold expired, want 1 (its seat back)", rem)
	}
}

// TestHoldsNeverOverCapWhileExpiring samples I1 for holds while they
// expire under a crowd: on one shard (node and cluster), after 20 holds of
// which 5 are confirmed, two sweepers expire the rest at their deadline
// while 8 clients keep signing up new emails. Every millisecond one
// MULTI reads the bucket's tokens and the live holds ({ns:0}:hx) at one
// instant: tokens + live holds + the 5 confirmed must always be exactly
// max_uses with tokens >= 0, so live holds + registrations never exceed
// it; and the new emails end up with exactly the 15 seats that came back.
func TestHoldsNeverOverCapWhileExpiring(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		t.Run(map[bool]string{false: "node", true: "cluster"}[cluster], func(t *testing.T) {
			ctx := context.Background()
			const code, max, confirmed = "ov", 20, 5
			r, raw := holdsOnK(t, cluster, 1, code, max, 800*time.Millisecond)
			held, _ := holdOutcomes(t, r, code, testenv.Emails("first", max))
			if len(held) != max {
				t.Fatalf("%d held, want %d", len(held), max)
			}
			var last time.Time
			n := 0
			for c, h := range held {
				if h.Deadline.After(last) {
					last = h.Deadline
				}
				if n < confirmed {
					if out, _, err := r.Confirm(ctx, code, c, h.ID, c); err != nil || out != Confirmed {
						t.Fatalf("confirm: %v %v", out, err)
					}
				}
				n++
			}
			stop := make(chan struct{})
			var samples, bad atomic.Int64
			var firstBad atomic.Value
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // the sampler
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					var tok *redis.StringCmd
					var live *redis.IntCmd
					_, err := raw.TxPipelined(ctx, func(p redis.Pipeliner) error {
						tok = p.HGet(ctx, r.keys.bucket(0, code), "tok")
						live = p.ZCard(ctx, r.keys.holds(0))
						return nil
					})
					if err != nil {
						t.Error(err)
						return
					}
					tk, _ := tok.Int()
					samples.Add(1)
					if tk < 0 || tk+int(live.Val())+confirmed != max {
						bad.Add(1)
						firstBad.CompareAndSwap(nil, fmt.Sprintf("tokens %d, live holds %d, confirmed %d", tk, live.Val(), confirmed))
					}
					time.Sleep(time.Millisecond)
				}
			}()
			for range 2 { // two replicas' expirers
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						if _, err := r.ExpireDue(ctx, 0, 100); err != nil {
							t.Error(err)
							return
						}
						time.Sleep(20 * time.Millisecond)
					}
				}()
			}
			var next atomic.Int64
			var mu sync.Mutex
			again := map[string]bool{}
			for range 8 { // the crowd
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						em := fmt.Sprintf("crowd-%d@example.com", next.Add(1))
						res, err := r.Reserve(ctx, code, testenv.Address(t, em))
						switch {
						case errors.Is(err, invite.ErrFull):
						case err != nil:
							t.Error(err)
							return
						case res.Outcome == invite.Held:
							mu.Lock()
							again[em] = true
							mu.Unlock()
						}
						time.Sleep(time.Millisecond)
					}
				}()
			}
			time.Sleep(time.Until(last) + 700*time.Millisecond)
			close(stop)
			wg.Wait()
			if b := bad.Load(); b > 0 {
				t.Fatalf("%d of %d samples broke the cap; first: %v", b, samples.Load(), firstBad.Load())
			}
			if samples.Load() < 100 {
				t.Fatalf("only %d samples", samples.Load())
			}
			if len(again) != max-confirmed {
				t.Fatalf("%d new holds after the expiries, want exactly the %d seats that came back", len(again), max-confirmed)
			}
		})
	}
}
