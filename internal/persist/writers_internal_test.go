package persist

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/invitegate/invitegate/internal/invite"
)

// batchQueue hands each shard's worker one batch of one reservation, then
// nothing; it counts acknowledgements.
type batchQueue struct {
	shards int
	mu     sync.Mutex
	given  map[int]bool
	acked  atomic.Int32
}

func (q *batchQueue) Shards() int { return q.shards }

func (q *batchQueue) Read(ctx context.Context, shard int, _ string, _ int, block time.Duration) ([]invite.Reservation, error) {
	q.mu.Lock()
	first := !q.given[shard]
	q.given[shard] = true
	q.mu.Unlock()
	if first {
		return []invite.Reservation{{ID: "0-" + strconv.Itoa(shard), Shard: shard, Code: "c", Canonical: "e", Email: "e"}}, nil
	}
	if block > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(block):
		}
	}
	return nil, nil
}

func (q *batchQueue) Claim(context.Context, int, string, time.Duration, int) ([]invite.Reservation, error) {
	return nil, nil
}

func (q *batchQueue) Ack(_ context.Context, _ int, ids ...string) error {
	q.acked.Add(int32(len(ids)))
	return nil
}

func (q *batchQueue) Keep(context.Context, int, string, ...string) error { return nil }

func (q *batchQueue) GiveBack(context.Context, invite.Reservation, string) (bool, error) {
	return false, nil
}

func (q *batchQueue) Backlog(context.Context, int) (int64, time.Time, error) {
	return 0, time.Time{}, nil
}

// slowStore writes after a pause and records how many writes overlap.
type slowStore struct {
	now, peak atomic.Int32
}

func (s *slowStore) Persist(_ context.Context, rs []invite.Reservation) ([]Result, error) {
	n := s.now.Add(1)
	for {
		p := s.peak.Load()
		if n <= p || s.peak.CompareAndSwap(p, n) {
			break
		}
	}
	time.Sleep(20 * time.Millisecond)
	s.now.Add(-1)
	out := make([]Result, len(rs))
	for i := range out {
		out[i].Outcome = Written
	}
	return out, nil
}

// TestReconcilerBoundsWrites: sixteen shards with a batch each, and at
// most Writers bulk inserts in flight at once; every batch is written.
func TestReconcilerBoundsWrites(t *testing.T) {
	q := &batchQueue{shards: 16, given: map[int]bool{}}
	st := &slowStore{}
	rc := NewReconciler(q, nil, ReconcilerConfig{Writers: 2, StatsEvery: time.Hour, Block: 10 * time.Millisecond})
	rc.st = st
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rc.Run(ctx); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	for q.acked.Load() < 16 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if n := q.acked.Load(); n != 16 {
		t.Fatalf("%d of 16 batches written", n)
	}
	if p := st.peak.Load(); p > 2 || p < 1 {
		t.Fatalf("%d writes in flight at once, want at most Writers (2)", p)
	}
}
