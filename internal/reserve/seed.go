package reserve

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/invite"
)

// Seeding is a workflow (internal/workflow reads MongoDB and calls these);
// this file holds its Redis steps. Every write here is create-if-absent
// unless the caller asks to overwrite, so several processes may seed at
// once.

var (
	// ErrNoBucket means the code has no counters on the shard the call ran
	// on: it was never seeded, or Redis lost them. It wraps
	// invite.ErrUnavailable: a caller that cannot seed answers 503.
	ErrNoBucket = fmt.Errorf("%w: the code has no counters in redis", invite.ErrUnavailable)
	// ErrNotSeeded means a shard lacks its seed mark: Redis was never
	// seeded, or was wiped. It wraps invite.ErrUnavailable.
	ErrNotSeeded = fmt.Errorf("%w: redis is not seeded", invite.ErrUnavailable)
)

// claimBatch is how many claims one pipelined round trip writes while seeding.
const claimBatch = 500

// Seeded reports whether every shard carries the seeded sentinel for this
// shard count. It returns ErrShardMismatch if a shard was seeded for another.
func (r *Reserver) Seeded(ctx context.Context) (bool, error) {
	all := true
	for s := 0; s < r.shards; s++ {
		v, err := r.rdb.Get(ctx, r.keys.sentinel(s)).Result()
		if errors.Is(err, redis.Nil) {
			all = false
			continue
		}
		if err != nil {
			return false, invite.Unavailable(err)
		}
		if v != r.kArg {
			return false, fmt.Errorf("%w: shard %d seeded for %s shards, this process runs %d", ErrShardMismatch, s, v, r.shards)
		}
	}
	return all, nil
}

// MarkSeeded records the Redis history of every shard that has none
// (history.lua), then sets every shard's seeded sentinel where it is
// missing, once the claims and buckets are written, and checks that none was seeded for
// another shard count.
func (r *Reserver) MarkSeeded(ctx context.Context) error {
	if err := r.InitHistories(ctx); err != nil {
		return err
	}
	for s := 0; s < r.shards; s++ {
		if err := r.rdb.SetNX(ctx, r.keys.sentinel(s), r.kArg, 0).Err(); err != nil {
			return invite.Unavailable(err)
		}
	}
	_, err := r.Seeded(ctx)
	return err
}

// ClaimWriter writes email claims in pipelined batches. Seeding writes
// only missing claims; overwriting (a reseed) makes MongoDB's answer win.
type ClaimWriter struct {
	r         *Reserver
	ctx       context.Context
	pipe      redis.Pipeliner
	overwrite bool
}

// Claims returns a ClaimWriter; call Flush once every claim is added.
func (r *Reserver) Claims(ctx context.Context, overwrite bool) *ClaimWriter {
	return &ClaimWriter{r: r, ctx: ctx, pipe: r.rdb.Pipeline(), overwrite: overwrite}
}

// Add queues the claim of canonical on code, sending a batch when one is full.
func (w *ClaimWriter) Add(canonical, code string) error {
	key := w.r.keys.claim(shardOf(canonical, w.r.shards), canonical)
	if w.overwrite {
		w.pipe.Set(w.ctx, key, code, 0)
	} else {
		w.pipe.SetNX(w.ctx, key, code, 0)
	}
	if w.pipe.Len() >= claimBatch {
		return w.Flush()
	}
	return nil
}

// Flush sends the queued claims.
func (w *ClaimWriter) Flush() error {
	if w.pipe.Len() == 0 {
		return nil
	}
	if _, err := w.pipe.Exec(w.ctx); err != nil {
		return invite.Unavailable(err)
	}
	return nil
}

// SeedBuckets creates the missing buckets of inv; call it under the code's
// lock (Lock) with inv read under it, so it never creates buckets from a
// capacity an invitation change just replaced. When none exists, the
// remaining capacity (max_uses minus persisted registrations) is split
// over the shards, in a new epoch. When some exist, Redis lost part of its
// data (one cluster node wiped): the missing buckets start empty, because
// the surviving ones may already hold tokens moved there and a fresh split
// could hand out seats twice. That strands capacity, which `invitectl
// reseed` gives back; it never over-admits. They take the survivors'
// epoch, so tokens swept from those into them are kept, not dropped.
func (r *Reserver) SeedBuckets(ctx context.Context, inv invite.Invitation, persisted int) error {
	_, _, err := r.SeedBucketsEpoch(ctx, inv, persisted)
	return err
}

// SeedBucketsEpoch is SeedBuckets, and returns the epoch of the code's
// buckets after it, and whether this call created all of them from
// persisted (fresh is false when some or all existed: those did not count
// persisted). Holds counted in persisted are restored only into fresh
// buckets, in their epoch, so that their expiry gives their seat back
// there.
func (r *Reserver) SeedBucketsEpoch(ctx context.Context, inv invite.Invitation, persisted int) (epoch string, fresh bool, err error) {
	exists := make([]bool, r.shards)
	present := 0
	for s := 0; s < r.shards; s++ {
		ep, err := r.rdb.HGet(ctx, r.keys.bucket(s, inv.Code), "ep").Result()
		if errors.Is(err, redis.Nil) {
			// No bucket, or one without an epoch (none is created so).
			if n, err := r.rdb.Exists(ctx, r.keys.bucket(s, inv.Code)).Result(); err != nil {
				return "", false, invite.Unavailable(err)
			} else if n == 0 {
				continue
			}
		} else if err != nil {
			return "", false, invite.Unavailable(err)
		}
		exists[s] = true
		present++
		epoch = ep
	}
	if present == r.shards {
		return epoch, false, nil
	}
	amounts := split(max(inv.MaxUses-persisted, 0), r.shards)
	if present > 0 {
		r.log.WithFields(map[string]any{"code": inv.Code, "present": present, "shards": r.shards}).
			Warn("some buckets of this code are missing; recreating them empty, run `invitectl reseed` to restore capacity")
		clear(amounts)
	}
	f := bucketState(inv)
	f.epoch = newToken()
	if present > 0 {
		f.epoch = epoch
	}
	for s := 0; s < r.shards; s++ {
		if exists[s] {
			continue
		}
		f.tokens = amounts[s]
		if _, err := evalSeed(ctx, r.rdb, r.keys.bucket(s, inv.Code), f); err != nil {
			return "", false, err
		}
	}
	return f.epoch, present == 0, nil
}

// bucketState is inv's state as its buckets hold it (without tokens and
// epoch).
func bucketState(inv invite.Invitation) bucketFields {
	f := bucketFields{disabled: inv.Disabled, window: max(inv.ConfirmWindow.Milliseconds(), 0)}
	if !inv.ExpiresAt.IsZero() {
		f.expires = inv.ExpiresAt.UnixMilli()
	}
	return f
}
