package workflow

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/singleflight"

	"github.com/invitegate/invitegate/internal/defaults"
	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/logs"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
)

// Source is what seeding reads from MongoDB; *persist.Store implements it.
type Source interface {
	// Invitation returns the invitation named code; ok is false when there
	// is none (or it is unusable, e.g. max_uses out of range).
	Invitation(ctx context.Context, code string) (inv invite.Invitation, ok bool, err error)
	// Invitations returns every usable invitation.
	Invitations(ctx context.Context) ([]invite.Invitation, error)
	// ForEachRegistration calls fn for each registration of code, or of all
	// codes when code is "".
	ForEachRegistration(ctx context.Context, code string, fn func(canonical, code string) error) error
	// LiveHolds returns the holds of code ("" for all) held and not past
	// their deadline at now, whose email has no registration.
	LiveHolds(ctx context.Context, code string, now time.Time) ([]persist.Hold, error)
}

// SignupsConfig tunes Signups. Zero values take the defaults noted.
type SignupsConfig struct {
	// UnknownTTL is how long the snapshot of MongoDB's codes is trusted:
	// an unknown code is answered from it, so random codes cannot hammer
	// MongoDB, and a new code works after at most this long (default 2s).
	UnknownTTL time.Duration
	// LockTTL bounds how long a crashed seeder blocks a code (default 10s).
	LockTTL time.Duration
	// Stale, when set, is called when a signup meets a shard whose Redis
	// changed history (reserve.ErrHistory): Failover.Wake.
	Stale  func()
	Now    func() time.Time
	Logger logrus.FieldLogger
}

// Signups is the Redis path of a signup (invite.Reserver): the reservation
// runs in Redis, and Redis is seeded from MongoDB on demand, when the
// code's counters or a shard's seed mark are missing (a new code, a fresh
// or wiped Redis).
type Signups struct {
	res *reserve.Reserver
	src Source
	cfg SignupsConfig
	log logrus.FieldLogger

	seedAll singleflight.Group
	seedOne singleflight.Group

	mu    sync.Mutex
	known knownCodes
}

var _ invite.Reserver = (*Signups)(nil)

// NewSignups returns the Redis signup path over res, seeding from src.
func NewSignups(res *reserve.Reserver, src Source, cfg SignupsConfig) *Signups {
	defaults.Positive(&cfg.UnknownTTL, 2*time.Second)
	defaults.Positive(&cfg.LockTTL, 10*time.Second)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := logs.OrQuiet(cfg.Logger).WithField("component", "seed")
	return &Signups{res: res, src: src, cfg: cfg, log: log}
}

// seedAttempts bounds the seedings one request runs; more than a few means
// something keeps wiping Redis under it.
const seedAttempts = 5

// Reserve takes one seat of code for a in Redis, seeding first what Redis
// lacks, with the outcomes and errors of invite.Reserver.
func (s *Signups) Reserve(ctx context.Context, code string, a email.Address) (invite.Result, error) {
	for attempt := 0; attempt < seedAttempts; attempt++ {
		res, err := s.res.Reserve(ctx, code, a)
		if again, err := s.repair(ctx, code, err); !again {
			return res, err
		}
	}
	return invite.Result{}, fmt.Errorf("%w: code %q still unseeded after retries", invite.ErrUnavailable, code)
}

// Status reports whether code takes signups, from Redis, seeding the
// code's counters first if they are missing.
func (s *Signups) Status(ctx context.Context, code string) (invite.Status, error) {
	for attempt := 0; attempt < seedAttempts; attempt++ {
		st, err := s.res.Status(ctx, code)
		if again, err := s.repair(ctx, code, err); !again {
			return st, err
		}
	}
	return "", fmt.Errorf("%w: code %q still unseeded after retries", invite.ErrUnavailable, code)
}

// repair seeds what err says Redis lacks; again is true when the call
// should run again.
func (s *Signups) repair(ctx context.Context, code string, err error) (again bool, _ error) {
	switch {
	case errors.Is(err, reserve.ErrNoBucket):
		if err := s.ensureCode(ctx, code); err != nil {
			return false, err
		}
		return true, nil
	case errors.Is(err, reserve.ErrNotSeeded):
		if err := s.seedShared(ctx); err != nil {
			return false, err
		}
		return true, nil
	case errors.Is(err, reserve.ErrHistory) && s.cfg.Stale != nil:
		s.cfg.Stale() // the answer stays 503 until the shard is rebuilt
	}
	return false, err
}

// SeedIfNeeded seeds Redis from MongoDB unless every shard is already
// seeded; what Redis holds is never overwritten. A seeded Redis whose
// shards have no history recorded (seeded by an older release) gets the
// current one, so a failover after this start is noticed.
func (s *Signups) SeedIfNeeded(ctx context.Context) error {
	ok, err := s.res.Seeded(ctx)
	if err != nil {
		return err
	}
	if ok {
		return s.res.InitHistories(ctx)
	}
	return s.SeedAll(ctx)
}

// SeedAll fills Redis from MongoDB without disturbing what it already
// holds: every registration's email claim (SET NX), every usable code's
// buckets (created only where missing, see reserve.SeedBuckets), then each
// shard's sentinel. Several processes may run it at once: every write is
// create-if-absent and bucket creation is serialized per code by a lock.
func (s *Signups) SeedAll(ctx context.Context) error {
	start := time.Now()
	invs, err := s.src.Invitations(ctx)
	if err != nil {
		return invite.Unavailable(fmt.Errorf("seed: list invitations: %w", err))
	}
	// Holds before registrations: a hold confirmed and written between the
	// two reads is then in both, and dropped from the holds; read the other
	// way round it could be in neither.
	holds, err := liveHolds(ctx, s.src, "", s.cfg.Now())
	if err != nil {
		return err
	}
	counts, registered, err := writeClaims(ctx, s.res, s.src, "", false)
	if err != nil {
		return err
	}
	dropRegistered(holds, registered)
	for _, inv := range invs {
		if err := s.seedBuckets(ctx, inv.Code, counts[inv.Code], holds[inv.Code]); err != nil {
			return err
		}
	}
	if err := s.res.MarkSeeded(ctx); err != nil {
		return err
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	s.log.WithFields(map[string]any{
		"invitations": len(invs), "registrations": total, "shards": s.res.Shards(), "took": time.Since(start).String(),
	}).Info("seeded redis from mongodb")
	return nil
}

// SeedCode creates code's buckets where they are missing, after restoring
// the claims of its registrations. Buckets are only ever created, never
// overwritten.
func (s *Signups) SeedCode(ctx context.Context, code string) error {
	holds, err := liveHolds(ctx, s.src, code, s.cfg.Now()) // before registrations: see SeedAll
	if err != nil {
		return err
	}
	counts, registered, err := writeClaims(ctx, s.res, s.src, code, false)
	if err != nil {
		return err
	}
	dropRegistered(holds, registered)
	if err := s.seedBuckets(ctx, code, counts[code], holds[code]); err != nil {
		return err
	}
	s.log.WithField("code", code).Debug("seeded invitation")
	return nil
}

// seedBuckets creates code's missing buckets under the code's lock, from
// the invitation read under it: invitation changes and reseeds hold the
// same lock, so a seeder never creates buckets from a capacity they
// changed. The code's live holds are counted against its capacity and,
// when this call created every bucket (a wiped Redis), their claims are
// restored in the buckets' epoch, so their expiry gives the seats back
// there.
func (s *Signups) seedBuckets(ctx context.Context, code string, persisted int, holds []reserve.HoldRecord) error {
	unlock, err := s.res.Lock(ctx, code, s.cfg.LockTTL)
	if err != nil {
		return err
	}
	defer unlock()
	inv, ok, err := s.src.Invitation(ctx, code)
	if err != nil {
		return invite.Unavailable(err)
	}
	if !ok {
		return nil
	}
	if over := persisted + len(holds) - inv.MaxUses; over > 0 {
		// More than fit (max_uses lowered by another tool meanwhile):
		// the seats go to the registrations and to the holds that end
		// last; the others are not restored (their confirmation is
		// refused).
		over = min(over, len(holds))
		slices.SortFunc(holds, func(a, b reserve.HoldRecord) int { return a.Deadline.Compare(b.Deadline) })
		s.log.WithFields(map[string]any{"code": code, "dropped": over}).Warn("live holds that no longer fit below max_uses are not restored")
		holds = holds[over:]
	}
	epoch, fresh, err := s.res.SeedBucketsEpoch(ctx, inv, persisted+len(holds))
	if err != nil || !fresh {
		// Buckets that existed did not count these holds: a hold Redis
		// lost with them stays lost (its seat unused, its confirmation
		// refused) until `invitectl reseed`, which restores and counts it.
		return err
	}
	_, err = s.res.RestoreHolds(ctx, holds, epoch)
	return err
}

// dropRegistered removes from holds (by code) those whose email has a
// registration: a hold confirmed after the holds were read.
func dropRegistered(holds map[string][]reserve.HoldRecord, registered map[string]bool) {
	for code, hs := range holds {
		holds[code] = slices.DeleteFunc(hs, func(h reserve.HoldRecord) bool { return registered[h.Canonical] })
	}
}

// holdClockSlack widens the read of live holds: deadlines are Redis'
// clock, and a replica whose clock runs ahead of it would miss holds that
// still live. The ones it reads that are in fact over are not restored
// (restorehold.lua checks Redis' clock); counted by a seeding, they leave
// a seat unused until the next reseed, never one too many.
const holdClockSlack = 5 * time.Second

// liveHolds reads the live holds of code ("" for all) from MongoDB, by
// code.
func liveHolds(ctx context.Context, src Source, code string, now time.Time) (map[string][]reserve.HoldRecord, error) {
	hs, err := src.LiveHolds(ctx, code, now.Add(-holdClockSlack))
	if err != nil {
		return nil, invite.Unavailable(fmt.Errorf("seed: read holds: %w", err))
	}
	out := map[string][]reserve.HoldRecord{}
	for _, h := range hs {
		out[h.Invitation] = append(out[h.Invitation], reserve.HoldRecord{Canonical: h.Canonical, Code: h.Invitation, HoldID: h.HoldID, Deadline: h.Deadline})
	}
	return out, nil
}

// writeClaims writes a claim for each registration of code ("" for all)
// and returns the number of registrations per code and the registered
// canonical emails. Seeding writes only missing claims; overwrite (a
// reseed) makes MongoDB's answer win.
func writeClaims(ctx context.Context, res *reserve.Reserver, src Source, code string, overwrite bool) (map[string]int, map[string]bool, error) {
	counts := make(map[string]int)
	registered := make(map[string]bool)
	w := res.Claims(ctx, overwrite)
	err := src.ForEachRegistration(ctx, code, func(canonical, c string) error {
		counts[c]++
		registered[canonical] = true
		return w.Add(canonical, c)
	})
	if err != nil {
		return nil, nil, invite.Unavailable(fmt.Errorf("seed: read registrations: %w", err))
	}
	return counts, registered, w.Flush()
}

// knownCodes is a snapshot of the usable invitation codes in MongoDB.
type knownCodes struct {
	until time.Time // refresh after
	codes map[string]struct{}
}

// ensureCode makes sure code's buckets exist. Whether code exists at all
// is answered from a snapshot of MongoDB's codes refreshed at most every
// UnknownTTL, so a flood of random codes costs MongoDB one query per
// UnknownTTL per replica, not one per code. It returns
// invite.ErrUnknownCode if MongoDB has no usable invitation by that name.
func (s *Signups) ensureCode(ctx context.Context, code string) error {
	ok, err := s.isKnown(ctx, code)
	if err != nil {
		return err
	}
	if !ok {
		return invite.ErrUnknownCode
	}
	ch := s.seedOne.DoChan(code, func() (any, error) {
		// Detached from one request's cancellation: other requests wait on
		// the same seeding; bounded by its own timeout.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.LockTTL)
		defer cancel()
		if _, ok, err := s.src.Invitation(sctx, code); err != nil {
			return nil, invite.Unavailable(err)
		} else if !ok {
			return nil, invite.ErrUnknownCode
		}
		return nil, s.SeedCode(sctx, code)
	})
	select {
	case res := <-ch:
		return res.Err
	case <-ctx.Done():
		return invite.Unavailable(ctx.Err())
	}
}

// isKnown reports whether code is in the snapshot of MongoDB's codes,
// refreshing the snapshot first when it is older than UnknownTTL.
func (s *Signups) isKnown(ctx context.Context, code string) (bool, error) {
	now := s.cfg.Now()
	s.mu.Lock()
	snap := s.known
	s.mu.Unlock()
	if now.Before(snap.until) {
		_, ok := snap.codes[code]
		return ok, nil
	}
	ch := s.seedOne.DoChan("\x00codes", func() (any, error) {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.LockTTL)
		defer cancel()
		invs, err := s.src.Invitations(sctx)
		if err != nil {
			return nil, invite.Unavailable(err)
		}
		codes := make(map[string]struct{}, len(invs))
		for _, inv := range invs {
			codes[inv.Code] = struct{}{}
		}
		s.mu.Lock()
		s.known = knownCodes{until: s.cfg.Now().Add(s.cfg.UnknownTTL), codes: codes}
		s.mu.Unlock()
		return codes, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return false, res.Err
		}
		_, ok := res.Val.(map[string]struct{})[code]
		return ok, nil
	case <-ctx.Done():
		return false, invite.Unavailable(ctx.Err())
	}
}

// seedShared runs SeedAll once per process at a time; concurrent callers
// share its result.
func (s *Signups) seedShared(ctx context.Context) error {
	ch := s.seedAll.DoChan("all", func() (any, error) {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		return nil, s.SeedAll(sctx)
	})
	select {
	case res := <-ch:
		if res.Err != nil && !errors.Is(res.Err, reserve.ErrShardMismatch) {
			return invite.Unavailable(res.Err)
		}
		return res.Err
	case <-ctx.Done():
		return invite.Unavailable(ctx.Err())
	}
}
