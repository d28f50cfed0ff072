package reserve

import (
	"context"
	"errors"
	"time"

	"github.com/invitegate/invitegate/internal/invite"
)

// Reseeding one code under live traffic (invitectl reseed CODE):
//
//  1. Freeze: every shard's bucket refuses signups (invite.ErrFrozen, a 503 with
//     Retry-After) until a deadline, and gives no tokens to sweeps.
//  2. Pending: every reservation of the code still in the streams is read;
//     the caller writes them to MongoDB (idempotent inserts).
//  3. Claims (overwriting) + Rebuild: claims of the code's registrations
//     are set from MongoDB, and every bucket is replaced by max_uses minus the
//     registrations, in a new epoch, unfrozen.
//
// Once every shard is frozen no reservation of the code can happen, so
// after step 2 MongoDB holds every seat taken, and the rebuilt tokens are
// exact. Tokens a sweep took before the freeze carry the old epoch and are
// dropped when deposited. If the caller dies, the freeze expires by itself:
// before step 3 the old state stands; once it began, some buckets may be left
// empty (seats unused, never too many) until the reseed runs again.

// ErrFreezeLost means a reseed's freeze expired or another reseed took the
// code over before the rebuild; nothing was rebuilt, or (if it happened
// half-way) some seats are left unused until the next reseed.
var ErrFreezeLost = errors.New("reserve: the reseed's freeze expired or was taken over")

// Freeze stops code's signups on every shard for ttl (by Redis' clock) on
// behalf of a new reseed, and returns the reseed's owner token.
func (r *Reserver) Freeze(ctx context.Context, code string, ttl time.Duration) (owner string, err error) {
	owner = newToken()
	for s := 0; s < r.shards; s++ {
		if err := evalFreeze(ctx, r.rdb, r.keys.bucket(s, code), ttl, owner); err != nil {
			return "", err
		}
	}
	return owner, nil
}

// Rebuild replaces every bucket of inv with max_uses minus persisted
// tokens, less the code's live holds (counted and moved into the new
// epoch once every shard is zeroed: holds), split over the shards, in a
// new epoch, unfrozen. Call it only
// with the code frozen by owner and its pending reservations written. It
// zeroes every shard first and only then opens them, and each step checks
// that owner's freeze still holds, so stopping at any point, or losing the
// freeze, can only leave seats unused (ErrFreezeLost), never add any.
func (r *Reserver) Rebuild(ctx context.Context, inv invite.Invitation, persisted int, owner string) error {
	f := bucketState(inv)
	f.epoch = newToken()
	for s := 0; s < r.shards; s++ {
		held, err := evalRebuildZero(ctx, r.rdb, r.keys.bucket(s, inv.Code), owner, f.epoch)
		if err != nil {
			return err
		}
		if !held {
			return ErrFreezeLost
		}
	}
	live, err := r.restampHolds(ctx, inv.Code, f.epoch, owner)
	if err != nil {
		return err
	}
	for s, tok := range split(max(inv.MaxUses-persisted-live, 0), r.shards) {
		f.tokens = tok
		held, err := evalRebuildOpen(ctx, r.rdb, r.keys.bucket(s, inv.Code), owner, f)
		if err != nil {
			return err
		}
		if !held {
			return ErrFreezeLost
		}
	}
	return nil
}
