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
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
)

// durable is the Reserver behind INVITEGATE_ACK=mongo: a signup is
// answered only once MongoDB holds it, so losing Redis entirely (a
// failover with asynchronous replication, a lost disk) loses nothing that
// was acknowledged. Past the timeout the answer is 503; the reservation
// stays in Redis and the reconciler writes it, so a retry answers 200.
// Once MongoDB confirmed a registration, a mark next to the email's claim
// lets repeats be answered by Redis alone.
type durable struct {
	res     *reserve.Reserver
	st      *persist.Store
	commit  *persist.Committer
	timeout time.Duration
	now     func() time.Time
}

func (d durable) Reserve(ctx context.Context, code string, a email.Address) (invite.Result, error) {
	at := d.now()
	res, err := d.res.Reserve(ctx, code, a)
	if err != nil {
		return res, err
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	if res.Outcome == invite.Existing {
		// A repeat: answered from Redis once MongoDB is known to hold it.
		if ok, err := d.res.Durable(ctx, a.Canonical, code); err != nil || ok {
			return res, err
		}
		reg, ok, err := d.st.Registration(ctx, a.Canonical)
		if err != nil {
			return invite.Result{}, invite.Unavailable(err)
		}
		if ok && reg.Invitation == code {
			d.markDurable(ctx, a.Canonical, code)
			return res, nil
		}
		if ok {
			return invite.Result{}, invite.ErrEmailTaken
		}
		// Redis has the claim and MongoDB not yet: an earlier attempt
		// timed out before its write landed. Write it now.
	}
	out, err := d.commit.Commit(ctx, invite.Reservation{
		ID: res.ID, Shard: res.Shard, Code: code, Canonical: a.Canonical, Email: a.Normalized, ReservedAt: at,
	})
	if err != nil {
		return invite.Result{}, invite.Unavailable(err)
	}
	if out.Outcome == persist.Conflict {
		// MongoDB has the email on another code (Redis had lost the
		// claim); the reconciler gives this reservation's seat back.
		return invite.Result{}, invite.ErrEmailTaken
	}
	d.markDurable(ctx, a.Canonical, code)
	return res, nil
}

// markDurable is best effort: without the mark the next repeat reads
// MongoDB once more.
func (d durable) markDurable(ctx context.Context, canonical, code string) {
	_ = d.res.MarkDurable(ctx, canonical, code)
}

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
