package reserve

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

// MarkDurable records that MongoDB holds canonical's registration on code,
// so that with INVITEGATE_ACK=mongo a repeated signup is answered from
// Redis instead of reading MongoDB. Call it only after MongoDB confirmed
// the registration. A Redis that loses the mark loses nothing but the
// shortcut. It returns an error wrapping ErrUnavailable.
func (r *Reserver) MarkDurable(ctx context.Context, canonical, code string) error {
	if err := r.cmd.Set(ctx, r.keys.durable(shardOf(canonical, r.shards), canonical), code, 0).Err(); err != nil {
		return unavailable(err)
	}
	return nil
}

// Durable reports whether MarkDurable recorded canonical on code. It
// returns an error wrapping ErrUnavailable.
func (r *Reserver) Durable(ctx context.Context, canonical, code string) (bool, error) {
	v, err := r.cmd.Get(ctx, r.keys.durable(shardOf(canonical, r.shards), canonical)).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, unavailable(err)
	}
	return v == code, nil
}
