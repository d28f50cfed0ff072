package defaults_test

import (
	"testing"
	"time"

	"github.com/invitegate/invitegate/internal/defaults"
)

func TestPositive(t *testing.T) {
	for _, c := range []struct{ in, want time.Duration }{{0, time.Second}, {-time.Millisecond, time.Second}, {time.Millisecond, time.Millisecond}} {
		v := c.in
		if defaults.Positive(&v, time.Second); v != c.want {
			t.Errorf("Positive(%v, 1s) = %v, want %v", c.in, v, c.want)
		}
	}
	n := -3
	if defaults.Positive(&n, 8); n != 8 {
		t.Errorf("Positive(-3, 8) = %d, want 8", n)
	}
}
