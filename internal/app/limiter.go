package app

import (
	"context"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
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
