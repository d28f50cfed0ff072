package persist

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readconcern"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/invitegate/invitegate/internal/invite"
)

// Holds: on a code with a confirmation window a signup holds its seat
// until the email is confirmed (docs/ARCHITECTURE.md, "Confirmation
// holds"). Redis decides; MongoDB keeps a record of each hold, written by
// whoever writes the reservation streams (Persist: the reconciler, a
// reseed's drain, a failover's recovery), so that a Redis wipe or failover
// restores live holds (LiveHolds) and their confirmation email has an
// outbox. One document per hold, inserted, never upserted:
//
//	{_id: "<canonical>|<hold id>", canonical, email, invitation, hold_id,
//	 deadline, held_at, state: held | confirmed | expired, mail: outbox}
//
// The hold id is the Redis stream entry that took it; a hold's state
// moves from held to confirmed or expired once. The confirmation link's
// token is never stored (it is derived from the hold under a secret).

// HoldsCollection holds one document per hold.
const HoldsCollection = "holds"

// Hold states.
const (
	HoldHeld      = "held"
	HoldConfirmed = "confirmed"
	HoldExpired   = "expired"
)

// Hold is one hold's document.
type Hold struct {
	Key        string    `bson:"_id"`
	Canonical  string    `bson:"canonical"`
	Email      string    `bson:"email,omitempty"`
	Invitation string    `bson:"invitation"`
	HoldID     string    `bson:"hold_id"`
	Deadline   time.Time `bson:"deadline,omitempty"`
	HeldAt     time.Time `bson:"held_at,omitempty"`
	State      string    `bson:"state"`
	// Mail is the confirmation email's outbox (see mail.go).
	Mail *Outbox `bson:"mail,omitempty"`
}

// HoldKey is the _id of canonical's hold holdID.
func HoldKey(canonical, holdID string) string { return canonical + "|" + holdID }

func (s *Store) holds() *mongo.Collection {
	return s.db.Collection(HoldsCollection, options.Collection().SetWriteConcern(writeconcern.Majority()).SetReadConcern(readconcern.Majority()))
}

// ensureHoldIndexes creates the holds collection's indexes (idempotent).
func (s *Store) ensureHoldIndexes(ctx context.Context) error {
	c := s.holds()
	want := map[string]mongo.IndexModel{
		"invitation_1_state_1":        {Keys: bson.D{{Key: "invitation", Value: 1}, {Key: "state", Value: 1}}},
		"mail_state_1_mail_next_at_1": {Keys: bson.D{{Key: "mail.state", Value: 1}, {Key: "mail.next_at", Value: 1}}},
	}
	names, err := c.Indexes().ListSpecifications(ctx)
	if err != nil {
		return fmt.Errorf("%w: list hold indexes: %w", ErrDatabase, err)
	}
	have := map[string]bool{}
	for _, n := range names {
		have[n.Name] = true
	}
	for name, m := range want {
		if have[name] {
			continue
		}
		m.Options = options.Index().SetName(name)
		if _, err := c.Indexes().CreateOne(ctx, m); err != nil {
			return fmt.Errorf("%w: create hold index: %w", ErrDatabase, err)
		}
	}
	return nil
}

// persistHolds records hold entries (HoldTaken, HoldEnded) and marks the
// holds that registrations of rs confirmed (rows with HoldID), filling in
// out for the hold entries; confirmations' rows keep their registration's
// result. A row whose write failed is Failed (retried by the caller).
func (s *Store) persistHolds(ctx context.Context, rs []invite.Reservation, out []Result) {
	c := s.holds()
	now := s.now().UTC()
	var taken []any
	var takenIdx []int
	for i, r := range rs {
		if r.Kind != invite.HoldTaken {
			continue
		}
		taken = append(taken, Hold{
			Key: HoldKey(r.Canonical, r.HoldID), Canonical: r.Canonical, Email: r.Email, Invitation: r.Code,
			HoldID: r.HoldID, Deadline: r.Deadline, HeldAt: r.ReservedAt, State: HoldHeld,
			Mail: &Outbox{State: MailPending, NextAt: now},
		})
		takenIdx = append(takenIdx, i)
	}
	if len(taken) > 0 {
		_, err := c.InsertMany(ctx, taken, options.InsertMany().SetOrdered(false))
		failed := insertFailures(err)
		for n, i := range takenIdx {
			if failed == nil || failed[n] {
				out[i] = Result{Outcome: Failed}
			} else {
				out[i] = Result{Outcome: Written}
			}
		}
	}
	for i, r := range rs {
		switch {
		case r.Kind == invite.HoldEnded:
			if err := s.settleHold(ctx, c, r, HoldExpired, now); err != nil {
				out[i] = Result{Outcome: Failed}
			} else {
				out[i] = Result{Outcome: Written}
			}
		case r.Kind == invite.Registration && r.HoldID != "" && out[i].Outcome != Failed:
			// The registration is the record that counts; the hold's state
			// follows (LiveHolds skips a hold whose email is registered),
			// so a failure here is retried with the row, never lost. A
			// confirmation MongoDB refused (past its cap, or the email
			// another code's) ends the hold without a registration.
			state := HoldConfirmed
			if out[i].Outcome == Refused || out[i].Outcome == Conflict {
				state = HoldExpired
			}
			if err := s.settleHold(ctx, c, r, state, now); err != nil {
				res := out[i]
				res.Outcome = Failed
				out[i] = res
			}
		}
	}
}

// insertFailures returns, for an unordered insert's error, which rows
// failed with something other than a duplicate key (written before: the
// row is settled); nil means every row failed (not a bulk write error).
func insertFailures(err error) map[int]bool {
	failed := map[int]bool{}
	if err == nil {
		return failed
	}
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || bwe.WriteConcernError != nil {
		return nil
	}
	for _, we := range bwe.WriteErrors {
		if !mongo.IsDuplicateKeyError(we) {
			failed[we.Index] = true
		}
	}
	return failed
}

// settleHold moves r's hold from held to state, once. A hold not recorded
// yet (its entry is written by another consumer, after this one) is
// inserted in its final state; the later insert of it as held then finds
// it and does nothing.
func (s *Store) settleHold(ctx context.Context, c *mongo.Collection, r invite.Reservation, state string, now time.Time) error {
	key := HoldKey(r.Canonical, r.HoldID)
	set := bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: state}, {Key: "settled_at", Value: now}}}}
	for try := 0; try < 2; try++ {
		res, err := c.UpdateOne(ctx, bson.D{{Key: "_id", Value: key}, {Key: "state", Value: HoldHeld}}, set)
		if err != nil {
			return fmt.Errorf("%w: settle hold: %w", ErrDatabase, err)
		}
		if res.MatchedCount > 0 || try > 0 {
			return nil
		}
		_, err = c.InsertOne(ctx, bson.D{
			{Key: "_id", Value: key}, {Key: "canonical", Value: r.Canonical}, {Key: "invitation", Value: r.Code},
			{Key: "hold_id", Value: r.HoldID}, {Key: "state", Value: state}, {Key: "settled_at", Value: now},
		})
		if err == nil {
			return nil
		}
		if !mongo.IsDuplicateKeyError(err) {
			return fmt.Errorf("%w: settle hold: %w", ErrDatabase, err)
		}
		// Recorded meanwhile: held (settle it) or already final.
	}
	return nil
}

// LiveHolds returns the holds of code ("" for every code) that are held
// and not past their deadline at now, except those whose email has a
// registration (its confirmation was written and the hold's state not
// yet): what a reseed restores into Redis and counts against max_uses.
func (s *Store) LiveHolds(ctx context.Context, code string, now time.Time) ([]Hold, error) {
	filter := bson.D{{Key: "state", Value: HoldHeld}, {Key: "deadline", Value: bson.D{{Key: "$gt", Value: now.UTC()}}}}
	if code != "" {
		filter = append(bson.D{{Key: "invitation", Value: code}}, filter...)
	}
	cur, err := s.holds().Find(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("%w: read holds: %w", ErrDatabase, err)
	}
	var hs []Hold
	if err := cur.All(ctx, &hs); err != nil {
		return nil, fmt.Errorf("%w: read holds: %w", ErrDatabase, err)
	}
	if len(hs) == 0 {
		return nil, nil
	}
	ids := make([]string, len(hs))
	for i, h := range hs {
		ids[i] = h.Canonical
	}
	owners, err := s.owners(ctx, s.regMajority, ids)
	if err != nil {
		return nil, err
	}
	live := hs[:0]
	for _, h := range hs {
		if _, registered := owners[h.Canonical]; !registered {
			live = append(live, h)
		}
	}
	return live, nil
}

// HoldCounts returns, per code, how many holds LiveHolds would return at
// now (held) and how many holds were confirmed (for invitectl list).
func (s *Store) HoldCounts(ctx context.Context, now time.Time) (held, confirmed map[string]int, err error) {
	hs, err := s.LiveHolds(ctx, "", now)
	if err != nil {
		return nil, nil, err
	}
	held, confirmed = map[string]int{}, map[string]int{}
	for _, h := range hs {
		held[h.Invitation]++
	}
	cur, err := s.holds().Aggregate(ctx, mongo.Pipeline{
		{{Key: "$match", Value: bson.D{{Key: "state", Value: HoldConfirmed}}}},
		{{Key: "$group", Value: bson.D{{Key: "_id", Value: "$invitation"}, {Key: "n", Value: bson.D{{Key: "$sum", Value: 1}}}}}},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%w: count holds: %w", ErrDatabase, err)
	}
	var rows []struct {
		Code string `bson:"_id"`
		N    int    `bson:"n"`
	}
	if err := cur.All(ctx, &rows); err != nil {
		return nil, nil, fmt.Errorf("%w: count holds: %w", ErrDatabase, err)
	}
	for _, r := range rows {
		confirmed[r.Code] = r.N
	}
	return held, confirmed, nil
}

// Hold returns the hold named key; ok is false when MongoDB has none.
func (s *Store) Hold(ctx context.Context, key string) (h Hold, ok bool, err error) {
	err = s.holds().FindOne(ctx, bson.D{{Key: "_id", Value: key}}).Decode(&h)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return h, false, nil
	}
	if err != nil {
		return h, false, fmt.Errorf("%w: read hold: %w", ErrDatabase, err)
	}
	return h, true, nil
}

// RecordHold writes r (a HoldTaken entry) unless MongoDB holds it already:
// the acknowledgement of a hold under INVITEGATE_ACK=mongo. The reconciler
// meets the same entry later and finds it written.
func (s *Store) RecordHold(ctx context.Context, r invite.Reservation) error {
	out := make([]Result, 1)
	s.persistHolds(ctx, []invite.Reservation{r}, out)
	if out[0].Outcome == Failed {
		return fmt.Errorf("%w: record hold", ErrDatabase)
	}
	return nil
}

// The confirmation email's outbox, on each hold: the mailer sends it like
// the registrations' (same claims, attempts and backoff), only while the
// hold is held and before its deadline.

// DueHoldMail returns up to limit holds whose confirmation email is
// pending and due at now, held and not past their deadline, the
// longest-waiting first.
func (s *Store) DueHoldMail(ctx context.Context, now time.Time, limit int) ([]Hold, error) {
	cur, err := s.holds().Find(ctx,
		bson.D{
			{Key: "mail.state", Value: MailPending}, {Key: "mail.next_at", Value: bson.D{{Key: "$lte", Value: now.UTC()}}},
			{Key: "state", Value: HoldHeld}, {Key: "deadline", Value: bson.D{{Key: "$gt", Value: now.UTC()}}},
		},
		options.Find().SetSort(bson.D{{Key: "mail.next_at", Value: 1}}).SetLimit(int64(limit)))
	if err != nil {
		return nil, fmt.Errorf("%w: due hold mail: %w", ErrDatabase, err)
	}
	var out []Hold
	if err := cur.All(ctx, &out); err != nil {
		return nil, fmt.Errorf("%w: due hold mail: %w", ErrDatabase, err)
	}
	return out, nil
}

// ClaimHoldMail is ClaimMail for the confirmation email of the hold key.
func (s *Store) ClaimHoldMail(ctx context.Context, key string, round, attempt int, owner string, now time.Time, lease time.Duration) (bool, error) {
	return s.claimMail(ctx, s.holds(), key, round, attempt, owner, now, lease)
}

// HoldMailSent is MailSent for the confirmation email of the hold key.
func (s *Store) HoldMailSent(ctx context.Context, key string, round, attempt int, now time.Time) error {
	return s.mailOutcome(ctx, s.holds(), key, round, attempt, sentSet(attempt, now))
}

// HoldMailFailed is MailFailed for the confirmation email of the hold key.
func (s *Store) HoldMailFailed(ctx context.Context, key string, round, attempt int, reason string, next time.Time) error {
	return s.mailOutcome(ctx, s.holds(), key, round, attempt, failedSet(attempt, reason, next))
}

// ResendHoldMail makes the confirmation email of the hold key due again at
// now, as a new round, when the hold is held and before its deadline, its
// email is no longer pending (sent, or given up), and no round was opened
// within gap (mail.reopened_at): it reports whether it did. At most one
// resend per gap, however many replicas ask.
func (s *Store) ResendHoldMail(ctx context.Context, key string, now time.Time, gap time.Duration) (bool, error) {
	cutoff := now.Add(-gap).UTC()
	res, err := s.holds().UpdateOne(ctx,
		bson.D{
			{Key: "_id", Value: key}, {Key: "state", Value: HoldHeld}, {Key: "deadline", Value: bson.D{{Key: "$gt", Value: now.UTC()}}},
			{Key: "$and", Value: bson.A{
				bson.D{{Key: "$or", Value: bson.A{
					bson.D{{Key: "mail.state", Value: MailSent}, {Key: "mail.sent_at", Value: bson.D{{Key: "$lte", Value: cutoff}}}},
					bson.D{{Key: "mail.state", Value: MailFailed}},
				}}},
				bson.D{{Key: "$or", Value: bson.A{
					bson.D{{Key: "mail.reopened_at", Value: bson.D{{Key: "$exists", Value: false}}}},
					bson.D{{Key: "mail.reopened_at", Value: bson.D{{Key: "$lte", Value: cutoff}}}},
				}}},
			}},
		},
		bson.D{
			{Key: "$set", Value: bson.D{{Key: "mail.state", Value: MailPending}, {Key: "mail.attempts", Value: 0}, {Key: "mail.next_at", Value: now.UTC()}, {Key: "mail.reopened_at", Value: now.UTC()}}},
			{Key: "$inc", Value: bson.D{{Key: "mail.round", Value: 1}}},
		})
	if err != nil {
		return false, fmt.Errorf("%w: resend hold mail: %w", ErrDatabase, err)
	}
	return res.ModifiedCount > 0, nil
}
