package workflow

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/invitegate/invitegate/internal/invite"
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
	// Frozen is how long the code refused signups.
	Frozen time.Duration
}

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
	if w.res == nil {
		return ReseedReport{Code: code}, ErrNoRedis
	}
	if _, ok, err := w.store.Invitation(ctx, code); err != nil {
		return ReseedReport{Code: code}, &StepError{Step: "read invitation", Err: err}
	} else if !ok {
		return ReseedReport{Code: code}, persist.ErrNotFound
	}
	f, err := w.freeze(ctx, code)
	if err != nil {
		return f.rep, err
	}
	defer f.unlock()
	// Seats blocked below max_uses can only be left by a set-max down that
	// did not finish (its blocks come before MongoDB's max changes): the
	// rebuild gives Redis max_uses less the registrations, so MongoDB must
	// take as many.
	if err := w.store.UnblockSeats(ctx, code, f.inv.MaxUses); err != nil {
		return f.rep, &StepError{Step: "unblock seats", Err: err}
	}
	pending, err := w.res.Pending(ctx, code)
	if err != nil {
		return f.rep, &StepError{Step: "read pending reservations", Err: err}
	}
	frozen := []frozenCode{f}
	err = w.settle(ctx, frozen, map[string][]invite.Reservation{code: pending}, nil)
	return frozen[0].rep, err
}

// frozenCode is a code a reseed holds: locked, frozen, read again.
type frozenCode struct {
	rep    ReseedReport
	inv    invite.Invitation
	owner  string // the freeze's
	start  time.Time
	unlock func()
}

// freeze takes code's lock (seeders and invitation changes wait) and
// freezes it (signups wait), then reads the invitation again: what the
// rebuild uses is what MongoDB says now.
func (w *Invitations) freeze(ctx context.Context, code string) (frozenCode, error) {
	f := frozenCode{rep: ReseedReport{Code: code}, start: w.now(), unlock: func() {}}
	unlock, err := w.res.Lock(ctx, code, FreezeFor)
	if err != nil {
		return f, &StepError{Step: "lock", Err: err}
	}
	f.unlock = unlock
	if f.owner, err = w.res.Freeze(ctx, code, FreezeFor); err != nil {
		unlock()
		return f, &StepError{Step: "freeze", Err: err}
	}
	inv, ok, err := w.store.Invitation(ctx, code)
	if err != nil || !ok {
		unlock()
		return f, &StepError{Step: "read invitation", Err: fmt.Errorf("gone or unreadable: %v", err)}
	}
	f.inv = inv
	return f, nil
}

// settle finishes the reseeds of frozen codes: their pending reservations
// (read after the freeze, by code) go to MongoDB, their claims come back
// from MongoDB, their buckets are rebuilt from MongoDB's count. Each step
// runs once for all the codes.
func (w *Invitations) settle(ctx context.Context, frozen []frozenCode, pending map[string][]invite.Reservation, st *stepTimes) error {
	fail := func(step string, err error) error { return &StepError{Step: step, Err: err} }
	var all []invite.Reservation
	for _, f := range frozen {
		all = append(all, pending[f.inv.Code]...)
	}
	if len(all) > 0 {
		results, err := w.persistPending(ctx, all)
		if err != nil {
			return fail("write pending reservations", err)
		}
		failed := 0
		for _, r := range results {
			if r.Outcome == persist.Failed {
				failed++
			}
		}
		for i, r := range results {
			switch r.Outcome {
			case persist.Written, persist.AlreadyWritten:
			case persist.Refused:
				// Over the cap in MongoDB: not written; the reconciler
				// settles the entry, and the rebuild counts MongoDB.
			case persist.Conflict:
				// Marks the entry as given back, so the reconciler's later
				// pass cannot add a token to the rebuilt bucket.
				if _, err := w.res.GiveBack(ctx, all[i], r.Owner); err != nil {
					return fail("undo a refused reservation", err)
				}
			default:
				return fail("write pending reservations", fmt.Errorf("MongoDB did not take %d of %d", failed, len(all)))
			}
		}
	}
	st.mark("write pending")
	code := ""
	if len(frozen) == 1 {
		code = frozen[0].inv.Code
	}
	counts, _, err := writeClaims(ctx, w.res, w.store, code, true)
	if err != nil {
		return fail("restore claims", err)
	}
	// Live holds MongoDB recorded and Redis lost come back (the email's
	// claim, if any, wins); the rebuild counts every live hold Redis has.
	holds, err := liveHolds(ctx, w.store, code, w.now())
	if err != nil {
		return fail("restore holds", err)
	}
	for _, f := range frozen {
		if _, err := w.res.RestoreHolds(ctx, holds[f.inv.Code], ""); err != nil {
			return fail("restore holds", err)
		}
	}
	st.mark("restore claims")
	for i := range frozen {
		f := &frozen[i]
		c := f.inv.Code
		if err := w.res.Rebuild(ctx, f.inv, counts[c], f.owner); err != nil {
			return fmt.Errorf("%s: %w", c, fail("rebuild buckets", err))
		}
		f.rep.MaxUses, f.rep.Registered, f.rep.Pending = f.inv.MaxUses, counts[c], len(pending[c])
		f.rep.Frozen = w.now().Sub(f.start)
	}
	return nil
}

// pendingTries bounds how often persistPending writes the rows MongoDB did
// not take yet; pendingPause is its first pause between tries, doubled
// each time.
const (
	pendingTries = 6
	pendingPause = 50 * time.Millisecond
)

// persistPending writes a reseed's pending reservations, trying again the
// rows that came back Failed (a seat lost to a reconciler writing the same
// entries, a duplicate not yet readable), up to pendingTries times, so
// that one contended row does not make the whole reseed start over.
func (w *Invitations) persistPending(ctx context.Context, all []invite.Reservation) ([]persist.Result, error) {
	results, err := w.store.Persist(ctx, all)
	if err != nil {
		return nil, err
	}
	pause := pendingPause
	for try := 1; try < pendingTries; try++ {
		var idx []int
		for i, r := range results {
			if r.Outcome == persist.Failed && !r.NoInvitation {
				idx = append(idx, i)
			}
		}
		if len(idx) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return results, nil
		case <-time.After(pause):
		}
		pause *= 2
		again := make([]invite.Reservation, len(idx))
		for n, i := range idx {
			again[n] = all[i]
		}
		res, err := w.store.Persist(ctx, again)
		if err != nil {
			return results, nil // the caller reports the rows still Failed
		}
		for n, i := range idx {
			results[i] = res[n]
		}
	}
	return results, nil
}

// stepTimes records how long each step of a pass took, for its log line;
// a nil *stepTimes records nothing.
type stepTimes struct {
	last  time.Time
	parts []string
}

func newStepTimes() *stepTimes { return &stepTimes{last: time.Now()} }

func (s *stepTimes) mark(step string) {
	if s == nil {
		return
	}
	now := time.Now()
	s.parts = append(s.parts, step+" "+now.Sub(s.last).Round(time.Millisecond).String())
	s.last = now
}

func (s *stepTimes) String() string {
	if s == nil {
		return ""
	}
	return strings.Join(s.parts, ", ")
}

// reseedEvery rebuilds every code from MongoDB in one pass, for the
// failover recovery: every code is frozen first, the streams are read
// once, then all codes are settled together (settle). Every code refuses signups for the
// whole pass (a few seconds), where ReseedAll closes one at a time; in
// exchange the pass costs one read of the streams, not one per code.
func (w *Invitations) reseedEvery(ctx context.Context, st *stepTimes) (codes int, err error) {
	invs, err := w.store.Invitations(ctx)
	if err != nil {
		return 0, err
	}
	frozen := make([]frozenCode, 0, len(invs))
	defer func() {
		for _, f := range frozen {
			f.unlock()
		}
	}()
	for _, inv := range invs {
		f, err := w.freeze(ctx, inv.Code)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", inv.Code, err)
		}
		frozen = append(frozen, f)
	}
	st.mark("lock and freeze")
	pending, err := w.res.PendingByCode(ctx)
	if err != nil {
		return 0, &StepError{Step: "read pending reservations", Err: err}
	}
	st.mark("read pending")
	if err := w.settle(ctx, frozen, pending, st); err != nil {
		return 0, err
	}
	st.mark("rebuild")
	return len(frozen), nil
}
