package persist

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

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
	// settled is closed, and replaced, whenever an in-flight seat settles.
	settled chan struct{}
	// loaded: taken was read from MongoDB once (after that, only this
	// process's own inserts and duplicates add to it).
	loaded bool
}

func (b *seatBook) code(code string) *codeSeats {
	if b.codes == nil {
		b.codes = make(map[string]*codeSeats)
	}
	c := b.codes[code]
	if c == nil {
		c = &codeSeats{taken: map[int]bool{}, inflight: map[int]bool{}, settled: make(chan struct{})}
		b.codes[code] = c
	}
	return c
}

// pick holds the lowest seat below maxUses that is neither known taken
// nor in flight; ok is false when there is none, or when the seats known
// taken or in flight, counting those at or above maxUses (left by a lower
// max_uses before a reseat, or by over-admitted registrations from before
// seats existed), already reach maxUses.
func (b *seatBook) pick(code string, maxUses int) (int, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.code(code)
	if len(c.taken)+len(c.inflight) >= maxUses {
		return 0, false
	}
	for k := 0; k < maxUses; k++ {
		if !c.taken[k] && !c.inflight[k] {
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

func (b *seatBook) isLoaded(code string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.code(code).loaded
}

// load replaces what the book believes taken with MongoDB's answer. A seat
// this process took after MongoDB answered may drop out: taking it again
// meets a duplicate, which marks it again.
func (b *seatBook) load(code string, taken []int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.code(code)
	c.taken = make(map[int]bool, len(taken))
	for _, k := range taken {
		c.taken[k] = true
	}
	c.loaded = true
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
	cur, err := s.reg.Find(ctx, bson.D{{Key: "invitation", Value: code}},
		options.Find().SetProjection(bson.D{{Key: "seat", Value: 1}}).SetBatchSize(1000))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: read seats: %w", ErrDatabase, err)
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		v, ok := cur.Current.Lookup("seat").StringValueOK()
		k, ok2 := parseSeat(code, v)
		if !ok || !ok2 {
			unseated++
			continue
		}
		taken = append(taken, k)
	}
	if err := cur.Err(); err != nil {
		return nil, 0, fmt.Errorf("%w: read seats: %w", ErrDatabase, err)
	}
	return taken, unseated, nil
}

// refreshSeats reads code's taken seats from MongoDB into the book and
// returns how many more registrations maxUses allows (seats at or above it
// count as taken ones). Unseated registrations
// (written by an older version, not yet seated by EnsureSchema) take the
// lowest seats not held, so the book never offers their capacity.
func (s *Store) refreshSeats(ctx context.Context, code string, maxUses int) (free int, err error) {
	taken, unseated, err := s.Seats(ctx, code)
	if err != nil {
		return 0, err
	}
	held := make(map[int]bool, len(taken))
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
	s.seats.load(code, taken)
	return max(maxUses-len(held), 0), nil
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
		taken, _, err := s.Seats(ctx, code)
		if err != nil {
			return err
		}
		held := make(map[int]bool, len(taken))
		for _, k := range taken {
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
