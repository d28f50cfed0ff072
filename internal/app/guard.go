package app

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/email"
)

// limiter is the per-client rate limit: GCRA in Redis by redis_rate.
type limiter struct {
	l      *redis_rate.Limiter
	limit  redis_rate.Limit
	prefix string
}

func newLimiter(rdb redis.UniversalClient, ns string, limit redis_rate.Limit) *limiter {
	return &limiter{l: redis_rate.NewLimiter(rdb), limit: limit, prefix: ns + ":rl:"}
}

func (l *limiter) Allow(ctx context.Context, client string) (bool, time.Duration, error) {
	// A limiter that cannot answer fast is skipped, not waited for.
	ctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
	defer cancel()
	r, err := l.l.Allow(ctx, l.prefix+client, l.limit)
	if err != nil {
		return false, 0, err
	}
	return r.Allowed > 0, r.RetryAfter, nil
}

// loadBlockedDomains reads a list of email domains to refuse: one per line,
// blank lines and # comments ignored, normalized the way addresses are (so
// an IDN domain matches in either form).
func loadBlockedDomains(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("INVITEGATE_BLOCKED_DOMAINS_FILE: %w", err)
	}
	defer f.Close()
	out := make(map[string]bool)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		d, err := email.NormalizeDomain(line)
		if err != nil {
			return nil, fmt.Errorf("INVITEGATE_BLOCKED_DOMAINS_FILE %s:%d: %q is not a mail domain", path, n, line)
		}
		out[d] = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("INVITEGATE_BLOCKED_DOMAINS_FILE: %w", err)
	}
	return out, nil
}
