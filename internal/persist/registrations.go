package persist

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/invitegate/invitegate/internal/invite"
)

// ForEachRegistration calls fn with the canonical email and code of every
// registration of code, or of all codes when code is "". It stops at the
// first error fn returns.
func (s *Store) ForEachRegistration(ctx context.Context, code string, fn func(canonical, code string) error) error {
	filter := bson.D{}
	if code != "" {
		filter = bson.D{{Key: "invitation", Value: code}}
	}
	cur, err := s.reg.Find(ctx, filter, options.Find().SetProjection(bson.D{{Key: "invitation", Value: 1}}).SetBatchSize(1000))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		id, ok1 := cur.Current.Lookup("_id").StringValueOK()
		c, ok2 := cur.Current.Lookup("invitation").StringValueOK()
		if !ok1 || !ok2 {
			continue
		}
		if err := fn(id, c); err != nil {
			return err
		}
	}
	if err := cur.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	return nil
}

// Count returns the number of registrations of code.
func (s *Store) Count(ctx context.Context, code string) (int, error) {
	n, err := s.reg.CountDocuments(ctx, bson.D{{Key: "invitation", Value: code}})
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	return int(n), nil
}

// Counts returns the number of registrations per code.
func (s *Store) Counts(ctx context.Context) (map[string]int, error) {
	counts := make(map[string]int)
	err := s.ForEachRegistration(ctx, "", func(_, code string) error {
		counts[code]++
		return nil
	})
	return counts, err
}

// Registration is one document of the registrations collection.
type Registration struct {
	Canonical   string    `bson:"_id"`
	Email       string    `bson:"email"`
	Invitation  string    `bson:"invitation"`
	ReservedAt  time.Time `bson:"reserved_at"`
	PersistedAt time.Time `bson:"persisted_at"`
	// Mail is the "further instructions" email's outbox state, written
	// with the registration (see mail.go).
	Mail *Outbox `bson:"mail,omitempty"`
	// Seat is "<code>#<k>", k below max_uses, unique (cap.go).
	Seat string `bson:"seat,omitempty"`
}

// Registration returns the registration of a canonical email; ok is false
// when there is none. It reads with majority read concern: what it returns
// survives a MongoDB failover.
func (s *Store) Registration(ctx context.Context, canonical string) (reg Registration, ok bool, err error) {
	err = s.regMajority.FindOne(ctx, bson.D{{Key: "_id", Value: canonical}}).Decode(&reg)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return reg, false, nil
	}
	if err != nil {
		return reg, false, fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	return reg, true, nil
}

// Outcome is what happened to one reservation in Persist.
type Outcome int

const (
	// Failed: not known to be written; retry it.
	Failed Outcome = iota
	// Written by this call.
	Written
	// AlreadyWritten: the same email and code were already there.
	AlreadyWritten
	// Conflict: the email belongs to another code (see Result.Owner).
	Conflict
	// Refused: every seat of the code is taken (MongoDB holds max_uses
	// registrations of it) and the email is not among them; nothing was
	// written, and retrying cannot change that unless max_uses is raised.
	Refused
)

// Result is the outcome of one reservation in Persist.
type Result struct {
	Outcome Outcome
	Owner   string // the code MongoDB holds, for Conflict
	// Duplicate, with Failed: this insert hit a duplicate key, so it wrote
	// nothing, but the majority read that names the owner did not return
	// the document (not yet majority-committed, or the read failed).
	Duplicate bool
	// NoInvitation, with Failed: the code has no usable invitation
	// document, so MongoDB cannot tell its seats; retrying at once will
	// not help.
	NoInvitation bool
}

// seatRounds bounds the insert rounds of one Persist call (and ctx does);
// rows still without a seat after them are Failed and retried later.
const seatRounds = 64

// dupRounds is how many rounds a row whose email is registered but not yet
// readable with majority read concern is tried again within one call.
const dupRounds = 3

// Persist writes reservations as registrations, each on a free seat of its
// code (cap.go), with one unordered bulk insert per round: a row that lost
// its seat to another writer takes the next one in the next round. A row
// is Refused only when MongoDB itself shows every seat below max_uses
// taken. The results are in the order of rs. A returned error means
// nothing is known to be written (MongoDB unreachable); per-item failures
// are reported as Failed instead. Entries of holds (invite.HoldTaken,
// HoldEnded) are recorded in the holds collection (holds.go), and a
// registration that confirmed a hold (HoldID) also marks it confirmed.
func (s *Store) Persist(ctx context.Context, rs []invite.Reservation) ([]Result, error) {
	plain := true
	for _, r := range rs {
		if r.Kind != invite.Registration || r.HoldID != "" {
			plain = false
			break
		}
	}
	if plain {
		return s.persistRegistrations(ctx, rs)
	}
	out := make([]Result, len(rs))
	var regs []invite.Reservation
	var idx []int
	for i, r := range rs {
		if r.Kind == invite.Registration {
			regs = append(regs, r)
			idx = append(idx, i)
		}
	}
	if len(regs) > 0 {
		res, err := s.persistRegistrations(ctx, regs)
		if err != nil {
			return nil, err
		}
		for n, i := range idx {
			out[i] = res[n]
		}
	}
	s.persistHolds(ctx, rs, out)
	return out, nil
}

// persistRegistrations is Persist for registration entries.
func (s *Store) persistRegistrations(ctx context.Context, rs []invite.Reservation) ([]Result, error) {
	out := make([]Result, len(rs))
	if len(rs) == 0 {
		return out, nil
	}
	pending := make([]int, len(rs))
	for i := range rs {
		pending[i] = i
	}
	for round := 0; len(pending) > 0 && round < seatRounds && ctx.Err() == nil; round++ {
		// max_uses is read every round: a change made while a call
		// retries is seen by its next insert.
		codes := make([]string, len(pending))
		for n, i := range pending {
			codes[n] = rs[i].Code
		}
		caps, err := s.maxUses(ctx, codes)
		if err == nil {
			var next []int
			next, err = s.persistRound(ctx, round, rs, pending, caps, out)
			pending = next
		}
		if err != nil {
			if round > 0 {
				// Earlier rounds' rows stay Written; the rest retry.
				return out, nil
			}
			return nil, err
		}
	}
	return out, nil
}

// persistRound gives each pending row a seat and inserts them, filling in
// out; it returns the rows to try again (their seat was taken by another
// writer, or seats came free).
func (s *Store) persistRound(ctx context.Context, round int, rs []invite.Reservation, pending []int, caps map[string]int, out []Result) (retry []int, err error) {
	now := s.now().UTC()
	seat := make(map[int]int, len(pending))
	// The first round tries hinted seats (SeatHinter); rows whose hint is
	// unusable, and later rounds, pick at random among the seats free in
	// the book.
	var hints map[string]int
	if round == 0 {
		need := map[string]int{}
		for _, i := range pending {
			if c := rs[i].Code; caps[c] != noInvitation {
				need[c]++
			}
		}
		hints = s.seatHints(ctx, need)
	}
	hinted := map[int]bool{}
	// raiseFrom: per code, 1 + the highest hinted seat found taken; the
	// hints move past it when the round ends.
	raiseFrom := map[string]int{}
	defer s.raiseHints(ctx, raiseFrom, caps)
	// inserted is when this round's insert returned: a seat it found taken
	// is in every read of MongoDB that begins after it.
	var inserted time.Time
	lost := func(i int) {
		code := rs[i].Code
		if hinted[i] {
			raiseFrom[code] = max(raiseFrom[code], seat[i]+1)
		}
		s.lostSeat(ctx, code, seat[i], caps[code], inserted)
	}
	var try, unseated []int
	var docs []any
	for _, i := range pending {
		r := rs[i]
		out[i] = Result{Outcome: Failed}
		if caps[r.Code] == noInvitation {
			out[i].NoInvitation = true
			continue // Failed: retried until the invitation is there
		}
		k, ok := -1, false
		if h, has := hints[r.Code]; has && h >= 0 {
			k = h
			hints[r.Code]++
			if ok = s.seats.hold(r.Code, k, caps[r.Code]); ok {
				hinted[i] = true
			}
		}
		if !ok {
			k, ok = s.seats.pick(r.Code, caps[r.Code])
		}
		if !ok {
			unseated = append(unseated, i)
			continue
		}
		seat[i] = k
		try = append(try, i)
		docs = append(docs, Registration{Canonical: r.Canonical, Email: r.Email, Invitation: r.Code, ReservedAt: r.ReservedAt, PersistedAt: now,
			Mail: &Outbox{State: MailPending, NextAt: now}, Seat: seatValue(r.Code, k)})
	}
	var dups []int
	// idDup: the duplicate is known (by its key pattern) to be the email's.
	idDup := map[int]bool{}
	if len(docs) > 0 {
		_, err := s.reg.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
		inserted = time.Now()
		var bwe mongo.BulkWriteException
		switch {
		case err == nil:
		case !errors.As(err, &bwe):
			for _, i := range try {
				s.seats.settle(rs[i].Code, seat[i], false)
			}
			return nil, fmt.Errorf("%w: insert registrations: %w", ErrDatabase, err)
		}
		failed := make(map[int]bool, len(bwe.WriteErrors))
		for _, we := range bwe.WriteErrors {
			if we.Index < 0 || we.Index >= len(try) {
				continue
			}
			i := try[we.Index]
			failed[i] = true
			if we.Code != 11000 && we.Code != 11001 {
				s.seats.settle(rs[i].Code, seat[i], false)
				s.log.WithField("code", rs[i].Code).WithField("mongo_code", we.Code).Warn("registration insert failed; will retry")
				continue
			}
			onSeat, known := dupOnSeat(we.WriteError)
			if known && onSeat {
				// The seat was taken by another writer; next round.
				lost(i)
				retry = append(retry, i)
				continue
			}
			idDup[i] = known
			dups = append(dups, i)
		}
		for _, i := range try {
			if failed[i] {
				continue
			}
			// Written, perhaps not durably (a write concern error): then
			// all retry, and the retry sees duplicates for what landed.
			s.seats.settle(rs[i].Code, seat[i], true)
			if bwe.WriteConcernError == nil {
				out[i].Outcome = Written
			}
		}
	}
	if len(dups)+len(unseated) == 0 {
		return retry, nil
	}
	// Who holds these emails? Majority read: a duplicate counts as written
	// only if the document that caused it survives a failover.
	ids := make([]string, 0, len(dups)+len(unseated))
	for _, i := range append(dups, unseated...) {
		ids = append(ids, rs[i].Canonical)
	}
	owners, err := s.owners(ctx, s.regMajority, ids)
	if err != nil {
		// Duplicates and unseated rows stay Failed and are retried.
		for _, i := range dups {
			s.seats.settle(rs[i].Code, seat[i], false)
			out[i].Duplicate = true
		}
		return retry, nil
	}
	settle := func(i int, owner string) {
		if owner == rs[i].Code {
			out[i] = Result{Outcome: AlreadyWritten}
		} else {
			out[i] = Result{Outcome: Conflict, Owner: owner}
		}
	}
	for _, i := range dups {
		code := rs[i].Code
		if owner, ok := owners[rs[i].Canonical]; ok {
			s.seats.settle(code, seat[i], false)
			settle(i, owner)
			continue
		}
		if idDup[i] {
			// Registered, not yet majority-committed (a concurrent
			// writer's insert, usually): the next rounds ask again; after
			// them, Failed.
			s.seats.settle(code, seat[i], false)
			out[i].Duplicate = true
			if round < dupRounds {
				retry = append(retry, i)
			}
			continue
		}
		// The server did not name the key, and no registration of the
		// email is readable: the seat was the duplicate. (Registrations
		// are never deleted; one written but not yet majority-committed
		// meets a duplicate again next round, and is read then.)
		lost(i)
		retry = append(retry, i)
	}
	// Rows that found no seat free in this process's book: refused only if
	// MongoDB, read now, has none free either (registrations are never
	// deleted, so "all taken" stays true); otherwise the book learns what
	// came free and they try again.
	free := map[string]int{}
	var refuse []int
	for _, i := range unseated {
		code := rs[i].Code
		if owner, ok := owners[rs[i].Canonical]; ok {
			settle(i, owner)
			continue
		}
		if s.seats.busy(code) {
			// Another writer of this process holds seats; they may come
			// free (its row was a duplicate). Wait, then look again.
			if s.seats.waitSettled(ctx, code) == nil {
				retry = append(retry, i)
			}
			continue
		}
		n, ok := free[code]
		if !ok {
			if n, err = s.refreshSeats(ctx, code, caps[code]); err != nil {
				n = -1
			}
			free[code] = n
		}
		switch {
		case n < 0:
			// MongoDB unreadable: Failed, retried.
		case n > 0:
			retry = append(retry, i)
		default:
			refuse = append(refuse, i)
		}
	}
	if len(refuse) == 0 {
		return retry, nil
	}
	// The code is full. One of the seats may be this very email's,
	// written by another writer since the first read: read again, after
	// the seats were (registrations are never deleted, so what that read
	// missed is visible now).
	ids = ids[:0]
	for _, i := range refuse {
		ids = append(ids, rs[i].Canonical)
	}
	byMajority, err := s.owners(ctx, s.regMajority, ids)
	if err != nil {
		return retry, nil // Failed, retried
	}
	byLocal, err := s.owners(ctx, s.reg, ids)
	if err != nil {
		return retry, nil
	}
	for _, i := range refuse {
		switch owner, ok := byMajority[rs[i].Canonical]; {
		case ok:
			settle(i, owner)
		case byLocal[rs[i].Canonical] != "":
			out[i].Duplicate = true // not yet majority-committed: Failed, retried
		default:
			out[i] = Result{Outcome: Refused}
		}
	}
	return retry, nil
}

// dupOnSeat tells, from a duplicate-key write error, whether the seat index
// caused it; known is false when the error does not say (the MongoDB-wire
// server the tests use names no key), and then a read tells. It looks at
// the key pattern MongoDB reports, never at the message, which carries the
// duplicate value (an email may contain any index's name).
func dupOnSeat(we mongo.WriteError) (onSeat, known bool) {
	for _, doc := range []bson.Raw{we.Raw, we.Details} {
		if len(doc) == 0 {
			continue
		}
		kp, ok := doc.Lookup("keyPattern").DocumentOK()
		if !ok {
			continue
		}
		if _, err := kp.LookupErr("seat"); err == nil {
			return true, true
		}
		if _, err := kp.LookupErr("_id"); err == nil {
			return false, true
		}
	}
	return false, false
}

// lostSeat records that seat k of code was taken by another writer, and
// reads all of code's taken seats unless a read that began after the
// insert that found it taken (at inserted) already did or is under way: a
// process whose book has fallen behind the other writers catches up in one
// read instead of one duplicate at a time, and its writers share it.
// (A hinted seat found taken means the hints went back, Redis lost the
// counter's newest value: persistRound moves them on, raiseHints.)
func (s *Store) lostSeat(ctx context.Context, code string, k, maxUses int, inserted time.Time) {
	s.seats.settle(code, k, true)
	s.seatsLost.Add(1)
	s.seats.catchUp(ctx, code, inserted, func() { _, _ = s.refreshSeats(ctx, code, maxUses) })
}

// owners returns the code each of ids is registered on, read through c.
func (s *Store) owners(ctx context.Context, c *mongo.Collection, ids []string) (map[string]string, error) {
	cur, err := c.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}},
		options.Find().SetProjection(bson.D{{Key: "invitation", Value: 1}}))
	if err != nil {
		return nil, err
	}
	defer cur.Close(ctx)
	out := make(map[string]string, len(ids))
	for cur.Next(ctx) {
		id, _ := cur.Current.Lookup("_id").StringValueOK()
		owner, _ := cur.Current.Lookup("invitation").StringValueOK()
		out[id] = owner
	}
	return out, cur.Err()
}
