package persist

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// MongoDB holds the cap (I1) by itself, whatever Redis admitted: every
// registration carries a seat "<code>#<k>" with k below the code's
// max_uses, under a unique index. The registration and its seat are one
// document, so taking a seat and registering are one atomic insert, and
// nothing is ever given back or deleted: a duplicate _id (the email is
// registered) writes nothing, a duplicate seat (taken by another writer)
// writes nothing and the row tries the next free seat. A code whose seats
// are all taken refuses the row (Refused). docs/ARCHITECTURE.md, "MongoDB
// holds the cap".

// SeatHinter hands out seat numbers of a code that no other writer was
// handed (reserve.Reserver: a counter in Redis). Writers try them first,
// so that writers in several processes filling one code do not pick the
// same seats and meet duplicates; the unique index still decides, and a
// hint found taken (the counter went back with Redis) sends the row to a
// random free seat and moves the counter past what the process knows taken.
type SeatHinter interface {
	// SeatHints returns, per code, the first of need[code] hints.
	SeatHints(ctx context.Context, need map[string]int) (first map[string]int, err error)
	// RaiseSeatHints moves each code's next hint up to at least at[code].
	RaiseSeatHints(ctx context.Context, at map[string]int) error
}

// hintTimeout bounds one call to the SeatHinter: hints save work, they
// must never hold up a write; after a failed call, hints are not asked for
// hintPause (writers pick at random meanwhile).
const (
	hintTimeout = 100 * time.Millisecond
	hintPause   = 5 * time.Second
)

// Collectors are the Store's Prometheus collectors: how often MongoDB's
// cap cost more than one insert (a seat lost to another writer, a read of
// a code's seats).
func (s *Store) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "invitegate_persist_seats_lost_total", Help: "Registration inserts that met a seat another writer had just taken (MongoDB's cap); the row took another seat."},
			func() float64 { return float64(s.seatsLost.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "invitegate_persist_seat_reads_total", Help: "Reads of a code's taken seats by this process (after a lost seat, or before refusing a row)."},
			func() float64 { return float64(s.seatReads.Load()) }),
	}
}

// SeatsLost returns how many inserts met a seat another writer had taken.
func (s *Store) SeatsLost() int64 { return s.seatsLost.Load() }

// UseSeatHints makes Persist try h's seats first. Call it before use.
func (s *Store) UseSeatHints(h SeatHinter) { s.hints = h }

// seatHints asks for n hints per code (codes without a usable invitation
// get none); a code whose hints cannot be had gets none (-1).
func (s *Store) seatHints(ctx context.Context, need map[string]int) map[string]int {
	if s.hints == nil || len(need) == 0 || time.Now().UnixNano() < s.hintsOffUntil.Load() {
		return nil
	}
	hctx, cancel := context.WithTimeout(ctx, hintTimeout)
	defer cancel()
	out, err := s.hints.SeatHints(hctx, need)
	if err != nil {
		s.hintsFailed(err)
		return nil
	}
	return out
}

// raiseHints moves the hints of each code of from past the seats this
// process knows taken from from[code] on (1 + the highest hinted seat a
// round found taken), in one call.
func (s *Store) raiseHints(ctx context.Context, from, caps map[string]int) {
	if s.hints == nil || len(from) == 0 || time.Now().UnixNano() < s.hintsOffUntil.Load() {
		return
	}
	at := make(map[string]int, len(from))
	for code, k := range from {
		at[code] = s.seats.freeFrom(code, k, caps[code])
	}
	hctx, cancel := context.WithTimeout(ctx, hintTimeout)
	defer cancel()
	if err := s.hints.RaiseSeatHints(hctx, at); err != nil {
		s.hintsFailed(err)
	}
}

func (s *Store) hintsFailed(err error) {
	s.hintsOffUntil.Store(time.Now().Add(hintPause).UnixNano())
	s.log.WithError(err).Warn("seat hints unavailable; writers pick seats at random for a few seconds")
}

// blockField marks a document of the registrations collection that is no
// registration but a seat taken out of use by a lowered max_uses
// (BlockSeats): {_id: "<code>#<k>", seat: "<code>#<k>", blocks: "<code>"}.
// It has no invitation field, so nothing that reads registrations by code
// (counts, reseeds, exports) sees it, and its _id has no "@", so it is no
// email's.
const blockField = "blocks"

// seatIndex is the unique index on registrations' seats. It is sparse so
// that registrations written before seats existed do not collide on a
// missing value until EnsureSchema seats them.
const seatIndex = "seat_1"

// seatValue is the seat field of code's k-th seat; "#" is not a code
// character.
func seatValue(code string, k int) string { return code + "#" + strconv.Itoa(k) }

// parseSeat returns the k of a seat value of code.
func parseSeat(code, v string) (int, bool) {
	rest, ok := strings.CutPrefix(v, code+"#")
	if !ok {
		return 0, false
	}
	k, err := strconv.Atoi(rest)
	return k, err == nil && k >= 0
}

// seatBook is what this process knows of the seats taken, per code. Seats
// are never given back, so "taken" stays true; a seat this process does
// not know to be taken may still be (another process took it): the insert
// then reports a duplicate and the row moves on. In-flight seats are held
// so that concurrent writers of one process never pick the same seat.
type seatBook struct {
	mu    sync.Mutex
	codes map[string]*codeSeats
}

type codeSeats struct {
	taken    map[int]bool
	inflight map[int]bool
	// blocked: seats a lowered max_uses took out of use (BlockSeats).
	blocked map[int]bool
	// settled is closed, and replaced, whenever an in-flight seat settles.
	settled chan struct{}
	// loadedAt is when the last read of taken from MongoDB began (zero:
	// never read; until then, only this process's own inserts and
	// duplicates add to it).
	loadedAt time.Time
	// loading is closed when the read in flight (begun at loadingAt)
	// is in; nil when none is.
	loading   chan struct{}
	loadingAt time.Time
}

func (b *seatBook) code(code string) *codeSeats {
	if b.codes == nil {
		b.codes = make(map[string]*codeSeats)
	}
	c := b.codes[code]
	if c == nil {
		c = &codeSeats{taken: map[int]bool{}, inflight: map[int]bool{}, blocked: map[int]bool{}, settled: make(chan struct{})}
		b.codes[code] = c
	}
	return c
}

// hold holds seat k of code when it is below maxUses and neither known
// taken, in flight nor blocked, under the same count as pick.
func (b *seatBook) hold(code string, k, maxUses int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.code(code)
	if k < 0 || k >= maxUses || len(c.taken)+len(c.inflight) >= maxUses || c.taken[k] || c.inflight[k] || c.blocked[k] {
		return false
	}
	c.inflight[k] = true
	return true
}

// hintRun is how many free seats in a row raiseHints looks for: holes
// shorter than that (a hint a row did not use, a seat a random pick left)
// stay for random picks.
const hintRun = 8

// freeFrom returns the first seat of code from k on that starts hintRun
// seats (or all up to maxUses) this process does not know to be taken,
// blocked or in flight; maxUses when there is none.
func (b *seatBook) freeFrom(code string, k, maxUses int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.code(code)
	free := func(j int) bool { return !c.taken[j] && !c.blocked[j] && !c.inflight[j] }
	for ; k < maxUses; k++ {
		run := 0
		for j := k; j < maxUses && run < hintRun && free(j); j++ {
			run++
		}
		if run == hintRun || (run > 0 && k+run == maxUses) {
			return k
		}
	}
	return max(k, maxUses)
}

// pick holds a seat below maxUses that is neither known taken nor in
// flight: the first such from a random place, wrapping around. Writers in
// different processes (each shard's reconciler, a failover recovery, the
// ack=mongo group commit) therefore rarely pick the same seat while the
// code has many free, instead of all racing for its lowest free one. ok is
// false when there is none, or when the seats known taken or in flight,
// counting those at or above maxUses (left by a lower max_uses before a
// reseat, or by over-admitted registrations from before seats existed),
// already reach maxUses.
func (b *seatBook) pick(code string, maxUses int) (int, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.code(code)
	if maxUses <= 0 || len(c.taken)+len(c.inflight) >= maxUses {
		return 0, false
	}
	first := rand.IntN(maxUses)
	for i := 0; i < maxUses; i++ {
		k := (first + i) % maxUses
		if !c.taken[k] && !c.inflight[k] && !c.blocked[k] {
			c.inflight[k] = true
			return k, true
		}
	}
	return 0, false
}

// settle ends an in-flight seat: taken (written, or a duplicate) or free
// again (the insert certainly wrote nothing on that seat).
func (b *seatBook) settle(code string, k int, taken bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.code(code)
	delete(c.inflight, k)
	if taken {
		c.taken[k] = true
	}
	close(c.settled)
	c.settled = make(chan struct{})
}

// waitSettled waits until no seat of code is in flight, or ctx ends.
func (b *seatBook) waitSettled(ctx context.Context, code string) error {
	for {
		b.mu.Lock()
		c := b.code(code)
		n, ch := len(c.inflight), c.settled
		b.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// catchUp makes sure code's seats were read by a read that began at t or
// later, running read (which loads the book) only when no such read is
// done or in flight: the writers of one process that meet duplicates at
// once share one read instead of each scanning the code's registrations.
func (b *seatBook) catchUp(ctx context.Context, code string, t time.Time, read func()) {
	for {
		b.mu.Lock()
		c := b.code(code)
		if !c.loadedAt.Before(t) {
			b.mu.Unlock()
			return
		}
		if ch := c.loading; ch != nil {
			recent := !c.loadingAt.Before(t)
			b.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
			if recent {
				return // that read began after t (if it failed, the next duplicate asks again)
			}
			continue
		}
		ch := make(chan struct{})
		c.loading, c.loadingAt = ch, time.Now()
		b.mu.Unlock()
		read()
		b.mu.Lock()
		close(ch)
		c.loading = nil
		b.mu.Unlock()
		return
	}
}

// load replaces what the book believes taken with MongoDB's answer to a
// read that began at at. A seat this process took after MongoDB answered
// may drop out: taking it again meets a duplicate, which marks it again.
func (b *seatBook) load(code string, taken, blocked []int, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.code(code)
	if at.Before(c.loadedAt) {
		return // a later read already answered
	}
	c.taken = make(map[int]bool, len(taken))
	for _, k := range taken {
		c.taken[k] = true
	}
	c.blocked = make(map[int]bool, len(blocked))
	for _, k := range blocked {
		c.blocked[k] = true
	}
	c.loadedAt = at
}

// busy reports whether seats of code are in flight.
func (b *seatBook) busy(code string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.code(code).inflight) > 0
}

// Seats returns the seat numbers code's registrations hold, and how many
// of its registrations hold none (written before seats existed).
func (s *Store) Seats(ctx context.Context, code string) (taken []int, unseated int, err error) {
	taken, _, unseated, err = s.seatsOf(ctx, code)
	return taken, unseated, err
}

// seatsOf reads code's seats: those its registrations hold, those a
// lowered max_uses blocked, and how many registrations hold none.
func (s *Store) seatsOf(ctx context.Context, code string) (taken, blocked []int, unseated int, err error) {
	cur, err := s.reg.Find(ctx, bson.D{{Key: "$or", Value: bson.A{
		bson.D{{Key: "invitation", Value: code}},
		bson.D{{Key: blockField, Value: code}},
	}}}, options.Find().SetProjection(bson.D{{Key: "seat", Value: 1}, {Key: blockField, Value: 1}}).SetBatchSize(1000))
	if err != nil {
		return nil, nil, 0, fmt.Errorf("%w: read seats: %w", ErrDatabase, err)
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		v, ok := cur.Current.Lookup("seat").StringValueOK()
		k, ok2 := parseSeat(code, v)
		_, isBlock := cur.Current.Lookup(blockField).StringValueOK()
		switch {
		case isBlock && ok && ok2:
			blocked = append(blocked, k)
		case isBlock:
		case !ok || !ok2:
			unseated++
		default:
			taken = append(taken, k)
		}
	}
	if err := cur.Err(); err != nil {
		return nil, nil, 0, fmt.Errorf("%w: read seats: %w", ErrDatabase, err)
	}
	return taken, blocked, unseated, nil
}

// refreshSeats reads code's taken and blocked seats from MongoDB into the
// book and returns how many more registrations maxUses allows: the seats
// below it that are not blocked, less every registration (those on seats
// at or above it count too). Unseated registrations (written by an older
// version, not yet seated by EnsureSchema) take the lowest seats not held,
// so the book never offers their capacity.
func (s *Store) refreshSeats(ctx context.Context, code string, maxUses int) (free int, err error) {
	at := time.Now()
	s.seatReads.Add(1)
	taken, blocked, unseated, err := s.seatsOf(ctx, code)
	if err != nil {
		return 0, err
	}
	held := make(map[int]bool, len(taken)+len(blocked))
	usable := maxUses
	for _, k := range blocked {
		held[k] = true
		if k < maxUses {
			usable--
		}
	}
	regs := len(taken) + unseated
	for _, k := range taken {
		held[k] = true
	}
	for k := 0; unseated > 0; k++ {
		if !held[k] {
			held[k] = true
			taken = append(taken, k)
			unseated--
		}
	}
	s.seats.load(code, taken, blocked, at)
	return max(usable-regs, 0), nil
}

// noInvitation is maxUses' value for a code whose invitation is missing or
// unusable: its rows are not written (Failed, retried), never refused.
const noInvitation = -1

// maxUses reads the max_uses of codes in one query (a change is seen by
// the next round), or noInvitation for a code whose invitation is missing
// or unusable.
func (s *Store) maxUses(ctx context.Context, codes []string) (map[string]int, error) {
	out := make(map[string]int, len(codes))
	var ask []string
	for _, c := range codes {
		if _, ok := out[c]; !ok {
			out[c] = noInvitation
			ask = append(ask, c)
		}
	}
	cur, err := s.inv.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ask}}}})
	if err != nil {
		return nil, fmt.Errorf("%w: read max_uses: %w", ErrDatabase, err)
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		if inv, err := decodeInvitation(cur.Current); err == nil {
			out[inv.Code] = inv.MaxUses
		}
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("%w: read max_uses: %w", ErrDatabase, err)
	}
	for c, n := range out {
		if n == noInvitation {
			s.log.WithField("code", c).Warn("reservations for a code without a usable invitation are not written; they wait in Redis until it exists again")
		}
	}
	return out, nil
}

// seatLegacy gives a seat to each registration written before seats
// existed, lowest free first. Registrations beyond a code's max_uses (an
// over-admission from before) get seats at or above it, so they keep
// counting after a raise.
// Concurrent starts are safe: a seat is set only where none is, and the
// unique index refuses a seat taken meanwhile.
func (s *Store) seatLegacy(ctx context.Context) error {
	cur, err := s.reg.Find(ctx, bson.D{{Key: "seat", Value: bson.D{{Key: "$exists", Value: false}}}},
		options.Find().SetProjection(bson.D{{Key: "invitation", Value: 1}}))
	if err != nil {
		return fmt.Errorf("%w: find unseated registrations: %w", ErrDatabase, err)
	}
	byCode := map[string][]string{}
	for cur.Next(ctx) {
		id, ok1 := cur.Current.Lookup("_id").StringValueOK()
		c, ok2 := cur.Current.Lookup("invitation").StringValueOK()
		if ok1 && ok2 {
			byCode[c] = append(byCode[c], id)
		}
	}
	err = cur.Err()
	cur.Close(ctx)
	if err != nil {
		return fmt.Errorf("%w: find unseated registrations: %w", ErrDatabase, err)
	}
	for code, ids := range byCode {
		caps, err := s.maxUses(ctx, []string{code})
		if err != nil {
			return err
		}
		taken, blocked, _, err := s.seatsOf(ctx, code)
		if err != nil {
			return err
		}
		held := make(map[int]bool, len(taken)+len(blocked))
		for _, k := range append(taken, blocked...) {
			held[k] = true
		}
		k, over := 0, 0
		for _, id := range ids {
			for {
				for held[k] {
					k++
				}
				res, err := s.reg.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "seat", Value: bson.D{{Key: "$exists", Value: false}}}},
					bson.D{{Key: "$set", Value: bson.D{{Key: "seat", Value: seatValue(code, k)}}}})
				held[k] = true
				if mongo.IsDuplicateKeyError(err) {
					continue // taken meanwhile
				}
				if err != nil {
					return fmt.Errorf("%w: seat a registration: %w", ErrDatabase, err)
				}
				if res.ModifiedCount > 0 && k >= caps[code] {
					over++
				}
				break
			}
		}
		if over > 0 {
			s.log.WithFields(map[string]any{"code": code, "over": over}).Warn("registrations beyond max_uses found; seated past it, they still count")
		}
	}
	return nil
}

// Reseat moves code's registrations that hold a seat at or above n onto
// free seats below n, after max_uses was lowered to n, so that the seats
// below n are all the code has. It returns ErrChanged when there are not
// enough free seats below n (more registrations than n).
func (s *Store) Reseat(ctx context.Context, code string, n int) error {
	cur, err := s.reg.Find(ctx, bson.D{{Key: "invitation", Value: code}}, options.Find().SetProjection(bson.D{{Key: "seat", Value: 1}}))
	if err != nil {
		return fmt.Errorf("%w: read seats: %w", ErrDatabase, err)
	}
	held := map[int]bool{}
	var high []string // _id of registrations on a seat >= n
	for cur.Next(ctx) {
		id, _ := cur.Current.Lookup("_id").StringValueOK()
		v, _ := cur.Current.Lookup("seat").StringValueOK()
		if k, ok := parseSeat(code, v); ok && k < n {
			held[k] = true
		} else if ok {
			high = append(high, id)
		}
	}
	err = cur.Err()
	cur.Close(ctx)
	if err != nil {
		return fmt.Errorf("%w: read seats: %w", ErrDatabase, err)
	}
	k := 0
	for _, id := range high {
		for {
			for k < n && held[k] {
				k++
			}
			if k >= n {
				return fmt.Errorf("%w: %s has more registrations than %d seats", ErrChanged, code, n)
			}
			_, err := s.reg.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$set", Value: bson.D{{Key: "seat", Value: seatValue(code, k)}}}})
			held[k] = true
			if mongo.IsDuplicateKeyError(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("%w: move a seat: %w", ErrDatabase, err)
			}
			break
		}
	}
	return nil
}

// BlockSeats takes code's seats from n up to (not including) upTo out of
// use, after moving the registrations on them below n (Reseat): each gets a
// document that holds it under the unique index (blockField). A writer that
// read a higher max_uses before it was lowered to n then cannot take any of
// them, however late its insert comes, so MongoDB holds at most n
// registrations of code from the moment this returns. upTo < 0 blocks up to
// the highest seat in use. It returns ErrChanged when the registrations do
// not fit below n. Repeating it is harmless.
func (s *Store) BlockSeats(ctx context.Context, code string, n, upTo int) error {
	for try := 0; try < 5; try++ {
		if err := s.Reseat(ctx, code, n); err != nil {
			return err
		}
		taken, blocked, _, err := s.seatsOf(ctx, code)
		if err != nil {
			return err
		}
		have := make(map[int]bool, len(blocked))
		top := upTo
		for _, k := range blocked {
			have[k] = true
			if upTo < 0 {
				top = max(top, k+1)
			}
		}
		if upTo < 0 {
			for _, k := range taken {
				top = max(top, k+1)
			}
		}
		var docs []any
		for k := n; k < top; k++ {
			if !have[k] {
				v := seatValue(code, k)
				docs = append(docs, bson.D{{Key: "_id", Value: v}, {Key: "seat", Value: v}, {Key: blockField, Value: code}})
			}
		}
		if len(docs) == 0 {
			return nil
		}
		_, err = s.reg.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
		if err == nil {
			return nil
		}
		var bwe mongo.BulkWriteException
		if !errors.As(err, &bwe) || bwe.WriteConcernError != nil {
			return fmt.Errorf("%w: block seats: %w", ErrDatabase, err)
		}
		for _, we := range bwe.WriteErrors {
			if we.Code != 11000 && we.Code != 11001 {
				return fmt.Errorf("%w: block seats: %w", ErrDatabase, err)
			}
		}
		// A seat already blocked (a concurrent repeat), or taken by a
		// registration since the reseat: move it and look again.
	}
	return fmt.Errorf("%w: writers kept taking %s's seats at or above %d", ErrChanged, code, n)
}

// UnblockSeats gives code's blocked seats below n back (max_uses is about
// to be raised to n); blocked seats at or above n stay blocked.
func (s *Store) UnblockSeats(ctx context.Context, code string, n int) error {
	ids := make(bson.A, 0, n)
	for k := 0; k < n; k++ {
		ids = append(ids, seatValue(code, k))
	}
	_, err := s.reg.DeleteMany(ctx, bson.D{{Key: blockField, Value: code}, {Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
	if err != nil {
		return fmt.Errorf("%w: unblock seats: %w", ErrDatabase, err)
	}
	return nil
}
