package reserve

import (
	"context"
	"time"

	"github.com/invitegate/invitegate/internal/invite"
)

// giveBackMarkerTTL keeps the "token already returned" marker long enough
// for any redelivery of the same entry.
const giveBackMarkerTTL = 7 * 24 * time.Hour

// GiveBack undoes reservation res, which MongoDB refused because the email
// belongs to owner: the token goes back to the bucket (once, even if res is
// delivered again), the claim is pointed at owner, and the code's sold-out
// marks are cleared. It reports whether a token was returned.
func (r *Reserver) GiveBack(ctx context.Context, res invite.Reservation, owner string) (bool, error) {
	returned, err := evalGiveBack(ctx, r.rdb, r.keys.bucket(res.Shard, res.Code), r.keys.claim(res.Shard, res.Canonical),
		r.keys.givenBack(res.Shard, res.ID), res.Code, owner, giveBackMarkerTTL)
	if err != nil {
		return false, err
	}
	if returned {
		r.metrics.GiveBacks.Inc()
		if err := r.Reopen(ctx, res.Code); err != nil {
			return true, err
		}
	}
	return returned, nil
}
