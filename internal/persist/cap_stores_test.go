package persist_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
)

// TestCapLoweredMaxBlocksLateWriters: a writer that read max_uses 10 just
// before set-max 10->5 (BlockSeats, then SetMaxUses, as SetMax runs them)
// inserts right after, on a random seat that may be at or above 5. The
// blocked seats refuse it, so it lands below 5; a process that never read
// the code's seats then writes 5 more (a stale batch Redis admitted):
// MongoDB never holds more than 5.
func TestCapLoweredMaxBlocksLateWriters(t *testing.T) {
	ctx := context.Background()
	admin, db := newStore(t)
	for trial := range 5 {
		code := fmt.Sprintf("win%d", trial)
		if err := admin.CreateInvitation(ctx, invite.Invitation{Code: code, MaxUses: 10}); err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		w := persist.NewStore(db, nil, func() time.Time {
			// Called at the start of persistRound, after max_uses was read.
			once.Do(func() {
				if err := admin.BlockSeats(ctx, code, 5, 10); err != nil {
					t.Error(err)
				}
				if err := admin.SetMaxUses(ctx, code, 10, 5); err != nil {
					t.Error(err)
				}
			})
			return time.Now()
		})
		if out, err := w.Persist(ctx, rows(code, "early"+code)); err != nil || out[0].Outcome != persist.Written {
			t.Fatal(outcomes(out), err)
		}
		taken, _, _ := admin.Seats(ctx, code)
		fresh := persist.NewStore(db, nil, nil)
		var names []string
		for i := range 5 {
			names = append(names, fmt.Sprintf("late%d%s", i, code))
		}
		out, err := fresh.Persist(ctx, rows(code, names...))
		if err != nil {
			t.Fatal(err)
		}
		n, _ := admin.Count(ctx, code)
		if n != 5 {
			t.Fatalf("trial %d: I1: %d registrations for max_uses 5, want exactly 5 (early seat %v, late outcomes %v)", trial, n, taken, outcomes(out))
		}
		if len(taken) != 1 || taken[0] >= 5 {
			t.Fatalf("trial %d: the early writer holds seats %v, want one below 5", trial, taken)
		}
	}
}

// TestCapManyStoresSameEmails: 4 stores (processes), 2 goroutines each,
// all handed the same 30 emails (5 of them registered on another code) on a
// code of 12, in shuffled batches, retrying Failed like the reconciler.
func TestCapManyStoresSameEmails(t *testing.T) {
	ctx := context.Background()
	st0, db := newStore(t)
	createCodes(t, st0, "elsewhere")
	for trial := range 2 {
		code := fmt.Sprintf("hot%d", trial)
		if err := st0.CreateInvitation(ctx, invite.Invitation{Code: code, MaxUses: 12}); err != nil {
			t.Fatal(err)
		}
		var all []invite.Reservation
		for i := range 30 {
			all = append(all, rows(code, fmt.Sprintf("e%d-%d", trial, i))...)
		}
		if out, err := st0.Persist(ctx, []invite.Reservation{{Code: "elsewhere", Canonical: all[0].Canonical, Email: "x"}, {Code: "elsewhere", Canonical: all[7].Canonical, Email: "x"},
			{Code: "elsewhere", Canonical: all[13].Canonical, Email: "x"}, {Code: "elsewhere", Canonical: all[21].Canonical, Email: "x"}, {Code: "elsewhere", Canonical: all[29].Canonical, Email: "x"}}); err != nil {
			t.Fatal(outcomes(out), err)
		}
		stores := []*persist.Store{persist.NewStore(db, nil, nil), persist.NewStore(db, nil, nil), persist.NewStore(db, nil, nil), persist.NewStore(db, nil, nil)}
		var mu sync.Mutex
		written := map[string]int{}
		final := map[string][]persist.Outcome{}
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st := stores[g%4]
				mine := append([]invite.Reservation(nil), all...)
				// rotate so goroutines start at different places
				mine = append(mine[(g*7)%30:], mine[:(g*7)%30]...)
				for try := 0; len(mine) > 0 && try < 200; try++ {
					b := mine[:min(4+g%3, len(mine))]
					out, err := st.Persist(ctx, b)
					if err != nil {
						t.Error(err)
						return
					}
					var again []invite.Reservation
					mu.Lock()
					for i, r := range out {
						switch r.Outcome {
						case persist.Failed:
							again = append(again, b[i])
							continue
						case persist.Written:
							written[b[i].Canonical]++
						}
						final[b[i].Canonical] = append(final[b[i].Canonical], r.Outcome)
					}
					mu.Unlock()
					mine = append(again, mine[len(b):]...)
				}
				if len(mine) > 0 {
					t.Errorf("goroutine %d: %d rows still Failed after 200 calls", g, len(mine))
				}
			}()
		}
		wg.Wait()
		n := checkSeats(t, st0, code, 12)
		refused := 0
		for _, r := range all {
			reg, ok, err := st0.Registration(ctx, r.Canonical)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range final[r.Canonical] {
				switch o {
				case persist.Written, persist.AlreadyWritten:
					if !ok || reg.Invitation != code {
						t.Errorf("%s reported %v but registered %v on %q", r.Canonical, o, ok, reg.Invitation)
					}
				case persist.Conflict:
					if !ok || reg.Invitation == code {
						t.Errorf("%s Conflict but registered %v on %q", r.Canonical, ok, reg.Invitation)
					}
				case persist.Refused:
					refused++
					if ok {
						t.Errorf("%s Refused but registered on %q", r.Canonical, reg.Invitation)
					}
				}
			}
			if written[r.Canonical] > 1 {
				t.Errorf("%s Written %d times", r.Canonical, written[r.Canonical])
			}
		}
		if n != 12 {
			t.Errorf("trial %d: %d registered of 12 with 25 candidates (refused outcomes %d)", trial, n, refused)
		}
	}
}

// TestSeatHintsSpareDuplicates: two processes (stores) filling one code at
// once, with seat hints from one counter in Redis (a real redis-server
// node, and a 3-node cluster), take distinct seats without meeting a single
// duplicate seat. When the counter goes back (another namespace: Redis
// lost it), a third process meets duplicates on the taken seats, still
// writes every row, and moves the counter past them: its next rows meet
// none.
func TestSeatHintsSpareDuplicates(t *testing.T) {
	for _, l := range []struct {
		name    string
		cluster bool
	}{{"node", false}, {"cluster", true}} {
		t.Run(l.name, func(t *testing.T) {
			ctx := context.Background()
			st0, db := newStore(t)
			code := "hinted"
			if err := st0.CreateInvitation(ctx, invite.Invitation{Code: code, MaxUses: 400}); err != nil {
				t.Fatal(err)
			}
			rdb := testenv.SharedRedisClient(t, l.cluster)
			hints := reserve.New(rdb, reserve.Config{Namespace: testenv.KeyPrefix(t), Shards: 4})
			a, b := persist.NewStore(db, nil, nil), persist.NewStore(db, nil, nil)
			a.UseSeatHints(hints)
			b.UseSeatHints(hints)
			var wg sync.WaitGroup
			for p, st := range []*persist.Store{a, b} {
				for g := range 3 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for n := range 5 {
							var names []string
							for i := range 10 {
								names = append(names, fmt.Sprintf("p%dg%dn%di%d", p, g, n, i))
							}
							out, err := st.Persist(ctx, rows(code, names...))
							if err != nil || count(out, persist.Written) != len(names) {
								t.Errorf("process %d: %v %v, want all Written", p, outcomes(out), err)
							}
						}
					}()
				}
			}
			wg.Wait()
			if got := checkSeats(t, st0, code, 400); got != 300 {
				t.Fatalf("%d registrations, want 300", got)
			}
			if la, lb := a.SeatsLost(), b.SeatsLost(); la+lb != 0 {
				t.Fatalf("seats lost to the other process: %d and %d, want none with hints", la, lb)
			}

			lost := reserve.New(rdb, reserve.Config{Namespace: testenv.KeyPrefix(t) + "-lost", Shards: 4})
			c := persist.NewStore(db, nil, nil)
			c.UseSeatHints(lost)
			out, err := c.Persist(ctx, rows(code, "c0", "c1", "c2", "c3", "c4"))
			if err != nil || count(out, persist.Written) != 5 {
				t.Fatalf("after the counter went back: %v %v, want all Written", outcomes(out), err)
			}
			before := c.SeatsLost()
			if before == 0 {
				t.Fatal("hints from a counter that went back met no taken seat; the check above cannot fail")
			}
			out, err = c.Persist(ctx, rows(code, "d0", "d1", "d2", "d3", "d4"))
			if err != nil || count(out, persist.Written) != 5 {
				t.Fatalf("%v %v, want all Written", outcomes(out), err)
			}
			if c.SeatsLost() != before {
				t.Fatalf("the counter was not moved past the taken seats: %d more lost", c.SeatsLost()-before)
			}
			checkSeats(t, st0, code, 400)
		})
	}
}
