package persist_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
)

// Review 3: set-max blocks seats.

// TestCapLowerThenRaiseWithStaleWriters: writers that read max_uses 10
// insert after a set-max 10 -> 5 and a set-max 5 -> 8 ran as SetMax runs
// them (blocks, then MongoDB's max; a raise changes MongoDB's max before
// it gives blocked seats back). MongoDB never ends past max_uses. (With the
// unblock first, a raise whose max_uses update then failed left seats 5..7
// open to these writers: 6 and 7 registrations for max_uses 5.)
func TestCapLowerThenRaiseWithStaleWriters(t *testing.T) {
	ctx := context.Background()
	admin, db := newStore(t)
	const writers = 8
	worst := 0
	for trial := range 4 {
		code := fmt.Sprintf("fr%d", trial)
		if err := admin.CreateInvitation(ctx, invite.Invitation{Code: code, MaxUses: 10}); err != nil {
			t.Fatal(err)
		}
		var names []string
		for i := range 5 {
			names = append(names, fmt.Sprintf("a%d%s", i, code))
		}
		if out, err := admin.Persist(ctx, rows(code, names...)); err != nil || count(out, persist.Written) != 5 {
			t.Fatal(outcomes(out), err)
		}
		var arrived sync.WaitGroup
		arrived.Add(writers)
		var once sync.Once
		hook := func() {
			// persistRound's first call, after max_uses 10 was read.
			arrived.Done()
			arrived.Wait()
			once.Do(func() {
				// set-max 10 -> 5, as SetMax runs it.
				if err := admin.BlockSeats(ctx, code, 5, 10); err != nil {
					t.Error(err)
				}
				if err := admin.SetMaxUses(ctx, code, 10, 5); err != nil {
					t.Error(err)
				}
				// set-max 5 -> 8, as SetMax runs it: MongoDB's max first,
				// then the blocks below it go (a raise whose SetMaxUses
				// fails stops before the unblock).
				if err := admin.SetMaxUses(ctx, code, 5, 8); err != nil {
					t.Error(err)
				}
				if err := admin.UnblockSeats(ctx, code, 8); err != nil {
					t.Error(err)
				}
			})
		}
		var wg sync.WaitGroup
		for w := range writers {
			var first sync.Once
			st := persist.NewStore(db, nil, func() time.Time {
				first.Do(hook)
				return time.Now()
			})
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := st.Persist(ctx, rows(code, fmt.Sprintf("w%d%s", w, code))); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		inv, _, _ := admin.Invitation(ctx, code)
		n, _ := admin.Count(ctx, code)
		t.Logf("trial %d: max_uses %d, %d registrations", trial, inv.MaxUses, n)
		worst = max(worst, n-inv.MaxUses)
	}
	if worst > 0 {
		t.Fatalf("I1: up to %d registrations past max_uses", worst)
	}
}

// TestCapStaleBlockedBookAfterRaise: a process whose book holds the
// blocks of a lowering (5 of 10 blocked, 5 registered, it was refused) is
// not refused after the raise back to 10, and several such processes fill
// exactly the 5 seats that came back, then no more.
func TestCapStaleBlockedBookAfterRaise(t *testing.T) {
	ctx := context.Background()
	admin, db := newStore(t)
	code := "sb"
	if err := admin.CreateInvitation(ctx, invite.Invitation{Code: code, MaxUses: 10}); err != nil {
		t.Fatal(err)
	}
	if out, err := admin.Persist(ctx, rows(code, "a0", "a1", "a2", "a3", "a4")); err != nil || count(out, persist.Written) != 5 {
		t.Fatal(outcomes(out), err)
	}
	if err := admin.BlockSeats(ctx, code, 5, 10); err != nil {
		t.Fatal(err)
	}
	if err := admin.SetMaxUses(ctx, code, 10, 5); err != nil {
		t.Fatal(err)
	}
	stores := []*persist.Store{persist.NewStore(db, nil, nil), persist.NewStore(db, nil, nil), persist.NewStore(db, nil, nil)}
	for i, st := range stores {
		out, err := st.Persist(ctx, rows(code, fmt.Sprintf("r%d", i)))
		if err != nil || out[0].Outcome != persist.Refused {
			t.Fatalf("at max 5: %v %v, want Refused", outcomes(out), err)
		}
	}
	// set-max 5 -> 10.
	if err := admin.UnblockSeats(ctx, code, 10); err != nil {
		t.Fatal(err)
	}
	if err := admin.SetMaxUses(ctx, code, 5, 10); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[persist.Outcome]int{}
	var wg sync.WaitGroup
	for i, st := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var names []string
			for j := range 3 {
				names = append(names, fmt.Sprintf("s%d-%d", i, j))
			}
			pending := rows(code, names...)
			for try := 0; len(pending) > 0 && try < 20; try++ {
				out, err := st.Persist(ctx, pending)
				if err != nil {
					t.Error(err)
					return
				}
				var again []invite.Reservation
				mu.Lock()
				for k, r := range out {
					if r.Outcome == persist.Failed {
						again = append(again, pending[k])
						continue
					}
					got[r.Outcome]++
				}
				mu.Unlock()
				pending = again
			}
		}()
	}
	wg.Wait()
	if got[persist.Written] != 5 || got[persist.Refused] != 4 {
		t.Fatalf("after the raise: %v, want 5 Written and 4 Refused", got)
	}
	checkSeats(t, admin, code, 10)
}

// TestCapDownUpDownUpWithStaleWriters: 10 -> 4 -> 7 -> 5 -> 9, each
// step as SetMax runs it, while writers of three processes keep writing
// fresh emails and some read max_uses just before each step. At every
// step's end MongoDB holds at most max_uses, and after the last raise the
// code fills to exactly 9 (no seat left blocked below it).
func TestCapDownUpDownUpWithStaleWriters(t *testing.T) {
	ctx := context.Background()
	admin, db := newStore(t)
	code := "dud"
	if err := admin.CreateInvitation(ctx, invite.Invitation{Code: code, MaxUses: 10}); err != nil {
		t.Fatal(err)
	}
	if out, err := admin.Persist(ctx, rows(code, "a0", "a1", "a2")); err != nil || count(out, persist.Written) != 3 {
		t.Fatal(outcomes(out), err)
	}
	steps := []int{4, 7, 5, 9}
	cur := 10
	var mu sync.Mutex // the code's lock: one step at a time
	step := func(n int) {
		mu.Lock()
		defer mu.Unlock()
		old := cur
		if n < old {
			if c, _ := admin.Count(ctx, code); c > n {
				return // refused, as SetMax would
			}
			if err := admin.BlockSeats(ctx, code, n, old); err != nil {
				if err2 := admin.UnblockSeats(ctx, code, old); err2 != nil {
					t.Error(err2)
				}
				return
			}
		} else if err := admin.UnblockSeats(ctx, code, n); err != nil {
			t.Error(err)
			return
		}
		if err := admin.SetMaxUses(ctx, code, old, n); err != nil {
			t.Error(err)
			return
		}
		cur = n
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var seq int
	var seqMu sync.Mutex
	next := func() string {
		seqMu.Lock()
		defer seqMu.Unlock()
		seq++
		return fmt.Sprintf("x%d", seq)
	}
	for p := range 3 {
		st := persist.NewStore(db, nil, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := st.Persist(ctx, rows(code, next(), next())); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				n, _ := admin.Count(ctx, code)
				c := cur
				mu.Unlock()
				if n > c {
					t.Errorf("process %d: I1: %d registrations, max_uses %d", p, n, c)
				}
			}
		}()
	}
	for _, n := range steps {
		time.Sleep(30 * time.Millisecond)
		step(n)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	// Fill to the end: exactly max_uses.
	fresh := persist.NewStore(db, nil, nil)
	for i := 0; i < 5; i++ {
		if _, err := fresh.Persist(ctx, rows(code, next(), next(), next())); err != nil {
			t.Fatal(err)
		}
	}
	if n := checkSeats(t, admin, code, cur); n != cur {
		t.Fatalf("after %v: %d registrations, want exactly max_uses %d (seats left blocked?)", steps, n, cur)
	}
}
