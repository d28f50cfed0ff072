package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/workflow"
)

// TestReseedUnderTraffic: a reseed while signups flow and a reconciler
// runs admits exactly max_uses overall and loses nothing; requests caught
// by the freeze get ErrFrozen (503) and succeed when retried.
func TestReseedUnderTraffic(t *testing.T) {
	for _, shards := range []string{"1", "8"} {
		t.Run("K="+shards, func(t *testing.T) {
			ctx := context.Background()
			c := newCtl(t, shards)
			e := c.connect(t)
			c.must(t, "create", "hot", "--max", "200")
			// The reconciler gets a pool of its own, as in the service:
			// its blocking reads must not starve the signups.
			recRDB := redis.NewClient(&redis.Options{Addr: c.env["INVITEGATE_REDIS_ADDRS"], PoolSize: 16})
			defer recRDB.Close()
			k, _ := strconv.Atoi(shards)
			queue := reserve.New(recRDB, reserve.Config{Namespace: c.env["INVITEGATE_REDIS_NAMESPACE"], Shards: k})
			rctx, stopRec := context.WithCancel(ctx)
			recDone := make(chan struct{})
			go func() {
				persist.NewReconciler(queue, e.store, persist.ReconcilerConfig{Consumer: "r", Block: 50 * time.Millisecond}).Run(rctx)
				close(recDone)
			}()
			defer func() { stopRec(); <-recDone }()

			began := time.Now()
			var created, frozen atomic.Int64
			var wg sync.WaitGroup
			// 16 clients, each signing up 40 emails one after another, so
			// the spike lasts long enough for reseeds to land inside it.
			for w := 0; w < 16; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 40; i++ {
						a, _ := email.Parse(fmt.Sprintf("h%d-%d@example.com", w, i), email.Options{})
						// A freeze ends within FreezeFor by itself, however
						// slow the machine: retry until then, not a count.
						giveUp := time.Now().Add(2 * workflow.FreezeFor)
						for {
							res, err := e.signups().Reserve(ctx, "hot", a)
							if errors.Is(err, invite.ErrFrozen) && time.Now().Before(giveUp) {
								frozen.Add(1)
								time.Sleep(time.Millisecond)
								continue
							}
							if err == nil && res.Outcome == invite.Created {
								created.Add(1)
							} else if err != nil && !errors.Is(err, invite.ErrFull) {
								t.Errorf("reserve: %v", err)
							}
							break
						}
					}
				}()
			}
			spikeDone := make(chan struct{})
			go func() { wg.Wait(); close(spikeDone) }()
			var out string
			reseeds := 0
			for running := true; running && reseeds < 30; {
				select {
				case <-spikeDone:
					running = false
				case <-time.After(10 * time.Millisecond):
				}
				code, o, errOut := c.run(t, "reseed", "hot")
				if code != 0 {
					t.Fatalf("reseed: exit %d %s %s", code, o, errOut)
				}
				out = o
				reseeds++
			}
			<-spikeDone
			t.Logf("%d reseeds during the spike", reseeds)
			t.Logf("spike done after %s: %d frozen answers", time.Since(began), frozen.Load())
			if got := created.Load(); got != 200 {
				t.Fatalf("admitted %d, want exactly 200 (%d frozen answers)", got, frozen.Load())
			}
			if rem := remaining(t, e, "hot"); rem != 0 {
				t.Fatalf("remaining %d, want 0", rem)
			}
			deadline := time.Now().Add(30 * time.Second)
			for {
				n, err := e.store.Count(ctx, "hot")
				if err == nil && n == 200 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("MongoDB has %d registrations, want 200 (%v)", n, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			t.Logf("all in MongoDB after %s", time.Since(began))
			if !strings.Contains(out, "reseeded hot") {
				t.Fatalf("reseed output %q", out)
			}
		})
	}
}

// TestReseedRestoresStrandedTokens: tokens lost by a crash in the middle
// of a move come back with a reseed of the code.
func TestReseedRestoresStrandedTokens(t *testing.T) {
	ctx := context.Background()
	c := newCtl(t, "4")
	e := c.connect(t)
	c.must(t, "create", "leak", "--max", "40")
	if got := reserveN(t, e, "leak", "l", 10); got != 10 {
		t.Fatalf("created %d", got)
	}
	rdb := redis.NewClient(&redis.Options{Addr: c.env["INVITEGATE_REDIS_ADDRS"]})
	defer rdb.Close()
	key := "{" + c.env["INVITEGATE_REDIS_NAMESPACE"] + ":2}:b:leak"
	if err := rdb.HIncrBy(ctx, key, "tok", -5).Err(); err != nil { // a mover died holding 5
		t.Fatal(err)
	}
	if rem := remaining(t, e, "leak"); rem != 25 {
		t.Fatalf("remaining before reseed %d, want 25", rem)
	}
	c.must(t, "reseed", "leak")
	if rem := remaining(t, e, "leak"); rem != 30 {
		t.Fatalf("remaining after reseed %d, want 30", rem)
	}
	if n, _ := e.store.Count(ctx, "leak"); n != 10 {
		t.Fatalf("reseed wrote %d registrations, want the 10 pending", n)
	}
	c.must(t, "reseed", "--all")
	if code, _, _ := c.run(t, "reseed", "nope"); code != exitMissing {
		t.Fatal("reseed of an unknown code should exit 4")
	}
	if code, _, _ := c.run(t, "reseed", "a", "b"); code != exitUsage {
		t.Fatal("reseed a b should be a usage error")
	}
}
