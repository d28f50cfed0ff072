package workflow

import (
	"context"
	"time"

	"github.com/invitegate/invitegate/internal/confirm"
	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
)

// MongoAck is the reservation path behind INVITEGATE_ACK=mongo: a signup
// is answered only once MongoDB holds it, so losing Redis entirely (a
// failover with asynchronous replication, a lost disk) loses nothing that
// was acknowledged. Past the timeout the answer is 503; the reservation
// stays in Redis and the reconciler writes it, so a retry answers 200.
// Once MongoDB confirmed a registration, a persisted mark next to the
// email's claim lets repeats be answered by Redis alone.
type MongoAck struct {
	seats   *Signups
	res     *reserve.Reserver
	st      *persist.Store
	commit  *persist.Committer
	timeout time.Duration
	now     func() time.Time
}

var _ invite.Reserver = (*MongoAck)(nil)

// NewMongoAck returns the acknowledged-by-MongoDB path over seats, writing
// through commit (a group commit into st) and waiting at most timeout for
// MongoDB. now defaults to time.Now.
func NewMongoAck(seats *Signups, st *persist.Store, commit *persist.Committer, timeout time.Duration, now func() time.Time) *MongoAck {
	if now == nil {
		now = time.Now
	}
	return &MongoAck{seats: seats, res: seats.res, st: st, commit: commit, timeout: timeout, now: now}
}

// Reserve takes a seat in Redis, then waits for MongoDB to hold it, with
// the outcomes and errors of invite.Reserver. A hold is answered once
// MongoDB's holds collection has it.
func (d *MongoAck) Reserve(ctx context.Context, code string, a email.Address) (invite.Result, error) {
	at := d.now()
	res, err := d.seats.Reserve(ctx, code, a)
	if err != nil {
		return res, err
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	if res.Outcome == invite.Held || res.Outcome == invite.HeldAgain {
		err := d.st.RecordHold(ctx, invite.Reservation{
			ID: res.ID, Shard: res.Shard, Code: code, Canonical: a.Canonical, Email: a.Normalized, ReservedAt: at,
			Kind: invite.HoldTaken, HoldID: res.ID, Deadline: res.Deadline,
		})
		if err != nil {
			return invite.Result{}, invite.Unavailable(err)
		}
		return res, nil
	}
	return d.settle(ctx, code, a.Canonical, a.Normalized, "", at, res)
}

// Confirm confirms a hold in Redis (Signups.Confirm), then waits for
// MongoDB to hold the registration.
func (d *MongoAck) Confirm(ctx context.Context, h confirm.Hold) (invite.Result, error) {
	at := d.now()
	res, err := d.seats.Confirm(ctx, h)
	if err != nil {
		return res, err
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	return d.settle(ctx, h.Code, h.Canonical, h.Email, h.HoldID, at, res)
}

// settle answers res (Created or Existing) once MongoDB holds the
// registration.
func (d *MongoAck) settle(ctx context.Context, code, canonical, addr, holdID string, at time.Time, res invite.Result) (invite.Result, error) {
	if res.Outcome == invite.Existing {
		// A repeat: answered from Redis once MongoDB is known to hold it.
		if ok, err := d.res.Persisted(ctx, canonical, code); err != nil || ok {
			return res, err
		}
		reg, ok, err := d.st.Registration(ctx, canonical)
		if err != nil {
			return invite.Result{}, invite.Unavailable(err)
		}
		if ok && reg.Invitation == code {
			d.markPersisted(ctx, canonical, code, "")
			return res, nil
		}
		if ok {
			return invite.Result{}, invite.ErrEmailTaken
		}
		// Redis has the claim and MongoDB not yet: an earlier attempt
		// timed out before its write landed. Write it now.
	}
	out, err := d.commit.Commit(ctx, invite.Reservation{
		ID: res.ID, Shard: res.Shard, Code: code, Canonical: canonical, Email: addr, ReservedAt: at, HoldID: holdID,
	})
	if err != nil {
		return invite.Result{}, invite.Unavailable(err)
	}
	if out.Outcome == persist.Conflict {
		// MongoDB has the email on another code (Redis had lost the
		// claim); the reconciler gives this reservation's seat back.
		return invite.Result{}, invite.ErrEmailTaken
	}
	if out.Outcome == persist.Refused {
		// MongoDB holds max_uses registrations of the code: Redis
		// admitted past the cap. The reconciler settles the entry.
		return invite.Result{}, invite.ErrFull
	}
	// The mark names this reservation's stream entry, so the reconciler
	// acknowledges it without writing it a second time.
	d.markPersisted(ctx, canonical, code, res.ID)
	return res, nil
}

// Status is Redis' answer: the landing page's view needs no MongoDB.
func (d *MongoAck) Status(ctx context.Context, code string) (invite.Status, error) {
	return d.seats.Status(ctx, code)
}

// markPersisted is best effort: without the mark the next repeat reads
// MongoDB once more.
func (d *MongoAck) markPersisted(ctx context.Context, canonical, code, id string) {
	_ = d.res.MarkPersisted(ctx, canonical, code, id)
}
