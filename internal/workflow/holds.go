package workflow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/invitegate/invitegate/internal/confirm"
	"github.com/invitegate/invitegate/internal/defaults"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/logs"
	"github.com/invitegate/invitegate/internal/reserve"
)

// Confirmation holds (docs/ARCHITECTURE.md, "Confirmation holds"): Redis
// takes, confirms and expires holds atomically (reserve.lua, confirm.lua,
// expire.lua); the streams carry each step to MongoDB's holds collection
// (persist.Persist); seeding restores live holds from it.

// Confirm turns the hold h names into a registration: invite.Created the
// first time, invite.Existing when the email already holds the code (a
// repeat). A hold that is no longer live (past its deadline, expired, or
// replaced by a later one) is invite.ErrHoldExpired. Like Reserve, it
// seeds a shard Redis lost first, and returns invite.ErrFrozen during a
// reseed of the code or an error wrapping invite.ErrUnavailable.
func (s *Signups) Confirm(ctx context.Context, h confirm.Hold) (invite.Result, error) {
	for attempt := 0; attempt < seedAttempts; attempt++ {
		out, id, err := s.res.Confirm(ctx, h.Code, h.Canonical, h.HoldID, h.Email)
		if again, err := s.repair(ctx, h.Code, err); again {
			continue
		} else if err != nil {
			return invite.Result{}, err
		}
		shard := s.res.ShardOf(h.Canonical)
		switch out {
		case reserve.Confirmed:
			return invite.Result{Outcome: invite.Created, Shard: shard, ID: id}, nil
		case reserve.AlreadyConfirmed:
			return invite.Result{Outcome: invite.Existing, Shard: shard}, nil
		case reserve.HoldExpired:
			// Its seat goes back now rather than at the next sweep.
			if _, err := s.res.Expire(ctx, shard, h.Canonical, h.Code); err != nil {
				s.log.WithError(err).Debug("expire a hold found past its deadline")
			}
		}
		return invite.Result{}, invite.ErrHoldExpired
	}
	return invite.Result{}, fmt.Errorf("%w: still unseeded after retries", invite.ErrUnavailable)
}

// ExpirerConfig tunes an Expirer. Zero values take the defaults noted.
type ExpirerConfig struct {
	// Every is the time between two sweeps of the hold indexes (default
	// 500ms): a hold's seat comes back within about this long after its
	// deadline.
	Every time.Duration
	// Batch is the most holds one sweep expires per shard (default 1000);
	// a shard with more due is swept again at once.
	Batch  int
	Logger logrus.FieldLogger
}

// Expirer gives back the seats of holds past their deadline, on every
// shard. Every replica runs one: expire.lua settles each hold once, so
// replicas sweeping the same holds give each seat back once. Deadlines are
// Redis' clock, and so is the sweep's (duehold.lua): this process's clock
// plays no part.
type Expirer struct {
	res *reserve.Reserver
	cfg ExpirerConfig
	log logrus.FieldLogger
}

// NewExpirer returns an Expirer over res.
func NewExpirer(res *reserve.Reserver, cfg ExpirerConfig) *Expirer {
	defaults.Positive(&cfg.Every, 500*time.Millisecond)
	defaults.Positive(&cfg.Batch, 1000)
	return &Expirer{res: res, cfg: cfg, log: logs.OrQuiet(cfg.Logger).WithField("component", "expirer")}
}

// Run sweeps until ctx ends. Errors (Redis away) are logged at most once
// a minute and the sweep goes on at its pace.
func (e *Expirer) Run(ctx context.Context) error {
	t := time.NewTicker(e.cfg.Every)
	defer t.Stop()
	var lastLog time.Time
	for {
		if _, err := e.Sweep(ctx); err != nil && ctx.Err() == nil && time.Since(lastLog) > time.Minute {
			lastLog = time.Now()
			e.log.WithError(err).Warn("expire holds past their deadline; retrying")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sweep expires the holds due now on every shard and returns how many it
// expired.
func (e *Expirer) Sweep(ctx context.Context) (int, error) {
	total := 0
	var errs []error
	for s := 0; s < e.res.Shards(); s++ {
		for ctx.Err() == nil {
			n, err := e.res.ExpireDue(ctx, s, e.cfg.Batch)
			total += n
			if err != nil {
				errs = append(errs, err)
				break
			}
			if n < e.cfg.Batch {
				break
			}
		}
	}
	return total, errors.Join(errs...)
}
