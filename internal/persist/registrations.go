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
)

// Result is the outcome of one reservation in Persist.
type Result struct {
	Outcome Outcome
	Owner   string // the code MongoDB holds, for Conflict
	// Duplicate, with Failed: this insert hit a duplicate key, so it wrote
	// nothing, but the majority read that names the owner did not return
	// the document (not yet majority-committed, or the read failed).
	Duplicate bool
}

// Persist writes reservations as registrations with one unordered bulk
// insert. The results are in the order of rs. A returned error means
// nothing is known to be written (MongoDB unreachable); per-item failures
// are reported as Failed instead.
func (s *Store) Persist(ctx context.Context, rs []invite.Reservation) ([]Result, error) {
	out := make([]Result, len(rs))
	if len(rs) == 0 {
		return out, nil
	}
	now := s.now().UTC()
	docs := make([]any, len(rs))
	for i, r := range rs {
		docs[i] = Registration{Canonical: r.Canonical, Email: r.Email, Invitation: r.Code, ReservedAt: r.ReservedAt, PersistedAt: now,
			Mail: &Outbox{State: MailPending, NextAt: now}}
	}
	_, err := s.reg.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	for i := range out {
		out[i].Outcome = Written
	}
	if err == nil {
		return out, nil
	}
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) {
		return nil, fmt.Errorf("%w: insert registrations: %w", ErrDatabase, err)
	}
	if bwe.WriteConcernError != nil {
		// Written, perhaps, but not durably: retry all; the retry sees
		// duplicates for what did land.
		for i := range out {
			out[i].Outcome = Failed
		}
	}
	var dups []string
	dupIdx := make(map[string][]int) // one email may be in a batch twice
	for _, we := range bwe.WriteErrors {
		if we.Index < 0 || we.Index >= len(out) {
			continue
		}
		if we.Code == 11000 || we.Code == 11001 {
			out[we.Index] = Result{Outcome: Failed, Duplicate: true}
			dups = append(dups, rs[we.Index].Canonical)
			dupIdx[rs[we.Index].Canonical] = append(dupIdx[rs[we.Index].Canonical], we.Index)
			continue
		}
		out[we.Index].Outcome = Failed
		s.log.WithField("code", rs[we.Index].Code).WithField("mongo_code", we.Code).Warn("registration insert failed; will retry")
	}
	if len(dups) == 0 {
		return out, nil
	}
	// Majority read: a duplicate counts as written only if the document
	// that caused it survives a failover; a not-yet-durable one (from an
	// attempt that failed on write concern) stays Failed and is retried.
	cur, err := s.regMajority.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: dups}}}},
		options.Find().SetProjection(bson.D{{Key: "invitation", Value: 1}}))
	if err != nil {
		// The inserts that did succeed stay Written; duplicates retry.
		return out, nil
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		id, _ := cur.Current.Lookup("_id").StringValueOK()
		owner, _ := cur.Current.Lookup("invitation").StringValueOK()
		for _, i := range dupIdx[id] {
			if owner == rs[i].Code {
				out[i] = Result{Outcome: AlreadyWritten}
			} else {
				out[i] = Result{Outcome: Conflict, Owner: owner}
			}
		}
	}
	return out, nil
}
