package invite

import (
	"strings"
	"testing"
	"time"
)

func TestValidCode(t *testing.T) {
	tests := []struct {
		code string
		want bool
	}{
		{"twitter-reg1", true},
		{"A_b-9", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"", false},
		{"a/b", false},
		{"..", false},
		{"a b", false},
		{"a%2Fb", false},
		{"a\x00", false},
		{"é", false},
		{"a.b", false},
	}
	for _, tt := range tests {
		if got := ValidCode(tt.code); got != tt.want {
			t.Errorf("ValidCode(%q) = %v, want %v", tt.code, got, tt.want)
		}
	}
}

func TestValidMaxUses(t *testing.T) {
	for n, want := range map[int]bool{-1: false, 0: false, 1: true, 1000: true, 1001: false} {
		if got := ValidMaxUses(n); got != want {
			t.Errorf("ValidMaxUses(%d) = %v, want %v", n, got, want)
		}
	}
}

func TestValidConfirmWindow(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want bool
	}{
		{0, false}, // no window: not a window
		{-time.Second, false},
		{time.Second - time.Millisecond, false},
		{time.Second, true},
		{time.Second + time.Millisecond, true},
		{time.Second + time.Microsecond, false}, // not whole milliseconds
		{30 * time.Minute, true},
		{7 * 24 * time.Hour, true},
		{7*24*time.Hour + time.Millisecond, false},
	}
	for _, tt := range tests {
		if got := ValidConfirmWindow(tt.d); got != tt.want {
			t.Errorf("ValidConfirmWindow(%v) = %v, want %v", tt.d, got, tt.want)
		}
	}
}

func TestExpired(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		exp  time.Time
		want bool
	}{
		{time.Time{}, false},
		{now.Add(time.Second), false},
		{now, true},
		{now.Add(-time.Second), true},
	}
	for _, tt := range tests {
		if got := (Invitation{ExpiresAt: tt.exp}).Expired(now); got != tt.want {
			t.Errorf("Expired(exp=%v) = %v, want %v", tt.exp, got, tt.want)
		}
	}
}
