package reserve

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/invite"
)

// Remaining returns the tokens left for code summed over all shards; ok is
// false when no shard has a bucket for it.
func (r *Reserver) Remaining(ctx context.Context, code string) (remaining int, ok bool, err error) {
	for s := 0; s < r.shards; s++ {
		v, err := r.rdb.HGet(ctx, r.keys.bucket(s, code), "tok").Int()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return 0, false, invite.Unavailable(err)
		}
		ok = true
		remaining += v
	}
	return remaining, ok, nil
}

// Status reports whether code takes signups, from Redis' live counters:
// full when every shard's bucket is empty, ErrNoBucket when no shard has
// one (seed, then ask again: workflow.Signups does). It reads every shard
// in one pipelined round trip.
func (r *Reserver) Status(ctx context.Context, code string) (invite.Status, error) {
	if !invite.ValidCode(code) {
		return "", invite.ErrUnknownCode
	}
	p := r.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, r.shards)
	for s := range cmds {
		cmds[s] = p.HMGet(ctx, r.keys.bucket(s, code), "tok", "dis", "exp")
	}
	if _, err := p.Exec(ctx); err != nil {
		return "", invite.Unavailable(err)
	}
	tokens, seen := 0, false
	var dis, exp any
	for _, c := range cmds {
		v := c.Val()
		if len(v) != 3 || v[0] == nil {
			continue
		}
		seen = true
		n, _ := strconv.Atoi(fmt.Sprint(v[0]))
		tokens += n
		dis, exp = v[1], v[2]
	}
	switch {
	case !seen:
		return "", ErrNoBucket
	case dis == "1":
		return invite.StatusDisabled, nil
	}
	if ms, _ := strconv.ParseInt(fmt.Sprint(exp), 10, 64); ms > 0 && r.cfg.Now().UnixMilli() >= ms {
		return invite.StatusExpired, nil
	}
	if tokens <= 0 {
		return invite.StatusFull, nil
	}
	return invite.StatusOpen, nil
}
