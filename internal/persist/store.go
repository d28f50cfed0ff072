// Package persist owns MongoDB, invitegate's source of truth: the
// invitations and registrations collections, and the reconciler that writes
// reservations from the Redis streams into them.
//
// Registrations are written with unordered bulk inserts keyed by canonical
// email. A duplicate key for the same email and code means "already
// written" (a redelivered batch); for another code it is a conflict the
// reservation layer must undo. Inserts, never upserts: they are idempotent
// by _id without racing updates on one document.
package persist

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/sirupsen/logrus"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readconcern"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/invitegate/invitegate/internal/invite"
)

// Collection names.
const (
	InvitationsCollection   = "invitations"
	RegistrationsCollection = "registrations"
	SettingsCollection      = "settings"
)

// Errors returned by Store.
var (
	ErrExists  = errors.New("persist: invitation already exists")
	ErrInvalid = errors.New("persist: invalid invitation")
	// ErrSettingsMismatch: the deployment was created with another shard
	// count, email rule or reservation path than this process is
	// configured with.
	ErrSettingsMismatch = fmt.Errorf("%w: the deployment was created with other settings", invite.ErrMisconfigured)
	ErrDatabase         = errors.New("persist: database unavailable")
	ErrNotFound         = errors.New("persist: no such invitation")
	ErrChanged          = errors.New("persist: invitation changed concurrently")
)

// Store reads and writes invitegate's MongoDB collections.
type Store struct {
	db  *mongo.Database
	inv *mongo.Collection
	reg *mongo.Collection
	// regMajority reads registrations with majority read concern.
	regMajority *mongo.Collection
	settings    *mongo.Collection
	log         logrus.FieldLogger
	now         func() time.Time
}

// NewStore returns a Store on db. Writes use majority write concern: a
// registration is acknowledged to the reconciler only once it survives a
// primary failover.
func NewStore(db *mongo.Database, logger logrus.FieldLogger, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	if logger == nil {
		l := logrus.New()
		l.SetLevel(logrus.WarnLevel)
		logger = l
	}
	wc := options.Collection().SetWriteConcern(writeconcern.Majority())
	return &Store{
		db:  db,
		inv: db.Collection(InvitationsCollection, wc),
		reg: db.Collection(RegistrationsCollection, wc),
		regMajority: db.Collection(RegistrationsCollection, options.Collection().
			SetWriteConcern(writeconcern.Majority()).SetReadConcern(readconcern.Majority())),
		settings: db.Collection(SettingsCollection, wc),
		log:      logger.WithField("component", "persist"),
		now:      now,
	}
}

// EnsureSchema creates the indexes the service relies on. It is idempotent.
func (s *Store) EnsureSchema(ctx context.Context) error {
	want := map[string]bson.D{
		"invitation_1": {{Key: "invitation", Value: 1}},
		// The mailer's queue: pending mail by due time.
		"mail_state_1_mail_next_at_1": {{Key: "mail.state", Value: 1}, {Key: "mail.next_at", Value: 1}},
	}
	// Only the missing ones: creating an existing compound index again
	// crashes the MongoDB-wire server the tests use (FerretDB 1.24).
	names, err := s.reg.Indexes().ListSpecifications(ctx)
	if err != nil {
		return fmt.Errorf("%w: list indexes: %w", ErrDatabase, err)
	}
	have := map[string]bool{}
	for _, n := range names {
		have[n.Name] = true
	}
	for name, keys := range want {
		if have[name] {
			continue
		}
		if _, err := s.reg.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: keys, Options: options.Index().SetName(name)}); err != nil {
			return fmt.Errorf("%w: create index: %w", ErrDatabase, err)
		}
	}
	return nil
}

// CheckShards records the deployment's shard count on first start and
// returns ErrSettingsMismatch when a later start uses another one: emails
// would hash to other shards and claims would no longer be unique.
func (s *Store) CheckShards(ctx context.Context, shards int) error {
	return s.checkSetting(ctx, "shards", int64(shards))
}

// CheckEmailRule does the same for the rule that makes canonical emails
// (whether +tags are dropped for every domain): replicas that disagree
// would let one mailbox hold two invitations.
func (s *Store) CheckEmailRule(ctx context.Context, stripPlusAll bool) error {
	return s.checkSetting(ctx, "email_strip_plus_all", stripPlusAll)
}

// checkSetting stores value under id on first use and returns
// ErrSettingsMismatch (wrapped with the names) when a later value differs.
func (s *Store) checkSetting(ctx context.Context, id string, value any) error {
	_, err := s.settings.InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "value", Value: value}})
	if err == nil {
		return nil
	}
	if !mongo.IsDuplicateKeyError(err) {
		return fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	raw, err := s.settings.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Raw()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	stored := raw.Lookup("value")
	same := false
	switch v := value.(type) {
	case int64:
		n, ok := stored.AsInt64OK()
		same = ok && n == v
	case bool:
		b, ok := stored.BooleanOK()
		same = ok && b == v
	}
	if !same {
		return fmt.Errorf("%w: %s was created as %s, configured %v", ErrSettingsMismatch, id, stored.String(), value)
	}
	return nil
}

// Shards returns the shard count the deployment recorded; ok is false
// before the first service start.
func (s *Store) Shards(ctx context.Context) (shards int, ok bool, err error) {
	ok, err = s.setting(ctx, "shards", &shards)
	return shards, ok, err
}

// setting decodes the value recorded under id into value; ok is false when
// nothing is recorded.
func (s *Store) setting(ctx context.Context, id string, value any) (ok bool, err error) {
	raw, err := s.settings.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return false, nil
	}
	if err == nil {
		err = raw.Lookup("value").Unmarshal(value)
	}
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	return true, nil
}

// CreateInvitation inserts inv. It returns ErrInvalid for a bad code or
// max_uses and ErrExists when the code is taken.
func (s *Store) CreateInvitation(ctx context.Context, inv invite.Invitation) error {
	if !invite.ValidCode(inv.Code) {
		return fmt.Errorf("%w: code must be 1-64 characters of A-Z a-z 0-9 _ -", ErrInvalid)
	}
	if !invite.ValidMaxUses(inv.MaxUses) {
		return fmt.Errorf("%w: max_uses must be 1..%d", ErrInvalid, invite.MaxUsesLimit)
	}
	doc := bson.D{{Key: "_id", Value: inv.Code}, {Key: "max_uses", Value: int32(inv.MaxUses)}}
	if inv.Disabled {
		doc = append(doc, bson.E{Key: "disabled", Value: true})
	}
	if !inv.ExpiresAt.IsZero() {
		doc = append(doc, bson.E{Key: "expires_at", Value: inv.ExpiresAt})
	}
	_, err := s.inv.InsertOne(ctx, doc)
	if mongo.IsDuplicateKeyError(err) {
		return ErrExists
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	return nil
}

// CreateInvitations inserts invs all together: it returns ErrInvalid or
// ErrExists (naming the code) before writing anything when one of them is
// bad or taken.
func (s *Store) CreateInvitations(ctx context.Context, invs []invite.Invitation) error {
	docs := make([]any, 0, len(invs))
	for _, inv := range invs {
		if !invite.ValidCode(inv.Code) || !invite.ValidMaxUses(inv.MaxUses) {
			return fmt.Errorf("%w: %q", ErrInvalid, inv.Code)
		}
		n, err := s.inv.CountDocuments(ctx, bson.D{{Key: "_id", Value: inv.Code}})
		if err != nil {
			return fmt.Errorf("%w: %w", ErrDatabase, err)
		}
		if n > 0 {
			return fmt.Errorf("%w: %q", ErrExists, inv.Code)
		}
		doc := bson.D{{Key: "_id", Value: inv.Code}, {Key: "max_uses", Value: int32(inv.MaxUses)}}
		if !inv.ExpiresAt.IsZero() {
			doc = append(doc, bson.E{Key: "expires_at", Value: inv.ExpiresAt})
		}
		docs = append(docs, doc)
	}
	if len(docs) == 0 {
		return nil
	}
	if _, err := s.inv.InsertMany(ctx, docs); err != nil {
		// The ordered insert may have written the rows before the failing
		// one: not all or nothing any more.
		if mongo.IsDuplicateKeyError(err) {
			return fmt.Errorf("%w: %w: created concurrently", ErrPartial, ErrExists)
		}
		return fmt.Errorf("%w: %w: %w", ErrPartial, ErrDatabase, err)
	}
	return nil
}

// ErrPartial marks a CreateInvitations error after writing began: the rows
// before the failing one may exist.
var ErrPartial = errors.New("persist: some invitations may have been created")

// SetMaxUses changes code's max_uses from old to n. It returns ErrChanged
// when max_uses is no longer old (another admin was faster) and
// ErrNotFound when there is no such invitation.
func (s *Store) SetMaxUses(ctx context.Context, code string, old, n int) error {
	if !invite.ValidMaxUses(n) {
		return fmt.Errorf("%w: max_uses must be 1..%d", ErrInvalid, invite.MaxUsesLimit)
	}
	res, err := s.inv.UpdateOne(ctx, bson.D{{Key: "_id", Value: code}, {Key: "max_uses", Value: old}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "max_uses", Value: int32(n)}}}})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	if res.MatchedCount == 0 {
		if _, ok, err := s.Invitation(ctx, code); err == nil && !ok {
			return ErrNotFound
		}
		return ErrChanged
	}
	return nil
}

// SetDisabled disables or enables code; ErrNotFound when there is none.
func (s *Store) SetDisabled(ctx context.Context, code string, disabled bool) error {
	res, err := s.inv.UpdateOne(ctx, bson.D{{Key: "_id", Value: code}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "disabled", Value: disabled}}}})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	if res.MatchedCount == 0 {
		return ErrNotFound
	}
	return nil
}

// Invitation returns the invitation named code. ok is false when there is
// none, or when its document is unusable (logged).
func (s *Store) Invitation(ctx context.Context, code string) (invite.Invitation, bool, error) {
	raw, err := s.inv.FindOne(ctx, bson.D{{Key: "_id", Value: code}}).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return invite.Invitation{}, false, nil
	}
	if err != nil {
		return invite.Invitation{}, false, fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	inv, err := decodeInvitation(raw)
	if err != nil {
		s.log.WithError(err).WithField("code", code).Error("ignoring unusable invitation document")
		return invite.Invitation{}, false, nil
	}
	return inv, true, nil
}

// Invitations returns every usable invitation; unusable documents are
// logged and skipped.
func (s *Store) Invitations(ctx context.Context) ([]invite.Invitation, error) {
	cur, err := s.inv.Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	defer cur.Close(ctx)
	var out []invite.Invitation
	for cur.Next(ctx) {
		inv, err := decodeInvitation(cur.Current)
		if err != nil {
			s.log.WithError(err).WithField("code", cur.Current.Lookup("_id").String()).Error("ignoring unusable invitation document")
			continue
		}
		out = append(out, inv)
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	return out, nil
}

// decodeInvitation reads an invitation written by invitectl or by any other
// tool: max_uses may be an int32, an int64 or a double holding an integer.
func decodeInvitation(raw bson.Raw) (invite.Invitation, error) {
	var inv invite.Invitation
	id, ok := raw.Lookup("_id").StringValueOK()
	if !ok || !invite.ValidCode(id) {
		return inv, errors.New("_id is not a valid invitation code")
	}
	inv.Code = id
	mu := raw.Lookup("max_uses")
	var n int64
	switch mu.Type {
	case bson.TypeInt32:
		n = int64(mu.Int32())
	case bson.TypeInt64:
		n = mu.Int64()
	case bson.TypeDouble:
		f := mu.Double()
		if f != math.Trunc(f) || math.IsInf(f, 0) || math.IsNaN(f) || f < 0 || f > invite.MaxUsesLimit {
			return inv, fmt.Errorf("max_uses %v is not an integer in range", f)
		}
		n = int64(f)
	default:
		return inv, fmt.Errorf("max_uses has BSON type %s, want int32, int64 or integral double", mu.Type)
	}
	if n < 1 || n > invite.MaxUsesLimit {
		return inv, fmt.Errorf("max_uses %d out of range 1..%d", n, invite.MaxUsesLimit)
	}
	inv.MaxUses = int(n)
	if d := raw.Lookup("disabled"); d.Type == bson.TypeBoolean {
		inv.Disabled = d.Boolean()
	}
	if e := raw.Lookup("expires_at"); e.Type == bson.TypeDateTime {
		inv.ExpiresAt = e.Time().UTC()
	}
	return inv, nil
}

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
