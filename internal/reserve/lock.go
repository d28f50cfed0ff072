package reserve

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/invitegate/invitegate/internal/invite"
)

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
