package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/invitegate/invitegate/internal/invite"
)

// parseWindow reads a confirmation window as an operator writes it: a Go
// duration (90s, 30m, 1h30m) with an optional leading number of days (7d,
// 1d12h), since a week is the longest window and "168h" reads badly; off
// or 0 is no window (0 returned). Anything else, or a window outside
// invite.MinConfirmWindow..MaxConfirmWindow, is an error.
func parseWindow(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "off") || s == "0" {
		return 0, nil
	}
	bad := fmt.Errorf("%q: want a duration such as 30m, 1h30m, 7d or 1d12h (1s..7d), or off", s)
	if s == "" {
		return 0, bad
	}
	var d time.Duration
	rest := s
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		days, err := strconv.Atoi(s[:i])
		if err != nil || days < 0 || s[0] == '+' || s[0] == '-' {
			return 0, bad
		}
		if days > int(invite.MaxConfirmWindow/(24*time.Hour)) {
			return 0, outOfRange(s)
		}
		d, rest = time.Duration(days)*24*time.Hour, s[i+1:]
		if strings.HasPrefix(rest, "-") || strings.HasPrefix(rest, "+") {
			return 0, bad // "1d-1h"
		}
	}
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil {
			return 0, bad
		}
		d += r
	}
	if d != 0 && !invite.ValidConfirmWindow(d) {
		return 0, outOfRange(s)
	}
	return d, nil
}

func outOfRange(s string) error {
	return fmt.Errorf("%q: a confirmation window must be 1s..7d in whole milliseconds (or off)", s)
}

// formatWindow writes a confirmation window the way parseWindow reads it,
// shortest first: 30m, 1h30m, 7d, 1d12h; "-" for none.
func formatWindow(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	var b strings.Builder
	if days := d / (24 * time.Hour); days > 0 {
		fmt.Fprintf(&b, "%dd", days)
		d -= days * 24 * time.Hour
	}
	if d > 0 {
		s := d.String() // 1h30m0s, 1h0m0s, 1.5s
		if strings.HasSuffix(s, "m0s") {
			s = s[:len(s)-2]
		}
		if strings.HasSuffix(s, "h0m") {
			s = s[:len(s)-2]
		}
		b.WriteString(s)
	}
	return b.String()
}
