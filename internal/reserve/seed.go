package reserve

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
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

// newToken returns a random identifier (lock holders, epochs, freezes).
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Lock takes code's lock, waiting for a holder to finish: seeding holds it
// while it creates buckets, invitectl while it changes or reseeds the code.
// It expires after ttl, so a crashed holder delays others, never blocks
// them.
func (r *Reserver) Lock(ctx context.Context, code string, ttl time.Duration) (unlock func(), err error) {
	token := newToken()
	key := r.keys.lock(code)
	for {
		ok, err := r.rdb.SetNX(ctx, key, token, ttl).Result()
		if err != nil {
			return nil, invite.Unavailable(err)
		}
		if ok {
			return func() {
				uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
				defer cancel()
				if _, err := evalUnlock(uctx, r.rdb, key, token); err != nil {
					r.log.WithError(err).WithField("code", code).Warn("release seeding lock; it expires by itself")
				}
			}, nil
		}
		select {
		case <-ctx.Done():
			return nil, invite.Unavailable(ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Reopen clears every shard's sold-out mark for code, so tokens that came
// back are found by the next request instead of after SoldOutTTL.
func (r *Reserver) Reopen(ctx context.Context, code string) error {
	for s := 0; s < r.shards; s++ {
		if _, _, err := evalAdjust(ctx, r.rdb, r.keys.bucket(s, code), bucketChange{}); err != nil {
			return err
		}
	}
	return nil
}

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

// bucketState is inv's state as its buckets hold it (without tokens and
// epoch).
func bucketState(inv invite.Invitation) bucketFields {
	f := bucketFields{disabled: inv.Disabled}
	if !inv.ExpiresAt.IsZero() {
		f.expires = inv.ExpiresAt.UnixMilli()
	}
	return f
}

// Status reports whether code takes signups, from Redis' live counters:
// invite.ErrUnknownCode for a code MongoDB does not have (answered from the same
// snapshot as Reserve, so random codes do not reach MongoDB), full when
// every shard's bucket is empty. It reads every shard in one pipelined
// round trip and seeds a code whose buckets are missing.
func (r *Reserver) Status(ctx context.Context, code string) (invite.Status, error) {
	if !invite.ValidCode(code) {
		return "", invite.ErrUnknownCode
	}
	for attempt := 0; attempt < 2; attempt++ {
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
		if !seen {
			if err := r.ensureCode(ctx, code); err != nil {
				return "", err
			}
			continue
		}
		if dis == "1" {
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
	return "", fmt.Errorf("%w: code %q still unseeded", invite.ErrUnavailable, code)
}
