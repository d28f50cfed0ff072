package persist

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// TestSeatBookCatchUpFailedAndCancelledLoads: a load whose reader's ctx is
// cancelled (so it loads nothing) releases everyone waiting on it; a waiter
// whose own ctx ends stops waiting while the load goes on; an older read
// answering after a newer one does not overwrite it; the next duplicate
// after a failed load reads again.
func TestSeatBookCatchUpFailedAndCancelledLoads(t *testing.T) {
	var b seatBook
	t0 := time.Now()
	lctx, lcancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	loaderDone := make(chan struct{})
	go func() {
		defer close(loaderDone)
		b.catchUp(lctx, "c", t0, func() {
			close(started)
			<-lctx.Done() // the read fails: nothing loaded
		})
	}()
	<-started
	// A waiter on that load (it began after t0): released when it ends.
	w1 := make(chan struct{})
	go func() { defer close(w1); b.catchUp(context.Background(), "c", t0, func() { t.Error("waiter read") }) }()
	// A waiter whose ctx ends first returns while the load goes on.
	wctx, wcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer wcancel()
	w2 := make(chan struct{})
	go func() { defer close(w2); b.catchUp(wctx, "c", t0, func() { t.Error("w2 read") }) }()
	select {
	case <-w2:
	case <-time.After(5 * time.Second):
		t.Fatal("a waiter whose ctx ended kept waiting")
	}
	lcancel()
	for _, ch := range []chan struct{}{loaderDone, w1} {
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatal("a failed load left its waiters hanging")
		}
	}
	// The next duplicate (later insert) reads again.
	var reads atomic.Int32
	t1 := time.Now()
	b.catchUp(context.Background(), "c", t1, func() { reads.Add(1); b.load("c", []int{1, 2}, nil, time.Now()) })
	if reads.Load() != 1 {
		t.Fatalf("after a failed load, %d reads, want 1", reads.Load())
	}
	// An older read answering late does not replace the newer one.
	b.load("c", nil, nil, t0)
	if b.freeFrom("c", 0, 5) != 3 || !b.codes["c"].taken[1] {
		t.Fatalf("an older read overwrote a newer one: %v", b.codes["c"].taken)
	}
	// Done: a later catchUp for an earlier insert does not read.
	b.catchUp(context.Background(), "c", t1, func() { t.Error("read again for an insert the last read covers") })
}
