package persist

import (
	"testing"
	"time"
)

// TestBackoffDelays pins the reconciler's waits between failed attempts:
// 50ms, doubling, capped at 5s, no jitter; reset starts over.
func TestBackoffDelays(t *testing.T) {
	want := []time.Duration{50, 100, 200, 400, 800, 1600, 3200, 5000, 5000}
	var b backoff
	for round := 0; round < 2; round++ {
		for i, ms := range want {
			if got := b.next(); got != ms*time.Millisecond {
				t.Fatalf("round %d, wait %d: %s, want %s", round, i+1, got, ms*time.Millisecond)
			}
		}
		b.reset()
	}
}
