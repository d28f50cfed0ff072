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
	// claimed is when each entry was last delivered or kept.
	claimed map[string]time.Time
	// first, when set, is the batch every shard's first read gets instead
	// of one reservation.
	first []invite.Reservation
}

func (q *batchQueue) Shards() int { return q.shards }

func (q *batchQueue) Read(ctx context.Context, shard int, _ string, _ int, block time.Duration) ([]invite.Reservation, error) {
	q.mu.Lock()
	first := !q.given[shard]
	q.given[shard] = true
	q.mu.Unlock()
	if first && q.first != nil {
		return q.first, nil
	}
	if first {
		id := "0-" + strconv.Itoa(shard)
		q.mu.Lock()
		if q.claimed != nil {
			q.claimed[id] = time.Now()
		}
		q.mu.Unlock()
		return []invite.Reservation{{ID: id, Shard: shard, Code: "c", Canonical: "e", Email: "e"}}, nil
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

func (q *batchQueue) ReplicationID(context.Context, int) (string, error) { return "", nil }

func (q *batchQueue) Present(_ context.Context, _ int, ids ...string) ([]string, error) {
	return ids, nil
}

func (q *batchQueue) Keep(_ context.Context, _ int, _ string, ids ...string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, id := range ids {
		if q.claimed != nil {
			q.claimed[id] = time.Now()
		}
	}
	return nil
}

func (q *batchQueue) GiveBack(context.Context, invite.Reservation, string) (bool, error) {
	return false, nil
}

func (q *batchQueue) Backlog(context.Context, int) (int64, time.Time, error) {
	return 0, time.Time{}, nil
}

// slowStore writes after a pause and records how many writes overlap, and
// (with q) the longest any entry went unclaimed before its write began.
type slowStore struct {
	now, peak atomic.Int32
	pause     time.Duration
	q         *batchQueue
	mu        sync.Mutex
	worstGap  time.Duration
}

func (s *slowStore) Persist(_ context.Context, rs []invite.Reservation) ([]Result, error) {
	if s.q != nil {
		s.q.mu.Lock()
		s.mu.Lock()
		for _, r := range rs {
			s.worstGap = max(s.worstGap, time.Since(s.q.claimed[r.ID]))
		}
		s.mu.Unlock()
		s.q.mu.Unlock()
	}
	n := s.now.Add(1)
	for {
		p := s.peak.Load()
		if n <= p || s.peak.CompareAndSwap(p, n) {
			break
		}
	}
	time.Sleep(max(s.pause, 20*time.Millisecond))
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
	runUntilWritten(t, rc, q)
	if p := st.peak.Load(); p > 2 || p < 1 {
		t.Fatalf("%d writes in flight at once, want at most Writers (2)", p)
	}
}

// TestReconcilerKeepsWhileQueued: workers queued behind one slow write
// slot keep renewing their claims, so no batch goes unclaimed for
// ClaimIdle before its write begins (HoldFor counts only attempts that
// failed, not waiting for a slot).
func TestReconcilerKeepsWhileQueued(t *testing.T) {
	const idle = 600 * time.Millisecond
	q := &batchQueue{shards: 8, given: map[int]bool{}, claimed: map[string]time.Time{}}
	st := &slowStore{pause: 300 * time.Millisecond, q: q}
	rc := NewReconciler(q, nil, ReconcilerConfig{Writers: 1, ClaimIdle: idle, StatsEvery: time.Hour, Block: 10 * time.Millisecond})
	rc.st = st
	runUntilWritten(t, rc, q)
	if st.worstGap >= idle {
		t.Fatalf("a batch went %s without its claim renewed before its write began, ClaimIdle %s", st.worstGap, idle)
	}
}

// runUntilWritten runs rc until every shard's batch is acknowledged.
func runUntilWritten(t *testing.T, rc *Reconciler, q *batchQueue) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rc.Run(ctx); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	for int(q.acked.Load()) < q.shards && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if n := q.acked.Load(); int(n) != q.shards {
		t.Fatalf("%d of %d batches written", n, q.shards)
	}
}

func (q *batchQueue) Committed(_ context.Context, _ int, rs []invite.Reservation) ([]bool, error) {
	return make([]bool, len(rs)), nil
}
