package reserve

import (
	"context"
	"errors"
	"time"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/redis/go-redis/v9"
)

// DurableMarkTTL bounds how long a mark answers for MongoDB: after a
// registration is deleted or MongoDB restored from a backup, repeats are
// checked against MongoDB again within a day at most.
const DurableMarkTTL = 24 * time.Hour

// MarkDurable records that MongoDB holds canonical's registration on code,
// so that with INVITEGATE_ACK=mongo a repeated signup is answered from
// Redis instead of reading MongoDB. Call it only after MongoDB confirmed
// the registration. A Redis that loses the mark loses nothing but the
// shortcut. It returns an error wrapping invite.ErrUnavailable.
func (r *Reserver) MarkDurable(ctx context.Context, canonical, code string) error {
	if err := r.rdb.Set(ctx, r.keys.durable(shardOf(canonical, r.shards), canonical), code, DurableMarkTTL).Err(); err != nil {
		return invite.Unavailable(err)
	}
	return nil
}

// Durable reports whether MarkDurable recorded canonical on code. It
// returns an error wrapping invite.ErrUnavailable.
func (r *Reserver) Durable(ctx context.Context, canonical, code string) (bool, error) {
	v, err := r.rdb.Get(ctx, r.keys.durable(shardOf(canonical, r.shards), canonical)).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, invite.Unavailable(err)
	}
	return v == code, nil
}
