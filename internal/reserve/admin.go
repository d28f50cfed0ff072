package reserve

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrBelowTaken means a capacity cut would go below the seats already
// taken; nothing was changed.
var ErrBelowTaken = errors.New("reserve: new capacity is below the seats already taken")

// Grow adds n seats to code's live buckets, split over the shards, and
// clears sold-out marks, so a full code reopens at once. A code with no
// buckets is left alone: seeding reads the new capacity from MongoDB.
// Redis does not record the capacity, so newMax is unused.
func (r *Reserver) Grow(ctx context.Context, code string, n, newMax int) error {
	if n < 0 {
		return fmt.Errorf("reserve: grow by %d", n)
	}
	for s, add := range split(n, r.shards) {
		if _, _, err := evalAdjust(ctx, r.rdb, r.keys.bucket(s, code), bucketChange{tokens: add}); err != nil {
			return err
		}
	}
	return nil
}

// Shrink removes n unused seats from code's live buckets. If fewer than n
// seats are unused it puts back what it took and returns ErrBelowTaken: a
// cut never takes a seat someone holds, even with signups running. seeded
// is false when the code has no buckets (nothing to take; MongoDB's count
// is then the only check). Redis does not record the capacity, so oldMax
// and newMax are unused.
func (r *Reserver) Shrink(ctx context.Context, code string, n, oldMax, newMax int) (seeded bool, err error) {
	taken := make([]int, r.shards)
	need := n
	for s := 0; s < r.shards && need > 0; s++ {
		got, ok, err := evalAdjust(ctx, r.rdb, r.keys.bucket(s, code), bucketChange{tokens: -need})
		if err != nil {
			r.undoShrink(ctx, code, taken)
			return true, err
		}
		if !ok {
			continue
		}
		seeded = true
		taken[s] = got
		need -= got
	}
	if !seeded {
		return false, nil
	}
	if need > 0 {
		r.undoShrink(ctx, code, taken)
		return true, ErrBelowTaken
	}
	return true, nil
}

func (r *Reserver) undoShrink(ctx context.Context, code string, taken []int) {
	for s, n := range taken {
		if _, _, err := evalAdjust(ctx, r.rdb, r.keys.bucket(s, code), bucketChange{tokens: n}); err != nil {
			r.log.WithError(err).WithField("code", code).Error("could not put back seats after a refused cut; run `invitectl reseed`")
		}
	}
}

// SetDisabled marks code disabled (or enabled) on every live bucket; every
// replica sees it on its next request.
func (r *Reserver) SetDisabled(ctx context.Context, code string, disabled bool) error {
	for s := 0; s < r.shards; s++ {
		if _, _, err := evalAdjust(ctx, r.rdb, r.keys.bucket(s, code), bucketChange{disabled: &disabled}); err != nil {
			return err
		}
	}
	return nil
}

// SetConfirmWindow sets code's confirmation window on every live bucket
// (0: none, the field is removed), so the next signup on any replica takes
// a hold, or registers at once. Holds already taken keep their deadlines.
// A code with no buckets is left alone: seeding reads MongoDB's window.
func (r *Reserver) SetConfirmWindow(ctx context.Context, code string, d time.Duration) error {
	ms := max(d.Milliseconds(), 0)
	for s := 0; s < r.shards; s++ {
		if _, _, err := evalAdjust(ctx, r.rdb, r.keys.bucket(s, code), bucketChange{window: &ms}); err != nil {
			return err
		}
	}
	return nil
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
