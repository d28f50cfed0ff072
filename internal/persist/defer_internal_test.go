package persist

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
)

// commitQueue hands out one batch of reservations once; the group commit
// has written those in committed (it marks more of them as time passes,
// through commitLater). It records what was acknowledged and when.
type commitQueue struct {
	batchQueue // its first holds the batch
	mu2        sync.Mutex
	done       map[string]bool // the group commit's marks
	later      map[string]bool // marked once the reconciler has looked once
	acks       map[string]bool // acknowledged entries
	looks      int             // Committed calls
}

func (q *commitQueue) Committed(_ context.Context, _ int, rs []invite.Reservation) ([]bool, error) {
	q.mu2.Lock()
	defer q.mu2.Unlock()
	q.looks++
	out := make([]bool, len(rs))
	for i, r := range rs {
		out[i] = q.done[r.ID]
	}
	// What the commit finishes while the reconciler waits.
	for id := range q.later {
		q.done[id] = true
	}
	return out, nil
}

func (q *commitQueue) Ack(_ context.Context, _ int, ids ...string) error {
	q.mu2.Lock()
	defer q.mu2.Unlock()
	for _, id := range ids {
		q.acks[id] = true
	}
	q.acked.Add(int32(len(ids)))
	return nil
}

// recordStore records what it was asked to write, and when.
type recordStore struct {
	mu      sync.Mutex
	written map[string]time.Time
}

func (s *recordStore) Persist(_ context.Context, rs []invite.Reservation) ([]Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Result, len(rs))
	for i, r := range rs {
		s.written[r.ID] = time.Now()
		out[i].Outcome = Written
	}
	return out, nil
}

// TestReconcilerLeavesCommittedEntries: with Defer (INVITEGATE_ACK=mongo),
// entries the group commit already wrote are acknowledged without a
// second insert, entries it writes while the reconciler waits likewise,
// and the rest are written, but not before they are Defer old.
func TestReconcilerLeavesCommittedEntries(t *testing.T) {
	const deferFor = 300 * time.Millisecond
	reserved := time.Now()
	q := &commitQueue{
		batchQueue: batchQueue{shards: 1, given: map[int]bool{}},
		done:       map[string]bool{}, later: map[string]bool{}, acks: map[string]bool{},
	}
	for i := range 30 {
		id := "1-" + strconv.Itoa(i)
		q.first = append(q.first, invite.Reservation{ID: id, Code: "c", Canonical: "e" + id, Email: "e" + id, ReservedAt: reserved})
		switch i % 3 {
		case 0:
			q.done[id] = true // written before the reconciler read it
		case 1:
			q.later[id] = true // written while the reconciler waits
		}
	}
	st := &recordStore{written: map[string]time.Time{}}
	rc := NewReconciler(q, nil, ReconcilerConfig{Defer: deferFor, StatsEvery: time.Hour, Block: 10 * time.Millisecond})
	rc.st = st
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{})
	go func() { defer close(finished); rc.Run(ctx) }()
	deadline := time.After(time.Minute)
	for q.acked.Load() < 30 {
		select {
		case <-deadline:
			t.Fatalf("acknowledged %d of 30 entries", q.acked.Load())
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	<-finished
	for i, r := range q.first {
		at, wrote := st.written[r.ID]
		if i%3 != 2 {
			if wrote {
				t.Errorf("entry %s was written again, though the group commit had written it", r.ID)
			}
			continue
		}
		if !wrote {
			t.Errorf("entry %s, which the group commit did not write, was not written", r.ID)
		} else if at.Before(reserved.Add(deferFor)) {
			t.Errorf("entry %s written %s after its reservation, before Defer (%s)", r.ID, at.Sub(reserved), deferFor)
		}
	}
	if q.looks < 2 {
		t.Errorf("the group commit's marks were read %d times, want at least 2 (before and during the wait)", q.looks)
	}
}

// TestReconcilerWithoutDeferWritesAtOnce: without Defer (ack=redis, the
// default) the marks are not read and every entry is written.
func TestReconcilerWithoutDeferWritesAtOnce(t *testing.T) {
	q := &commitQueue{
		batchQueue: batchQueue{shards: 1, given: map[int]bool{}, first: []invite.Reservation{{ID: "1-0", Code: "c", Canonical: "e", Email: "e", ReservedAt: time.Now()}}},
		done:       map[string]bool{"1-0": true}, later: map[string]bool{}, acks: map[string]bool{},
	}
	st := &recordStore{written: map[string]time.Time{}}
	rc := NewReconciler(q, nil, ReconcilerConfig{StatsEvery: time.Hour, Block: 10 * time.Millisecond})
	rc.st = st
	runUntilWritten(t, rc, &q.batchQueue)
	if q.looks != 0 || len(st.written) != 1 {
		t.Fatalf("marks read %d times, %d entries written; want 0 and 1", q.looks, len(st.written))
	}
}

// TestReconcilerBoundsItsWaitOnSkewedClocks: an entry is stamped with the
// reserving replica's clock. One whose replica runs an hour ahead, left
// unmarked (its commit failed), is still written about Defer after the
// reconciler read it, and so is the entry of a healthy replica in the same
// batch; the shard does not stall for the skew (real redis-server).
func TestReconcilerBoundsItsWaitOnSkewedClocks(t *testing.T) {
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: testenv.SharedRedis(t)})
	t.Cleanup(func() { c.Close() })
	ns := testenv.KeyPrefix(t)
	ahead := reserve.New(c, reserve.Config{Namespace: ns, Shards: 1, Now: func() time.Time { return time.Now().Add(time.Hour) }})
	good := reserve.New(c, reserve.Config{Namespace: ns, Shards: 1})
	if err := good.SeedBuckets(ctx, invite.Invitation{Code: "c", MaxUses: 10}, 0); err != nil {
		t.Fatal(err)
	}
	if err := good.MarkSeeded(ctx); err != nil {
		t.Fatal(err)
	}
	for _, in := range []struct {
		r *reserve.Reserver
		e string
	}{{ahead, "ahead@example.com"}, {good, "good@example.com"}} {
		a, err := email.Parse(in.e, email.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := in.r.Reserve(ctx, "c", a); err != nil {
			t.Fatal(err)
		}
	}
	st := &recordStore{written: map[string]time.Time{}}
	rc := NewReconciler(good, nil, ReconcilerConfig{Defer: 300 * time.Millisecond, StatsEvery: time.Hour, Block: 10 * time.Millisecond})
	rc.st = st
	rctx, cancel := context.WithCancel(ctx)
	finished := make(chan struct{})
	go func() { defer close(finished); rc.Run(rctx) }()
	defer func() { cancel(); <-finished }()
	deadline := time.After(30 * time.Second)
	for {
		st.mu.Lock()
		n := len(st.written)
		st.mu.Unlock()
		if n == 2 {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("%d of 2 entries written 30 s after they were read, with Defer 300ms: the wait followed the skewed clock", n)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
