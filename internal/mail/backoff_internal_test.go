package mail

import (
	"testing"
	"time"
)

// TestBackoffDelays pins the waits after each failed attempt: RetryBase,
// doubling, capped at RetryMax, no jitter.
func TestBackoffDelays(t *testing.T) {
	for _, tc := range []struct {
		name      string
		base, max time.Duration
		want      []time.Duration // after failure 1, 2, ...
	}{
		{"defaults", 30 * time.Second, time.Hour, []time.Duration{
			30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute,
			16 * time.Minute, 32 * time.Minute, time.Hour, time.Hour, time.Hour}},
		{"cap between doublings", time.Second, 5 * time.Second, []time.Duration{
			time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}},
		{"cap is a doubling", time.Second, 4 * time.Second, []time.Duration{
			time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}},
		{"base above the cap", time.Minute, time.Second, []time.Duration{time.Second, time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(nil, nil, Config{RetryBase: tc.base, RetryMax: tc.max})
			for i, want := range tc.want {
				if got := m.backoff(i + 1); got != want {
					t.Errorf("backoff(%d) = %s, want %s", i+1, got, want)
				}
			}
		})
	}
}
