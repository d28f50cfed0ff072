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
)

// The outbox of the "further instructions" email. Every registration is
// written with its mail pending (Persist), in the same document, so a
// registration that reaches MongoDB cannot miss its email. The mailer
// (internal/mail) takes due ones, claims one attempt at a time and records
// the outcome here.

// Mail states.
const (
	MailPending = "pending" // due at NextAt
	MailSent    = "sent"
	MailFailed  = "failed" // gave up after the last attempt
)

// MailClaimsCollection holds one document per claimed attempt:
// _id "<canonical>#<round>.<attempt>#<generation>".
const MailClaimsCollection = "mail_claims"

// Outbox is a registration's mail state.
type Outbox struct {
	State     string    `bson:"state"`
	Round     int       `bson:"round"`    // times an operator reopened it (RetryFailedMail)
	Attempts  int       `bson:"attempts"` // attempts made in this round
	NextAt    time.Time `bson:"next_at"`
	LastError string    `bson:"last_error,omitempty"`
	SentAt    time.Time `bson:"sent_at,omitempty"`
}

// DueMail returns up to limit registrations whose mail is pending and due
// at now, the longest-waiting first.
func (s *Store) DueMail(ctx context.Context, now time.Time, limit int) ([]Registration, error) {
	cur, err := s.regMajority.Find(ctx,
		bson.D{{Key: "mail.state", Value: MailPending}, {Key: "mail.next_at", Value: bson.D{{Key: "$lte", Value: now.UTC()}}}},
		options.Find().SetSort(bson.D{{Key: "mail.next_at", Value: 1}}).SetLimit(int64(limit)))
	if err != nil {
		return nil, fmt.Errorf("%w: due mail: %w", ErrDatabase, err)
	}
	var out []Registration
	if err := cur.All(ctx, &out); err != nil {
		return nil, fmt.Errorf("%w: due mail: %w", ErrDatabase, err)
	}
	return out, nil
}

// ClaimMail claims attempt number attempt (0-based) of round round of
// canonical's mail for owner until now+lease, and reports whether it did.
// The claim is the insert of a document with a unique _id, the one write
// that is atomic on every MongoDB-wire server we run on, so of mailers
// racing for one attempt exactly one wins. A claim whose lease ran out (its
// mailer died) is superseded by the next generation's insert, again by
// exactly one mailer. After claiming, the registration is read again: if
// its mail is no longer pending at this round and attempt, someone finished
// it and ok is false. Claims and reads use majority concerns, so a MongoDB
// failover cannot hand one attempt to two mailers.
func (s *Store) ClaimMail(ctx context.Context, canonical string, round, attempt int, owner string, now time.Time, lease time.Duration) (ok bool, err error) {
	return s.claimMail(ctx, s.regMajority, canonical, round, attempt, owner, now, lease)
}

// claimMail is ClaimMail for the outbox of the document key of c (read
// with majority concern): registrations or holds.
func (s *Store) claimMail(ctx context.Context, c *mongo.Collection, canonical string, round, attempt int, owner string, now time.Time, lease time.Duration) (ok bool, err error) {
	claims := s.claims()
	claimed, gen := false, 0
	for ; gen < maxClaimGenerations && !claimed; gen++ {
		id := claimID(canonical, round, attempt, gen)
		_, err := claims.InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "owner", Value: owner}, {Key: "lease_until", Value: now.Add(lease).UTC()}})
		if err == nil {
			claimed = true
			break
		}
		if !mongo.IsDuplicateKeyError(err) {
			return false, fmt.Errorf("%w: claim mail: %w", ErrDatabase, err)
		}
		var held struct {
			LeaseUntil time.Time `bson:"lease_until"`
		}
		err = claims.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&held)
		if errors.Is(err, mongo.ErrNoDocuments) {
			// Deleted since our insert failed: claims are deleted only
			// after the attempt's outcome was recorded, so it is done.
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("%w: claim mail: %w", ErrDatabase, err)
		}
		if now.Before(held.LeaseUntil) {
			return false, nil // another mailer holds this attempt
		}
	}
	if !claimed {
		return false, ErrClaimsExhausted
	}
	var doc struct {
		Mail  *Outbox `bson:"mail"`
		State string  `bson:"state"` // a hold's: its mail goes only while it is held
	}
	err = c.FindOne(ctx, bson.D{{Key: "_id", Value: canonical}}).Decode(&doc)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return false, fmt.Errorf("%w: claim mail: %w", ErrDatabase, err)
	}
	if err == nil && doc.Mail != nil && doc.Mail.State == MailPending && doc.Mail.Round == round && doc.Mail.Attempts == attempt && (doc.State == "" || doc.State == HoldHeld) {
		return true, nil
	}
	// The attempt was finished by someone else (we worked from a stale
	// list): our claim is spent at once. Best effort, like mailOutcome's.
	if _, err := claims.DeleteOne(ctx, bson.D{{Key: "_id", Value: claimID(canonical, round, attempt, gen)}}); err != nil {
		s.log.WithError(err).Warn("could not delete a spent mail claim; it only takes space")
	}
	return false, nil
}

// ErrClaimsExhausted means an attempt's claims expired maxClaimGenerations
// times (its mailers kept dying or stalling): it is left to an operator.
var ErrClaimsExhausted = errors.New("persist: every claim of this mail attempt expired")

// maxClaimGenerations bounds the takeovers of one attempt (each needs a
// lease to run out first); past it the attempt is left to an operator.
//
// NOTE: a pending mail whose claims are exhausted stays pending and skipped
// for good: `invitectl mail` counts it, but nothing reopens it; its claims
// (and those of attempts whose outcome was never recorded) stay too.
const maxClaimGenerations = 20

// MailSent records that attempt (0-based) of round delivered canonical's
// mail.
func (s *Store) MailSent(ctx context.Context, canonical string, round, attempt int, now time.Time) error {
	return s.mailOutcome(ctx, s.reg, canonical, round, attempt, sentSet(attempt, now))
}

func sentSet(attempt int, now time.Time) bson.D {
	return bson.D{
		{Key: "mail.state", Value: MailSent}, {Key: "mail.attempts", Value: attempt + 1}, {Key: "mail.sent_at", Value: now.UTC()},
	}
}

// MailFailed records that attempt (0-based) failed with reason: the mail
// is due again at next, or, when next is zero, given up (state failed).
func (s *Store) MailFailed(ctx context.Context, canonical string, round, attempt int, reason string, next time.Time) error {
	return s.mailOutcome(ctx, s.reg, canonical, round, attempt, failedSet(attempt, reason, next))
}

func failedSet(attempt int, reason string, next time.Time) bson.D {
	set := bson.D{{Key: "mail.attempts", Value: attempt + 1}, {Key: "mail.last_error", Value: reason}}
	if next.IsZero() {
		return append(set, bson.E{Key: "mail.state", Value: MailFailed})
	}
	return append(set, bson.E{Key: "mail.next_at", Value: next.UTC()})
}

// ErrMailOutcomeLate means the mail was no longer pending at that round and
// attempt when its outcome came: another mailer took the attempt over after
// the lease ran out.
var ErrMailOutcomeLate = errors.New("persist: mail outcome came after the claim's lease")

func (s *Store) mailOutcome(ctx context.Context, c *mongo.Collection, canonical string, round, attempt int, set bson.D) error {
	res, err := c.UpdateOne(ctx,
		bson.D{{Key: "_id", Value: canonical}, {Key: "mail.state", Value: MailPending}, {Key: "mail.round", Value: round}, {Key: "mail.attempts", Value: attempt}},
		bson.D{{Key: "$set", Value: set}})
	if err != nil {
		return fmt.Errorf("%w: record mail outcome: %w", ErrDatabase, err)
	}
	if res.MatchedCount == 0 {
		return ErrMailOutcomeLate
	}
	// The attempt's claims are spent: with the outcome recorded (majority),
	// a mailer that claims this attempt again re-reads the registration in
	// ClaimMail and finds it no longer pending at this attempt. Best effort:
	// a claim left behind only takes space.
	ids := make([]string, maxClaimGenerations)
	for gen := range ids {
		ids[gen] = claimID(canonical, round, attempt, gen)
	}
	if _, err := s.claims().DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}}); err != nil {
		s.log.WithError(err).Warn("could not delete spent mail claims; they only take space")
	}
	return nil
}

// claims is the mail_claims collection with majority concerns.
func (s *Store) claims() *mongo.Collection {
	return s.db.Collection(MailClaimsCollection, options.Collection().SetWriteConcern(writeconcern.Majority()).SetReadConcern(readconcern.Majority()))
}

// claimID names generation gen of the claim on one attempt.
func claimID(canonical string, round, attempt, gen int) string {
	return fmt.Sprintf("%s#%d.%d#%d", canonical, round, attempt, gen)
}

// MailCounts returns how many registrations' mail is in each state, from
// one pass over the registrations: three separate counts could see a mail
// move from pending to sent between them and count it twice.
func (s *Store) MailCounts(ctx context.Context) (map[string]int, error) {
	out := map[string]int{MailPending: 0, MailSent: 0, MailFailed: 0}
	cur, err := s.reg.Aggregate(ctx, mongo.Pipeline{
		{{Key: "$match", Value: bson.D{{Key: "mail.state", Value: bson.D{{Key: "$in", Value: bson.A{MailPending, MailSent, MailFailed}}}}}}},
		{{Key: "$group", Value: bson.D{{Key: "_id", Value: "$mail.state"}, {Key: "n", Value: bson.D{{Key: "$sum", Value: 1}}}}}},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: count mail: %w", ErrDatabase, err)
	}
	var rows []struct {
		State string `bson:"_id"`
		N     int    `bson:"n"`
	}
	if err := cur.All(ctx, &rows); err != nil {
		return nil, fmt.Errorf("%w: count mail: %w", ErrDatabase, err)
	}
	for _, r := range rows {
		out[r.State] = r.N
	}
	return out, nil
}

// RetryFailedMail makes every given-up mail pending again, due now, in a
// new round with a fresh count of attempts, and returns how many it
// reopened.
func (s *Store) RetryFailedMail(ctx context.Context, now time.Time) (int, error) {
	res, err := s.reg.UpdateMany(ctx, bson.D{{Key: "mail.state", Value: MailFailed}},
		bson.D{
			{Key: "$set", Value: bson.D{{Key: "mail.state", Value: MailPending}, {Key: "mail.attempts", Value: 0}, {Key: "mail.next_at", Value: now.UTC()}}},
			{Key: "$inc", Value: bson.D{{Key: "mail.round", Value: 1}}},
		})
	if err != nil {
		return 0, fmt.Errorf("%w: retry failed mail: %w", ErrDatabase, err)
	}
	return int(res.ModifiedCount), nil
}
