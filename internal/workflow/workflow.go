// Package workflow owns invitegate's operations that span Redis and
// MongoDB: a signup on the Redis path, seeding Redis from MongoDB on
// demand; creating and importing invitations (MongoDB, then Redis'
// counters), changing a code's capacity or state in both stores under the
// code's lock, reseeding a code under live traffic (freeze, drain,
// rebuild), listing counters from both, and acknowledging a signup only
// once MongoDB holds it (INVITEGATE_ACK=mongo). The binaries parse, call
// and print; the order of the steps, and what each failure leaves behind,
// is decided here.
package workflow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
)

// Errors of the invitation workflows, besides persist's (ErrNotFound,
// ErrExists, ErrPartial, ErrDatabase) and invite's.
var (
	// ErrRefused means the change was refused and nothing changed; the
	// wrapping error says why.
	ErrRefused = errors.New("refused")
	// ErrNoRedis means the operation rebuilds Redis, and this deployment
	// runs without it (INVITEGATE_RESERVER=mongo).
	ErrNoRedis = errors.New("this deployment runs without Redis (INVITEGATE_RESERVER=mongo), where MongoDB's seats are the only counters")
	// ErrNotSeeded means MongoDB holds the change but Redis' counters were
	// not created; the service seeds them on first use. It is a warning:
	// the operation succeeded.
	ErrNotSeeded = errors.New("seeding Redis failed (the service seeds it on first use)")
)

// Invitations runs the invitation workflows on a deployment's stores.
type Invitations struct {
	store *persist.Store
	res   *reserve.Reserver // nil: MongoDB alone (INVITEGATE_RESERVER=mongo)
	seeds *Signups          // nil with res
	now   func() time.Time
}

// NewInvitations returns the workflows over store and res; res is nil for
// a deployment that runs on MongoDB alone. now defaults to time.Now.
func NewInvitations(store *persist.Store, res *reserve.Reserver, now func() time.Time) *Invitations {
	if now == nil {
		now = time.Now
	}
	w := &Invitations{store: store, res: res, now: now}
	if res != nil {
		w.seeds = NewSignups(res, store, SignupsConfig{Now: now})
	}
	return w
}

// lockFor bounds how long an invitation change holds the code's lock
// (seeders and other changes wait for it); a crashed holder delays them at
// most this long.
const lockFor = 30 * time.Second

// FreezeFor bounds how long a reseed keeps a code closed; if the caller
// dies mid-way the code reopens by itself (with its old state, or some
// seats unused if the rebuild had begun).
const FreezeFor = 30 * time.Second

// CheckShards compares a process's INVITEGATE_SHARDS with what the
// deployment recorded in MongoDB and seeded into Redis: a wrong count would
// write to the wrong shards. res is nil on a deployment without Redis.
func CheckShards(ctx context.Context, store *persist.Store, res *reserve.Reserver, shards int) error {
	recorded, ok, err := store.Shards(ctx)
	if err != nil {
		return err
	}
	if ok && recorded != shards {
		return fmt.Errorf("INVITEGATE_SHARDS=%d, but this deployment runs %d shards", shards, recorded)
	}
	if res == nil {
		return nil
	}
	if _, err := res.Seeded(ctx); err != nil {
		return fmt.Errorf("INVITEGATE_SHARDS=%d: %w", shards, err)
	}
	return nil
}
