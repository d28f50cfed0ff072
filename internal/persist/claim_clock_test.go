package persist_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
)

// idleQueue is one shard with nothing in it. Each blocking Read reports on
// reads and waits for next, so the test moves the worker one loop at a time.
type idleQueue struct {
	claims atomic.Int32
	reads  chan struct{}
	next   chan struct{}
}

func (q *idleQueue) Shards() int { return 1 }

func (q *idleQueue) Read(ctx context.Context, _ int, _ string, _ int, block time.Duration) ([]invite.Reservation, error) {
	if block < 0 { // the final drain
		return nil, nil
	}
	q.reads <- struct{}{}
	select {
	case <-q.next:
	case <-ctx.Done():
	}
	return nil, nil
}

func (q *idleQueue) Claim(context.Context, int, string, time.Duration, int) ([]invite.Reservation, error) {
	q.claims.Add(1)
	return nil, nil
}

func (q *idleQueue) Ack(context.Context, int, ...string) error { return nil }

func (q *idleQueue) Keep(context.Context, int, string, ...string) error { return nil }

func (q *idleQueue) ReplicationID(context.Context, int) (string, error) { return "", nil }

func (q *idleQueue) Present(_ context.Context, _ int, ids ...string) ([]string, error) {
	return ids, nil
}

func (q *idleQueue) GiveBack(context.Context, invite.Reservation, string) (bool, error) {
	return false, nil
}

func (q *idleQueue) Backlog(context.Context, int) (int64, time.Time, error) {
	return 0, time.Time{}, nil
}

// TestReconcilerClaimsEveryHalfClaimIdle: on a stepped clock, a worker
// looks for reservations left by dead consumers at start, then again only
// once ClaimIdle/2 has passed.
func TestReconcilerClaimsEveryHalfClaimIdle(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2027, 6, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	step := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	q := &idleQueue{reads: make(chan struct{}), next: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		persist.NewReconciler(q, nil, persist.ReconcilerConfig{ClaimIdle: 10 * time.Second, StatsEvery: time.Hour, Now: clock}).Run(ctx)
	}()
	loop := func(d time.Duration, want int32) { // one worker loop after stepping d
		t.Helper()
		step(d)
		q.next <- struct{}{}
		<-q.reads
		if n := q.claims.Load(); n != want {
			t.Fatalf("after %s more: %d claims, want %d", d, n, want)
		}
	}
	<-q.reads
	if n := q.claims.Load(); n != 1 {
		t.Fatalf("at start: %d claims, want 1", n)
	}
	loop(0, 1)
	loop(4999*time.Millisecond, 1)
	loop(time.Millisecond, 2) // ClaimIdle/2 since the first
	loop(time.Second, 2)
	loop(4*time.Second, 3)
	cancel()
	<-done
}

func (q *idleQueue) Committed(_ context.Context, _ int, rs []invite.Reservation) ([]bool, error) {
	return make([]bool, len(rs)), nil
}
