package reserve

import (
	"context"
	"errors"
	"strings"
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
// Redis instead of reading MongoDB. id, when known, is the reservation's
// stream entry that MongoDB confirmed: the reconciler then acknowledges that
// entry without writing it again (Committed). Call it only after MongoDB
// confirmed the registration. A Redis that loses the mark loses nothing but
// the shortcut. It returns an error wrapping invite.ErrUnavailable.
func (r *Reserver) MarkPersisted(ctx context.Context, canonical, code, id string) error {
	v := code
	if id != "" {
		v = code + markSep + id
	}
	if err := r.rdb.Set(ctx, r.keys.persisted(shardOf(canonical, r.shards), canonical), v, PersistedMarkTTL).Err(); err != nil {
		return invite.Unavailable(err)
	}
	return nil
}

// markSep separates a persisted mark's code from its entry ID; it is not a
// code character.
const markSep = "|"

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
	c, _, _ := strings.Cut(v, markSep)
	return c == code, nil
}

// Committed reports, for each reservation of shard's stream in rs, whether
// MarkPersisted recorded that very entry (its code and ID): MongoDB holds
// it already, written by the INVITEGATE_ACK=mongo group commit. One round
// trip: a shard's marks share its hash slot. It returns an error wrapping
// invite.ErrUnavailable.
func (r *Reserver) Committed(ctx context.Context, shard int, rs []invite.Reservation) ([]bool, error) {
	out := make([]bool, len(rs))
	if len(rs) == 0 {
		return out, nil
	}
	ks := make([]string, len(rs))
	for i, res := range rs {
		ks[i] = r.keys.persisted(shard, res.Canonical)
	}
	vs, err := r.rdb.MGet(ctx, ks...).Result()
	if err != nil {
		return nil, invite.Unavailable(err)
	}
	for i, v := range vs {
		s, ok := v.(string)
		out[i] = ok && rs[i].ID != "" && s == rs[i].Code+markSep+rs[i].ID
	}
	return out, nil
}
