package reserve

import (
	"context"
	"errors"
	"time"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/redis/go-redis/v9"
)

// PersistedMarkTTL bounds how long a persisted mark answers for MongoDB: after a
// registration is deleted or MongoDB restored from a backup, repeats are
// checked against MongoDB again within a day at most.
const PersistedMarkTTL = 24 * time.Hour

// MarkPersisted records that MongoDB holds canonical's registration on code,
// so that with INVITEGATE_ACK=mongo a repeated signup is answered from
// Redis instead of reading MongoDB. Call it only after MongoDB confirmed
// the registration. A Redis that loses the mark loses nothing but the
// shortcut. It returns an error wrapping invite.ErrUnavailable.
func (r *Reserver) MarkPersisted(ctx context.Context, canonical, code string) error {
	if err := r.rdb.Set(ctx, r.keys.persisted(shardOf(canonical, r.shards), canonical), code, PersistedMarkTTL).Err(); err != nil {
		return invite.Unavailable(err)
	}
	return nil
}

// Persisted reports whether MarkPersisted recorded canonical on code. It
// returns an error wrapping invite.ErrUnavailable.
func (r *Reserver) Persisted(ctx context.Context, canonical, code string) (bool, error) {
	v, err := r.rdb.Get(ctx, r.keys.persisted(shardOf(canonical, r.shards), canonical)).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, invite.Unavailable(err)
	}
	return v == code, nil
}
