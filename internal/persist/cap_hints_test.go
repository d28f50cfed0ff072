package persist_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
)

// countingHints wraps a SeatHinter and counts its calls.
type countingHints struct {
	h            persist.SeatHinter
	delay        time.Duration
	hints, raise atomic.Int64
}

func (c *countingHints) SeatHints(ctx context.Context, need map[string]int) (map[string]int, error) {
	c.hints.Add(1)
	time.Sleep(c.delay)
	return c.h.SeatHints(ctx, need)
}

func (c *countingHints) RaiseSeatHints(ctx context.Context, at map[string]int) error {
	c.raise.Add(1)
	time.Sleep(c.delay)
	return c.h.RaiseSeatHints(ctx, at)
}

func hintsOn(t *testing.T, ns string) (*reserve.Reserver, *redis.Client) {
	c := redis.NewClient(&redis.Options{Addr: testenv.SharedRedis(t)})
	t.Cleanup(func() { c.Close() })
	return reserve.New(c, reserve.Config{Namespace: testenv.KeyPrefix(t) + ns, Shards: 4}), c
}

// TestSeatHintsOneCallPerBatch: a batch of 60 rows on 60 codes (one
// signup each, the common shape for personal codes) asks Redis for its
// hints in one call, not one per code.
func TestSeatHintsOneCallPerBatch(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	var batch []invite.Reservation
	for i := range 60 {
		code := fmt.Sprintf("h4one%d", i)
		if err := st.CreateInvitation(ctx, invite.Invitation{Code: code, MaxUses: 3}); err != nil {
			t.Fatal(err)
		}
		batch = append(batch, rows(code, "u"+strconv.Itoa(i))...)
	}
	h, _ := hintsOn(t, "")
	ch := &countingHints{h: h, delay: 2 * time.Millisecond} // a 2 ms RTT
	st.UseSeatHints(ch)
	start := time.Now()
	out, err := st.Persist(ctx, batch)
	if err != nil || count(out, persist.Written) != 60 {
		t.Fatal(outcomes(out), err)
	}
	t.Logf("SeatHints calls: %d for one batch; Persist took %v", ch.hints.Load(), time.Since(start))
	if ch.hints.Load() > 1 {
		t.Errorf("one Redis call per code (%d), not per batch", ch.hints.Load())
	}
}

// TestSeatHintsHungNodeDoesNotStopWrites: the node holding {ns:0} hangs
// (accepts, never answers). Hints have their own short deadline, so the
// batch is written within a reconciler's write timeout, on random seats.
func TestSeatHintsHungNodeDoesNotStopWrites(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	// As internal/app/clients.go configures it (read timeout shortened).
	rdb := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), DialTimeout: 2 * time.Second, ReadTimeout: 300 * time.Millisecond,
		WriteTimeout: 2 * time.Second, ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	st.UseSeatHints(reserve.New(rdb, reserve.Config{Namespace: "h4hung", Shards: 4}))
	var batch []invite.Reservation
	// 12 codes x 300 ms: in production 2 s x 5 codes spend a reconciler's
	// 10 s WriteTimeout, 3 codes a group commit's 5 s.
	for i := range 12 {
		code := fmt.Sprintf("h4hung%d", i)
		if err := st.CreateInvitation(ctx, invite.Invitation{Code: code, MaxUses: 5}); err != nil {
			t.Fatal(err)
		}
		batch = append(batch, rows(code, "h"+strconv.Itoa(i))...)
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second) // a reconciler's WriteTimeout
	defer cancel()
	start := time.Now()
	out, err := st.Persist(wctx, batch)
	t.Logf("Persist with a hung hint node: %v after %v, outcomes %v", err, time.Since(start), outcomes(out))
	if err != nil || count(out, persist.Written) != len(batch) {
		t.Errorf("a hung hint node kept MongoDB from writing: %v %v", outcomes(out), err)
	}
}

// TestSeatHintsRaisedOncePerRound: after the counter went back, a process
// with an empty book meets a duplicate on every hinted row; the hints are
// moved on once for the round, not once per row.
func TestSeatHintsRaisedOncePerRound(t *testing.T) {
	ctx := context.Background()
	st0, db := newStore(t)
	code := "h4raise"
	if err := st0.CreateInvitation(ctx, invite.Invitation{Code: code, MaxUses: 1000}); err != nil {
		t.Fatal(err)
	}
	h1, _ := hintsOn(t, "a")
	a := persist.NewStore(db, nil, nil)
	a.UseSeatHints(h1)
	var names []string
	for i := range 200 {
		names = append(names, "a"+strconv.Itoa(i))
	}
	if out, err := a.Persist(ctx, rows(code, names...)); err != nil || count(out, persist.Written) != 200 {
		t.Fatal(outcomes(out), err)
	}
	h2, _ := hintsOn(t, "b") // the counter went back to 0
	ch := &countingHints{h: h2}
	c := persist.NewStore(db, nil, nil)
	c.UseSeatHints(ch)
	names = names[:0]
	for i := range 100 {
		names = append(names, "c"+strconv.Itoa(i))
	}
	if out, err := c.Persist(ctx, rows(code, names...)); err != nil || count(out, persist.Written) != 100 {
		t.Fatal(outcomes(out), err)
	}
	t.Logf("lost %d, RaiseSeatHints calls %d", c.SeatsLost(), ch.raise.Load())
	if ch.raise.Load() > 1 {
		t.Errorf("RaiseSeatHints called %d times in one batch (once per lost row)", ch.raise.Load())
	}
	checkSeats(t, st0, code, 1000)
}

// TestSeatHintsRaisedPastHoles: a hint wasted on a row that was already
// registered leaves a hole (seat 20). After the counter went back, the
// process that meets the duplicates moves it past the seats it found
// taken and past that short hole, so the next process with a fresh book
// does not meet the same taken seats again.
func TestSeatHintsRaisedPastHoles(t *testing.T) {
	ctx := context.Background()
	st0, db := newStore(t)
	code := "h4hole"
	if err := st0.CreateInvitation(ctx, invite.Invitation{Code: code, MaxUses: 400}); err != nil {
		t.Fatal(err)
	}
	h1, _ := hintsOn(t, "a")
	a := persist.NewStore(db, nil, nil)
	a.UseSeatHints(h1)
	if out, err := a.Persist(ctx, rows(code, "pre")); err != nil || out[0].Outcome != persist.Written {
		t.Fatal(outcomes(out), err)
	}
	var names []string
	for i := range 30 {
		names = append(names, "a"+strconv.Itoa(i))
	}
	names[19] = "pre" // hint 20 goes to an AlreadyWritten row
	if out, err := a.Persist(ctx, rows(code, names...)); err != nil || count(out, persist.Written) != 29 {
		t.Fatal(outcomes(out), err)
	}
	h2, _ := hintsOn(t, "b") // the counter went back
	c := persist.NewStore(db, nil, nil)
	c.UseSeatHints(h2)
	if out, err := c.Persist(ctx, rows(code, "c0", "c1", "c2", "c3", "c4")); err != nil || count(out, persist.Written) != 5 {
		t.Fatal(outcomes(out), err)
	}
	d := persist.NewStore(db, nil, nil) // another process, after c moved the counter
	d.UseSeatHints(h2)
	if out, err := d.Persist(ctx, rows(code, "d0", "d1", "d2", "d3", "d4")); err != nil || count(out, persist.Written) != 5 {
		t.Fatal(outcomes(out), err)
	}
	t.Logf("c lost %d, then d lost %d", c.SeatsLost(), d.SeatsLost())
	if d.SeatsLost() > 1 {
		t.Errorf("the counter was moved only to the hole: the next process lost %d seats again", d.SeatsLost())
	}
	checkSeats(t, st0, code, 400)
}

// TestSeatHintsRaiseIsAtomic: writers of several processes that meet the
// counter gone back at once all raise it to the same seat: it ends there,
// not past it.
func TestSeatHintsRaiseIsAtomic(t *testing.T) {
	ctx := context.Background()
	h, _ := hintsOn(t, "race")
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := h.RaiseSeatHints(ctx, map[string]int{"h4race": 1000}); err != nil {
				t.Error(err)
			}
		}()
	}
	close(start)
	wg.Wait()
	firsts, err := h.SeatHints(ctx, map[string]int{"h4race": 1})
	if err != nil {
		t.Fatal(err)
	}
	first := firsts["h4race"]
	t.Logf("next hint after 8 concurrent raises to 1000: %d", first)
	if first != 1000 {
		t.Errorf("raise to 1000 left the counter at %d: seats %d..%d never hinted (a code of 1000..%d gets no hints at all)", first, 1000, first-1, first)
	}
}
