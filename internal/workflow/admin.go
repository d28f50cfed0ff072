package workflow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
)

// Create writes inv to MongoDB, then seeds its Redis counters so they show
// at once. It returns persist.ErrExists, or an error wrapping ErrNotSeeded
// when only the seeding failed (inv exists).
func (w *Invitations) Create(ctx context.Context, inv invite.Invitation) error {
	if err := w.store.CreateInvitation(ctx, inv); err != nil {
		return err
	}
	return w.seed(ctx, inv)
}

func (w *Invitations) seed(ctx context.Context, inv invite.Invitation) error {
	if w.res == nil {
		return nil // MongoDB alone: nothing to seed
	}
	if err := w.seeds.SeedCode(ctx, inv.Code); err != nil {
		return fmt.Errorf("%w: %w", ErrNotSeeded, err)
	}
	return nil
}

// ImportReport is what Import did.
type ImportReport struct {
	Imported, Skipped int
	// NotSeeded holds one error wrapping ErrNotSeeded per imported code
	// whose Redis counters were not created.
	NotSeeded []error
}

// Import writes invs to MongoDB in one insert, then seeds each. With
// skipExisting, codes that exist are left alone and counted; without, an
// existing code fails the import (persist.ErrExists, nothing written). An
// insert that stops part-way returns persist.ErrPartial.
func (w *Invitations) Import(ctx context.Context, invs []invite.Invitation, skipExisting bool) (ImportReport, error) {
	var rep ImportReport
	if skipExisting {
		kept := invs[:0:0]
		for _, inv := range invs {
			_, ok, err := w.store.Invitation(ctx, inv.Code)
			if err != nil {
				return rep, err
			}
			if ok {
				rep.Skipped++
				continue
			}
			kept = append(kept, inv)
		}
		invs = kept
	}
	if err := w.store.CreateInvitations(ctx, invs); err != nil {
		return rep, err
	}
	rep.Imported = len(invs)
	for _, inv := range invs {
		if err := w.seed(ctx, inv); err != nil {
			rep.NotSeeded = append(rep.NotSeeded, fmt.Errorf("%s: %w", inv.Code, err))
		}
	}
	return rep, nil
}

// SetMax changes code's capacity to n in MongoDB and in the live Redis
// buckets, and returns the capacity it had. Up: MongoDB first, then the new
// seats. Down: the seats are taken out of Redis first, then MongoDB; if
// MongoDB fails they go back. It returns persist.ErrNotFound, or an error
// wrapping ErrRefused (nothing changed) when fewer than the cut are free or
// when MongoDB alone runs the seats (it can only raise them).
func (w *Invitations) SetMax(ctx context.Context, code string, n int) (old int, err error) {
	if w.res == nil {
		return w.setMaxMongoOnly(ctx, code, n)
	}
	// Under the code's lock no seeder creates buckets from the old capacity
	// and no reseed rebuilds them meanwhile.
	unlock, err := w.res.Lock(ctx, code, lockFor)
	if err != nil {
		return 0, err
	}
	defer unlock()
	// The change ends well before the lock can expire, so no other change
	// of the code runs alongside it; what undoes a failed step runs on
	// undoCtx, which a cancelled ctx does not stop.
	ctx, cancel := context.WithTimeout(ctx, lockFor-undoFor)
	defer cancel()
	inv, err := w.invitation(ctx, code)
	if err != nil {
		return 0, err
	}
	old = inv.MaxUses
	switch {
	case n == old:
		// Repeating a set-max finishes what a failed one left: seats a
		// lowering left blocked below n come back (blocks below max_uses
		// only come from one that did not finish), and the registrations on
		// seats at or above n move below it and those seats are blocked.
		if err := w.store.UnblockSeats(ctx, code, n); err != nil {
			return old, err
		}
		return old, w.block(ctx, code, n, -1)
	case n > old:
		// MongoDB first, then the seats a lower max_uses blocked below n
		// come back, then Redis: a writer that read an older, higher
		// max_uses (before a lowering) can only land on seats below what
		// MongoDB says, and Redis admits more only once MongoDB takes them.
		// If the unblock fails, MongoDB takes fewer than max_uses says
		// (never more) until the same set-max is run again.
		if err := w.store.SetMaxUses(ctx, code, old, n); err != nil {
			return old, err
		}
		if err := w.store.UnblockSeats(ctx, code, n); err != nil {
			return old, fmt.Errorf("MongoDB has max %d, but seats a lower max blocked are not given back and Redis was not updated (run the same set-max again): %w", n, err)
		}
		if err := w.res.Grow(ctx, code, n-old, n); err != nil {
			return old, fmt.Errorf("MongoDB has max %d, but Redis was not updated (run `invitectl reseed`): %w", n, err)
		}
		return old, nil
	}
	persisted, err := w.store.Count(ctx, code)
	if err != nil {
		return old, err
	}
	if n < persisted {
		return old, fmt.Errorf("%w: %s already has %d registrations, more than %d; nothing changed", ErrRefused, code, persisted, n)
	}
	// Live holds take seats too. Redis' Shrink only removes free tokens,
	// but a Redis that lost the code's buckets restores MongoDB's live
	// holds when it is seeded again: they must fit.
	holds, err := w.store.LiveHolds(ctx, code, w.now())
	if err != nil {
		return old, err
	}
	if n < persisted+len(holds) {
		return old, fmt.Errorf("%w: %s has %d registrations and %d live holds waiting for confirmation, more than %d; nothing changed (try again once holds are confirmed or expired)", ErrRefused, code, persisted, len(holds), n)
	}
	if _, err := w.res.Shrink(ctx, code, old-n, old, n); err != nil {
		if errors.Is(err, reserve.ErrBelowTaken) {
			return old, fmt.Errorf("%w: fewer than %d of %s's seats are free; nothing changed", ErrRefused, old-n, code)
		}
		return old, err
	}
	// MongoDB's own cap: the registrations on seats n..old-1 move below n
	// and those seats are blocked, so that a writer which read the old
	// max_uses cannot take them either (persist.Store.BlockSeats).
	if err := w.block(ctx, code, n, old); err != nil {
		return old, w.putBack(ctx, code, n, old, err)
	}
	if err := w.store.SetMaxUses(ctx, code, old, n); err != nil {
		// The update may have landed although it reported an error (a
		// timeout): put the seats back only if MongoDB still says old.
		uctx, ucancel := undoCtx(ctx)
		defer ucancel()
		if now, ok, rerr := w.store.Invitation(uctx, code); rerr == nil && ok && now.MaxUses == old {
			return old, w.putBack(ctx, code, n, old, err)
		}
		return old, fmt.Errorf("MongoDB's max_uses is uncertain; check with `invitectl list` and run `invitectl reseed %s`: %w", code, err)
	}
	return old, nil
}

// putBack undoes a lowering from old to n that failed with err: MongoDB's
// blocked seats first, then Redis' (so Redis never admits onto a blocked
// seat). It returns err, or what failed while putting back.
func (w *Invitations) putBack(ctx context.Context, code string, n, old int, err error) error {
	ctx, cancel := undoCtx(ctx)
	defer cancel()
	if uerr := w.store.UnblockSeats(ctx, code, old); uerr != nil {
		return fmt.Errorf("putting seats back failed (run the same set-max again, or set-max %s %d): %w; %w", code, old, uerr, err)
	}
	if gerr := w.res.Grow(ctx, code, old-n, old); gerr != nil {
		return fmt.Errorf("putting seats back failed (run `invitectl reseed %s`): %w; %w", code, gerr, err)
	}
	return err
}

// undoFor bounds the steps that undo a failed change; they run even when
// the change's context was cancelled (an operator's Ctrl-C, a deadline).
const undoFor = 10 * time.Second

func undoCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), undoFor)
}

// block moves code's registrations on seats n..upTo-1 below n and blocks
// those seats (persist.Store.BlockSeats; upTo < 0: up to the highest seat
// in use).
func (w *Invitations) block(ctx context.Context, code string, n, upTo int) error {
	if err := w.store.BlockSeats(ctx, code, n, upTo); err != nil {
		if errors.Is(err, persist.ErrChanged) {
			return fmt.Errorf("%w: %s's registrations do not fit below %d seats (%v); nothing changed", ErrRefused, code, n, err)
		}
		return fmt.Errorf("blocking seats at or above %d failed (run the same set-max again): %w", n, err)
	}
	return nil
}

// setMaxMongoOnly raises a code's max_uses with INVITEGATE_RESERVER=mongo,
// where a seat is a document <code>#k for k below max_uses: more seats are
// simply more k. Lowering is refused: seats at or above the new max may be
// taken while free ones below it remain, so the count could pass the new
// max.
//
// NOTE: lowering it safely needs the seats above the new max moved below
// it, which is not built yet.
func (w *Invitations) setMaxMongoOnly(ctx context.Context, code string, n int) (int, error) {
	inv, err := w.invitation(ctx, code)
	if err != nil {
		return 0, err
	}
	switch {
	case n == inv.MaxUses:
		// A repeat finishes a raise whose unblock failed.
		return n, w.store.UnblockSeats(ctx, code, n)
	case n < inv.MaxUses:
		return inv.MaxUses, fmt.Errorf("%w: with INVITEGATE_RESERVER=mongo max_uses can only be raised; nothing changed", ErrRefused)
	}
	// MongoDB's max first, then the seats a lowering blocked while the
	// deployment ran on Redis come back (as SetMax does).
	if err := w.store.SetMaxUses(ctx, code, inv.MaxUses, n); err != nil {
		return inv.MaxUses, err
	}
	return inv.MaxUses, w.store.UnblockSeats(ctx, code, n)
}

// SetDisabled disables or enables code in MongoDB, then in Redis' buckets,
// under the code's lock. It returns persist.ErrNotFound.
func (w *Invitations) SetDisabled(ctx context.Context, code string, disabled bool) error {
	if w.res == nil {
		// MongoDB alone: every signup reads the invitation.
		return w.store.SetDisabled(ctx, code, disabled)
	}
	unlock, err := w.res.Lock(ctx, code, lockFor)
	if err != nil {
		return err
	}
	defer unlock()
	if err := w.store.SetDisabled(ctx, code, disabled); err != nil {
		return err
	}
	if err := w.res.SetDisabled(ctx, code, disabled); err != nil {
		return fmt.Errorf("MongoDB updated, Redis not (run `invitectl reseed`): %w", err)
	}
	return nil
}

// SetConfirmWindow changes code's confirmation window to d (0: none) in
// MongoDB, then in Redis' buckets, under the code's lock (so no seeder or
// reseed writes buckets from the old window meanwhile), and returns the
// window it had. Holds already taken keep their deadlines; the next
// signups follow d. It returns persist.ErrNotFound, or persist.ErrInvalid
// for a window out of range (nothing changed).
func (w *Invitations) SetConfirmWindow(ctx context.Context, code string, d time.Duration) (old time.Duration, err error) {
	if d != 0 && !invite.ValidConfirmWindow(d) {
		return 0, fmt.Errorf("%w: the confirmation window must be %v..%v in whole milliseconds, or none", persist.ErrInvalid, invite.MinConfirmWindow, invite.MaxConfirmWindow)
	}
	if w.res == nil {
		// MongoDB alone: no buckets to change (and no holds taken yet on
		// this path; docs/ARCHITECTURE.md, "Confirmation holds").
		inv, err := w.invitation(ctx, code)
		if err != nil {
			return 0, err
		}
		return inv.ConfirmWindow, w.store.SetConfirmWindow(ctx, code, d)
	}
	unlock, err := w.res.Lock(ctx, code, lockFor)
	if err != nil {
		return 0, err
	}
	defer unlock()
	inv, err := w.invitation(ctx, code)
	if err != nil {
		return 0, err
	}
	if err := w.store.SetConfirmWindow(ctx, code, d); err != nil {
		return inv.ConfirmWindow, err
	}
	if err := w.res.SetConfirmWindow(ctx, code, d); err != nil {
		return inv.ConfirmWindow, fmt.Errorf("MongoDB updated, Redis not (run the same set-confirm again, or `invitectl reseed %s`): %w", code, err)
	}
	return inv.ConfirmWindow, nil
}

// invitation reads code, or returns persist.ErrNotFound.
func (w *Invitations) invitation(ctx context.Context, code string) (invite.Invitation, error) {
	inv, ok, err := w.store.Invitation(ctx, code)
	if err != nil {
		return inv, err
	}
	if !ok {
		return inv, persist.ErrNotFound
	}
	return inv, nil
}

// Counters is one invitation's row in `invitectl list`.
type Counters struct {
	Code      string     `json:"code"`
	MaxUses   int        `json:"max_uses"`
	Persisted int        `json:"persisted"`
	Reserved  int        `json:"reserved"`
	Remaining int        `json:"remaining"`
	Disabled  bool       `json:"disabled"`
	Expired   bool       `json:"expired"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	Seeded    bool       `json:"seeded"`
	// ConfirmWindowMs is the code's confirmation window in ms; 0: none
	// (signups register at once).
	ConfirmWindowMs int64 `json:"confirm_window_ms"`
	// Held counts the holds MongoDB knows that wait for their email to be
	// confirmed (before their deadline); Confirmed the holds confirmed
	// (their registrations are in Persisted).
	Held      int `json:"held"`
	Confirmed int `json:"confirmed"`
	// LagSeconds is the age of the code's oldest reservation not yet in
	// MongoDB; 0 when everything is written.
	LagSeconds float64 `json:"lag_seconds"`
}

// List returns every invitation's counters: registrations from MongoDB,
// remaining seats and lag from Redis.
func (w *Invitations) List(ctx context.Context) ([]Counters, error) {
	invs, err := w.store.Invitations(ctx)
	if err != nil {
		return nil, err
	}
	counts, err := w.store.Counts(ctx)
	if err != nil {
		return nil, err
	}
	held, confirmed, err := w.store.HoldCounts(ctx, w.now())
	if err != nil {
		return nil, err
	}
	var oldest map[string]time.Time
	if w.res != nil {
		if oldest, err = w.res.OldestPending(ctx); err != nil {
			return nil, err
		}
	}
	now := w.now()
	rows := make([]Counters, 0, len(invs))
	for _, inv := range invs {
		// MongoDB alone (no Redis): every seat taken is a registration,
		// there is nothing to seed and no lag.
		rem, seeded := max(inv.MaxUses-counts[inv.Code], 0), true
		if w.res != nil {
			if rem, seeded, err = w.res.Remaining(ctx, inv.Code); err != nil {
				return nil, err
			}
		}
		r := Counters{Code: inv.Code, MaxUses: inv.MaxUses, Persisted: counts[inv.Code], Disabled: inv.Disabled, Expired: inv.Expired(now), Seeded: seeded,
			ConfirmWindowMs: inv.ConfirmWindow.Milliseconds(), Held: held[inv.Code], Confirmed: confirmed[inv.Code]}
		if !inv.ExpiresAt.IsZero() {
			t := inv.ExpiresAt
			r.ExpiresAt = &t
		}
		if t, ok := oldest[inv.Code]; ok {
			r.LagSeconds = max(now.Sub(t).Seconds(), 0)
		}
		if seeded {
			r.Remaining = rem
			// Taken in Redis but not yet in MongoDB (or stranded by a
			// crash mid-move, until the next reseed); holds apart.
			r.Reserved = max(inv.MaxUses-r.Persisted-r.Held-rem, 0)
		} else {
			r.Remaining = max(inv.MaxUses-r.Persisted, 0)
		}
		rows = append(rows, r)
	}
	return rows, nil
}
