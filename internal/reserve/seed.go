package reserve

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/invite"
)

// claimBatch is how many claims one pipelined round trip writes while seeding.
const claimBatch = 500

// Seeded reports whether every shard carries the seeded sentinel for this
// shard count. It returns ErrShardMismatch if a shard was seeded for another.
//
// NOTE: a sentinel proves that Redis was seeded, not that it still holds
// everything since: a failover to a lagging replica or an everysec AOF that
// lost its last second keeps the sentinels and silently frees the lost
// seats and claims. Recording Redis' replication ID (INFO replication
// master_replid) next to the sentinel and reseeding every code when it
// changes would close that; today the runbook says `invitectl reseed --all`.
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

// SeedIfNeeded seeds Redis from the Source unless every shard is already
// seeded; what Redis holds is never overwritten.
func (r *Reserver) SeedIfNeeded(ctx context.Context) error {
	ok, err := r.Seeded(ctx)
	if err != nil || ok {
		return err
	}
	return r.SeedAll(ctx)
}

// SeedAll fills Redis from the Source without disturbing what it already
// holds: every registration's email claim (SET NX), every usable code's
// buckets (created only where missing, see SeedCode), then each shard's
// sentinel. Several processes may run it at once: every write is
// create-if-absent and bucket creation is serialized per code by a lock.
func (r *Reserver) SeedAll(ctx context.Context) error {
	start := time.Now()
	invs, err := r.src.Invitations(ctx)
	if err != nil {
		return invite.Unavailable(fmt.Errorf("seed: list invitations: %w", err))
	}
	counts, err := r.writeClaims(ctx, "", false)
	if err != nil {
		return err
	}
	for _, inv := range invs {
		if err := r.seedBucketsLocked(ctx, inv, counts[inv.Code]); err != nil {
			return err
		}
	}
	for s := 0; s < r.shards; s++ {
		if err := r.rdb.SetNX(ctx, r.keys.sentinel(s), r.kArg, 0).Err(); err != nil {
			return invite.Unavailable(err)
		}
	}
	if _, err := r.Seeded(ctx); err != nil {
		return err
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	r.log.WithFields(map[string]any{
		"invitations": len(invs), "registrations": total, "shards": r.shards, "took": time.Since(start).String(),
	}).Info("seeded redis from mongodb")
	return nil
}

// SeedCode creates inv's buckets where they are missing, after restoring
// the claims of its registrations. Buckets are only ever created, never
// overwritten; see seedBuckets for how missing ones are sized.
func (r *Reserver) SeedCode(ctx context.Context, inv invite.Invitation) error {
	counts, err := r.writeClaims(ctx, inv.Code, false)
	if err != nil {
		return err
	}
	if err := r.seedBucketsLocked(ctx, inv, counts[inv.Code]); err != nil {
		return err
	}
	r.log.WithField("code", inv.Code).Debug("seeded invitation")
	return nil
}

// writeClaims writes a claim for each registration of code ("" for all) and
// returns the number of registrations per code. Seeding writes only
// missing claims; overwrite (a reseed) makes MongoDB's answer win.
func (r *Reserver) writeClaims(ctx context.Context, code string, overwrite bool) (map[string]int, error) {
	counts := make(map[string]int)
	pipe := r.rdb.Pipeline()
	flush := func() error {
		if pipe.Len() == 0 {
			return nil
		}
		_, err := pipe.Exec(ctx)
		if err != nil {
			return invite.Unavailable(err)
		}
		return nil
	}
	err := r.src.ForEachRegistration(ctx, code, func(canonical, c string) error {
		counts[c]++
		key := r.keys.claim(shardOf(canonical, r.shards), canonical)
		if overwrite {
			pipe.Set(ctx, key, c, 0)
		} else {
			pipe.SetNX(ctx, key, c, 0)
		}
		if pipe.Len() >= claimBatch {
			return flush()
		}
		return nil
	})
	if err != nil {
		return nil, invite.Unavailable(fmt.Errorf("seed: read registrations: %w", err))
	}
	return counts, flush()
}

// seedBucketsLocked runs seedBuckets under code's lock, with the invitation
// read again under it: invitectl set-max, disable and reseed hold the same
// lock, so a seeder never creates buckets from a capacity they changed.
func (r *Reserver) seedBucketsLocked(ctx context.Context, inv invite.Invitation, persisted int) error {
	unlock, err := r.Lock(ctx, inv.Code, r.cfg.LockTTL)
	if err != nil {
		return err
	}
	defer unlock()
	fresh, ok, err := r.src.Invitation(ctx, inv.Code)
	if err != nil {
		return invite.Unavailable(err)
	}
	if !ok {
		return nil
	}
	return r.seedBuckets(ctx, fresh, persisted)
}

// seedBuckets creates the missing buckets of inv. When none exists, the
// remaining capacity (max_uses minus persisted registrations) is split over
// the shards. When some exist, Redis lost part of its data (one cluster node
// wiped): the missing buckets start empty, because the surviving ones may
// already hold tokens moved there and a fresh split could hand out seats
// twice. That strands capacity, which `invitectl reseed` gives back; it
// never over-admits.
func (r *Reserver) seedBuckets(ctx context.Context, inv invite.Invitation, persisted int) error {
	exists := make([]bool, r.shards)
	present := 0
	for s := 0; s < r.shards; s++ {
		n, err := r.rdb.Exists(ctx, r.keys.bucket(s, inv.Code)).Result()
		if err != nil {
			return invite.Unavailable(err)
		}
		if n == 1 {
			exists[s] = true
			present++
		}
	}
	if present == r.shards {
		return nil
	}
	amounts := split(inv.MaxUses-persisted, r.shards)
	if present > 0 {
		r.log.WithFields(map[string]any{"code": inv.Code, "present": present, "shards": r.shards}).
			Warn("some buckets of this code are missing; recreating them empty, run `invitectl reseed` to restore capacity")
		clear(amounts)
	}
	f := bucketState(inv)
	f.epoch = newToken()
	for s := 0; s < r.shards; s++ {
		if exists[s] {
			continue
		}
		f.tokens = amounts[s]
		if _, err := evalSeed(ctx, r.rdb, r.keys.bucket(s, inv.Code), f); err != nil {
			return err
		}
	}
	return nil
}

// bucketState is inv's state as its buckets hold it (without tokens and
// epoch).
func bucketState(inv invite.Invitation) bucketFields {
	f := bucketFields{disabled: inv.Disabled}
	if !inv.ExpiresAt.IsZero() {
		f.expires = inv.ExpiresAt.UnixMilli()
	}
	return f
}
