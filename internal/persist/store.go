// Package persist owns MongoDB, invitegate's source of truth: the
// invitations and registrations collections, the settings a deployment
// recorded at its first start, the email outbox on each registration, the
// reconciler that writes reservations from the Redis streams into them with
// unordered bulk inserts keyed by canonical email, never upserts
// (docs/ARCHITECTURE.md, "The reconciler"), and the MongoDB-only
// reservation path (seats.go). It translates driver errors into its own.
package persist

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readconcern"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/logs"
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

// ErrPartial marks a CreateInvitations error after writing began: the rows
// before the failing one may exist.
var ErrPartial = errors.New("persist: some invitations may have been created")

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
	// seats is this process's knowledge of the seats taken (cap.go).
	seats seatBook
	// hints hands out the seats writers try first (cap.go); nil: none.
	hints SeatHinter
	// seatsLost counts inserts that met a seat another writer took;
	// seatReads counts reads of a code's seats (Collectors).
	seatsLost, seatReads atomic.Int64
	// hintsOffUntil: no hints are asked for before this (unix ns).
	hintsOffUntil atomic.Int64
}

// NewStore returns a Store on db. Writes use majority write concern: a
// registration is acknowledged to the reconciler only once it survives a
// primary failover.
func NewStore(db *mongo.Database, logger logrus.FieldLogger, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	logger = logs.OrQuiet(logger)
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
	want := map[string]mongo.IndexModel{
		"invitation_1": {Keys: bson.D{{Key: "invitation", Value: 1}}},
		// The mailer's queue: pending mail by due time.
		"mail_state_1_mail_next_at_1": {Keys: bson.D{{Key: "mail.state", Value: 1}, {Key: "mail.next_at", Value: 1}}},
		// MongoDB's own cap: one registration per seat (cap.go).
		seatIndex: {Keys: bson.D{{Key: "seat", Value: 1}}, Options: options.Index().SetUnique(true).SetSparse(true)},
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
	for name, m := range want {
		if have[name] {
			continue
		}
		if m.Options == nil {
			m.Options = options.Index()
		}
		m.Options.SetName(name)
		if _, err := s.reg.Indexes().CreateOne(ctx, m); err != nil {
			return fmt.Errorf("%w: create index: %w", ErrDatabase, err)
		}
	}
	if err := s.ensureHoldIndexes(ctx); err != nil {
		return err
	}
	return s.seatLegacy(ctx)
}
