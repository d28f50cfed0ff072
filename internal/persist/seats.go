package persist

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
)

// SeatsCollection holds, with INVITEGATE_RESERVER=mongo, one document per
// seat taken: _id "<code>#<k>" for k in [0, max_uses).
const SeatsCollection = "seats"

// MongoReserver takes seats with MongoDB alone (INVITEGATE_RESERVER=mongo);
// every signup, rejections included, costs MongoDB several round trips. A
// seat is the unique insert of "<code>#<k>", k below max_uses (I1), taken
// before the registration, whose _id is the canonical email (I2); why, in
// docs/ARCHITECTURE.md, "The MongoDB-only path".
type MongoReserver struct {
	st    *Store
	seats *mongo.Collection
}

// NewMongoReserver returns a MongoReserver on st.
func NewMongoReserver(st *Store) *MongoReserver {
	return &MongoReserver{st: st, seats: st.db.Collection(SeatsCollection, options.Collection().SetWriteConcern(writeconcern.Majority()))}
}

// EnsureSchema indexes the seats by code; it is idempotent.
func (m *MongoReserver) EnsureSchema(ctx context.Context) error {
	_, err := m.seats.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "code", Value: 1}}, Options: options.Index().SetName("code_1")})
	if err != nil {
		return fmt.Errorf("%w: create index: %w", ErrDatabase, err)
	}
	return nil
}

// ErrConfirmNeedsRedis: a code with a confirmation window on a deployment
// without Redis (INVITEGATE_RESERVER=mongo); it needs an operator.
var ErrConfirmNeedsRedis = fmt.Errorf("%w: confirmation windows need the Redis path (INVITEGATE_RESERVER=redis)", invite.ErrMisconfigured)

// Reserve takes one seat of code for a, with the outcomes and errors of
// reserve.Reserver.Reserve (ErrConfirmNeedsRedis for a code with a
// confirmation window); MongoDB failures wrap invite.ErrUnavailable.
func (m *MongoReserver) Reserve(ctx context.Context, code string, a email.Address) (invite.Result, error) {
	if !invite.ValidCode(code) {
		return invite.Result{}, invite.ErrUnknownCode
	}
	if res, err, done := m.known(ctx, code, a.Canonical); done {
		return res, err
	}
	inv, err := m.usable(ctx, code)
	if err != nil {
		return invite.Result{}, err
	}
	if inv.ConfirmWindow > 0 {
		// Holds live in Redis: admitting at once would hand the seat to an
		// address nobody confirmed.
		return invite.Result{}, ErrConfirmNeedsRedis
	}
	k, err := m.takeSeat(ctx, inv, a.Canonical)
	if err != nil {
		return invite.Result{}, err
	}
	// Disabled, expired or shrunk since the read: give the seat back.
	if now, err := m.usable(ctx, code); err != nil || k >= now.MaxUses {
		if err == nil {
			err = invite.ErrFull
		}
		return invite.Result{}, errors.Join(err, m.releaseSeat(ctx, code, k))
	}
	r := invite.Reservation{Code: code, Canonical: a.Canonical, Email: a.Normalized, ReservedAt: m.st.now()}
	out, err := m.st.Persist(ctx, []invite.Reservation{r})
	if err == nil && out[0].Outcome == Failed && out[0].Duplicate {
		// This insert wrote nothing, but who did is not known yet.
		if out[0], err = m.owner(ctx, r); err != nil {
			// Definitely not written by this request: the seat goes back.
			return invite.Result{}, invite.Unavailable(errors.Join(ErrDatabase, err, m.releaseSeat(ctx, code, k)))
		}
	}
	if err != nil || out[0].Outcome == Failed {
		// Unknown whether it landed: the seat stays taken. ctx.Err() names
		// a spent request deadline, which Persist does not report.
		return invite.Result{}, invite.Unavailable(errors.Join(ErrDatabase, err, ctx.Err()))
	}
	switch out[0].Outcome {
	case AlreadyWritten: // the same email won a concurrent request
		return invite.Result{Outcome: invite.Existing}, m.releaseSeat(ctx, code, k)
	case Conflict:
		return invite.Result{}, errors.Join(invite.ErrEmailTaken, m.releaseSeat(ctx, code, k))
	case Refused:
		return invite.Result{}, errors.Join(invite.ErrFull, m.releaseSeat(ctx, code, k))
	}
	return invite.Result{Outcome: invite.Created}, nil
}

// known answers an email that is already registered; done is false when
// it is not.
func (m *MongoReserver) known(ctx context.Context, code, canonical string) (res invite.Result, err error, done bool) {
	var doc struct {
		Invitation string `bson:"invitation"`
	}
	err = m.st.reg.FindOne(ctx, bson.D{{Key: "_id", Value: canonical}}).Decode(&doc)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		return res, nil, false
	case err != nil:
		return res, invite.Unavailable(err), true
	case doc.Invitation == code:
		return invite.Result{Outcome: invite.Existing}, nil, true
	}
	return res, invite.ErrEmailTaken, true
}

// usable returns code's invitation, or the error that answers for it.
func (m *MongoReserver) usable(ctx context.Context, code string) (invite.Invitation, error) {
	inv, ok, err := m.st.Invitation(ctx, code)
	switch {
	case err != nil:
		return inv, invite.Unavailable(err)
	case !ok:
		return inv, invite.ErrUnknownCode
	case inv.Disabled:
		return inv, invite.ErrDisabled
	case inv.Expired(m.st.now()):
		return inv, invite.ErrExpired
	}
	return inv, nil
}

// takeSeat inserts the first free seat of inv: from the number of seats
// taken upwards, then, if that runs past max_uses, any hole a released
// seat left. It returns invite.ErrFull when every seat is taken.
func (m *MongoReserver) takeSeat(ctx context.Context, inv invite.Invitation, canonical string) (int, error) {
	n, err := m.seats.CountDocuments(ctx, bson.D{{Key: "code", Value: inv.Code}})
	if err != nil {
		return 0, invite.Unavailable(err)
	}
	if int(n) >= inv.MaxUses {
		return 0, invite.ErrFull
	}
	try := func(k int) (bool, error) {
		_, err := m.seats.InsertOne(ctx, bson.D{{Key: "_id", Value: seatID(inv.Code, k)}, {Key: "code", Value: inv.Code}, {Key: "k", Value: k}, {Key: "email", Value: canonical}})
		if mongo.IsDuplicateKeyError(err) {
			return false, nil
		}
		if err != nil {
			return false, invite.Unavailable(err)
		}
		return true, nil
	}
	for k := int(n); k < inv.MaxUses; k++ {
		if ok, err := try(k); ok || err != nil {
			return k, err
		}
	}
	// Every seat from n up is taken, yet fewer than max_uses exist: a
	// released seat left a hole below n.
	cur, err := m.seats.Find(ctx, bson.D{{Key: "code", Value: inv.Code}}, options.Find().SetProjection(bson.D{{Key: "k", Value: 1}}))
	if err != nil {
		return 0, invite.Unavailable(err)
	}
	var docs []struct {
		K int `bson:"k"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return 0, invite.Unavailable(err)
	}
	taken := make(map[int]bool, len(docs))
	for _, d := range docs {
		taken[d.K] = true
	}
	for k := 0; k < inv.MaxUses; k++ {
		if taken[k] {
			continue
		}
		if ok, err := try(k); ok || err != nil {
			return k, err
		}
	}
	return 0, invite.ErrFull
}

// owner reads which code holds r's email after r's insert hit a duplicate
// key, for Persist's outcomes AlreadyWritten and Conflict. The majority
// read in Persist misses a concurrent request's registration until that
// one is majority-committed (and the tests' MongoDB-wire server sometimes
// misses a committed one), so it reads again, a few times, while ctx
// lasts.
func (m *MongoReserver) owner(ctx context.Context, r invite.Reservation) (Result, error) {
	wait := 10 * time.Millisecond
	for attempt := 1; ; attempt++ {
		reg, ok, err := m.st.Registration(ctx, r.Canonical)
		switch {
		case ok && reg.Invitation == r.Code:
			return Result{Outcome: AlreadyWritten}, nil
		case ok:
			return Result{Outcome: Conflict, Owner: reg.Invitation}, nil
		case err == nil:
			err = errors.New("persist: the registration behind a duplicate key is not readable")
		}
		if attempt == ownerAttempts {
			return Result{}, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Result{}, errors.Join(err, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, 250*time.Millisecond)
	}
}

// ownerAttempts bounds owner's reads (about 0.8 s of waiting in all).
const ownerAttempts = 8

// releaseTimeout bounds releaseSeat, which does not stop at the request's
// deadline: a seat not given back stays taken for good.
const releaseTimeout = 5 * time.Second

// releaseSeat deletes seat k of code. It runs past ctx's deadline or
// cancellation (up to releaseTimeout): its caller knows the seat is not
// needed, often when the request's time is nearly spent.
func (m *MongoReserver) releaseSeat(ctx context.Context, code string, k int) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if _, err := m.seats.DeleteOne(ctx, bson.D{{Key: "_id", Value: seatID(code, k)}}); err != nil {
		return invite.Unavailable(fmt.Errorf("release a seat: %w", err))
	}
	return nil
}

// Taken returns how many seats of code are taken.
func (m *MongoReserver) Taken(ctx context.Context, code string) (int, error) {
	n, err := m.seats.CountDocuments(ctx, bson.D{{Key: "code", Value: code}})
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	return int(n), nil
}

func seatID(code string, k int) string { return code + "#" + strconv.Itoa(k) }

// SeatRegistrations takes a seat for every registration, for a
// deployment that starts using the MongoDB path with registrations made
// by the Redis path. Seats already there are kept. Nothing may serve
// signups while it runs.
func (m *MongoReserver) SeatRegistrations(ctx context.Context) error {
	counts, err := m.st.Counts(ctx)
	if err != nil {
		return err
	}
	for code, n := range counts {
		for k := 0; k < n; k++ {
			_, err := m.seats.InsertOne(ctx, bson.D{{Key: "_id", Value: seatID(code, k)}, {Key: "code", Value: code}, {Key: "k", Value: k}})
			if err != nil && !mongo.IsDuplicateKeyError(err) {
				return fmt.Errorf("%w: %w", ErrDatabase, err)
			}
		}
	}
	return nil
}

// seatedSetting is present once SeatRegistrations completed for the current
// reservation path; CheckReserver removes it when it records a path.
const seatedSetting = "seats_complete"

// EnsureSeated runs SeatRegistrations unless it already completed since the
// deployment (re)started using the MongoDB path, and then records that it
// did. A start that dies or times out while seating seats again on the
// next attempt, whoever recorded the path.
func (m *MongoReserver) EnsureSeated(ctx context.Context) error {
	n, err := m.st.settings.CountDocuments(ctx, bson.D{{Key: "_id", Value: seatedSetting}})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	if n > 0 {
		return nil
	}
	if err := m.SeatRegistrations(ctx); err != nil {
		return err
	}
	if _, err := m.st.settings.InsertOne(ctx, bson.D{{Key: "_id", Value: seatedSetting}, {Key: "value", Value: true}}); err != nil && !mongo.IsDuplicateKeyError(err) {
		return fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	return nil
}

// Status reports whether code takes signups, with the outcomes of
// reserve.Reserver.Status; full when every seat is taken.
func (m *MongoReserver) Status(ctx context.Context, code string) (invite.Status, error) {
	if !invite.ValidCode(code) {
		return "", invite.ErrUnknownCode
	}
	inv, err := m.usable(ctx, code)
	switch {
	case errors.Is(err, invite.ErrDisabled):
		return invite.StatusDisabled, nil
	case errors.Is(err, invite.ErrExpired):
		return invite.StatusExpired, nil
	case err != nil:
		return "", err
	}
	n, err := m.seats.CountDocuments(ctx, bson.D{{Key: "code", Value: code}})
	if err != nil {
		return "", invite.Unavailable(err)
	}
	if int(n) >= inv.MaxUses {
		return invite.StatusFull, nil
	}
	return invite.StatusOpen, nil
}

var _ invite.Reserver = (*MongoReserver)(nil)
