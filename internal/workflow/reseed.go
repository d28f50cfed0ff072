package workflow

import (
	"context"
	"fmt"
	"time"

	"github.com/invitegate/invitegate/internal/persist"
)

// ReseedReport is what a reseed of one code found and rebuilt.
type ReseedReport struct {
	Code       string
	MaxUses    int
	Registered int
	// Pending is how many reservations were still in the streams and were
	// written to MongoDB while the code was frozen.
	Pending int
	// Refused is how many of them MongoDB refused for being over max_uses
	// (Redis had admitted past the truth): they are not registrations.
	Refused int
	// Released is how many seats in MongoDB no registration held and no
	// pending reservation waited for; they were given back.
	Released int
	// Frozen is how long the code refused signups.
	Frozen time.Duration
}

// StrandedAfter is how old a seat no registration holds must be before a
// reseed gives it back: younger ones may belong to a writer still under
// way (writes are bounded by 10 s; a MongoDB may finish one later).
const StrandedAfter = time.Minute

// Remaining is the code's seats left after the rebuild.
func (r ReseedReport) Remaining() int { return max(r.MaxUses-r.Registered, 0) }

// StepError is a reseed that stopped at Step; the code reopens by itself
// within FreezeFor, and running the reseed again finishes it.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string {
	return fmt.Sprintf("%s: %v (the code reopens within %s; run the reseed again)", e.Step, e.Err, FreezeFor)
}

func (e *StepError) Unwrap() error { return e.Err }

// RestoreMissing fills in what Redis lacks (claims, buckets, the shared
// sentinels) from MongoDB and touches nothing it holds. It returns
// ErrNoRedis on a deployment without Redis.
func (w *Invitations) RestoreMissing(ctx context.Context) error {
	if w.res == nil {
		return ErrNoRedis
	}
	return w.seeds.SeedAll(ctx)
}

// ReseedAll reseeds every invitation in turn, calling done after each, and
// stops at the first failure.
func (w *Invitations) ReseedAll(ctx context.Context, done func(ReseedReport)) error {
	if w.res == nil {
		return ErrNoRedis
	}
	invs, err := w.store.Invitations(ctx)
	if err != nil {
		return err
	}
	for _, inv := range invs {
		rep, err := w.Reseed(ctx, inv.Code)
		if err != nil {
			return fmt.Errorf("%s: %w", inv.Code, err)
		}
		done(rep)
	}
	return nil
}

// Reseed rebuilds code's Redis state exactly from MongoDB under live
// traffic: lock and freeze it, write its pending reservations to MongoDB,
// restore its claims, rebuild its buckets from MongoDB's count, reopen.
// It returns persist.ErrNotFound, ErrNoRedis, or a *StepError.
func (w *Invitations) Reseed(ctx context.Context, code string) (ReseedReport, error) {
	rep := ReseedReport{Code: code}
	if w.res == nil {
		return rep, ErrNoRedis
	}
	fail := func(step string, err error) (ReseedReport, error) {
		return rep, &StepError{Step: step, Err: err}
	}
	if _, ok, err := w.store.Invitation(ctx, code); err != nil {
		return fail("read invitation", err)
	} else if !ok {
		return rep, persist.ErrNotFound
	}
	start := w.now()
	// The code's lock keeps seeders and other invitation changes out; the
	// freeze keeps signups out.
	unlock, err := w.res.Lock(ctx, code, FreezeFor)
	if err != nil {
		return fail("lock", err)
	}
	defer unlock()
	owner, err := w.res.Freeze(ctx, code, FreezeFor)
	if err != nil {
		return fail("freeze", err)
	}
	// Read after freezing: what the rebuild uses is what MongoDB says now.
	inv, ok, err := w.store.Invitation(ctx, code)
	if err != nil || !ok {
		return fail("read invitation", fmt.Errorf("gone or unreadable: %v", err))
	}
	pending, err := w.res.Pending(ctx, code)
	if err != nil {
		return fail("read pending reservations", err)
	}
	// Seats no registration holds and no pending reservation waits for
	// (a stream entry lost with Redis' data after its seat was taken)
	// would make MongoDB refuse signups Redis admits: give them back
	// first, the pending reservations may need them.
	emails := make([]string, len(pending))
	for i, r := range pending {
		emails[i] = r.Canonical
	}
	if rep.Released, err = w.store.ReleaseStrandedSeats(ctx, code, emails, w.now().Add(-StrandedAfter)); err != nil {
		return fail("release stranded seats", err)
	}
	results, err := w.store.Admit(ctx, pending)
	if err != nil {
		return fail("write pending reservations", err)
	}
	for i, r := range results {
		switch r.Outcome {
		case persist.Written, persist.AlreadyWritten:
		case persist.Refused:
			// Over max_uses in MongoDB: not written, so not counted
			// below; the reconciler refuses it again, counts and acks it.
			rep.Refused++
		case persist.Conflict:
			// Marks the entry as given back, so the reconciler's later
			// pass cannot add a token to the rebuilt bucket.
			if _, err := w.res.GiveBack(ctx, pending[i], r.Owner); err != nil {
				return fail("undo a refused reservation", err)
			}
		default:
			return fail("write pending reservations", fmt.Errorf("MongoDB did not take %d of them", len(pending)-i))
		}
	}
	counts, err := writeClaims(ctx, w.res, w.store, code, true)
	if err != nil {
		return fail("restore claims", err)
	}
	persisted := counts[code]
	if err := w.res.Rebuild(ctx, inv, persisted, owner); err != nil {
		return fail("rebuild buckets", err)
	}
	rep.MaxUses, rep.Registered, rep.Pending = inv.MaxUses, persisted, len(pending)
	rep.Frozen = w.now().Sub(start)
	return rep, nil
}
