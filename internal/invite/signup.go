package invite

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/invitegate/invitegate/internal/email"
)

// Errors every reservation path returns. The HTTP API maps each to one
// answer; anything else is an internal error.
var (
	ErrUnknownCode = errors.New("invite: unknown invitation code")
	ErrEmailTaken  = errors.New("invite: email already registered with another invitation")
	ErrFull        = errors.New("invite: invitation is full")
	ErrDisabled    = errors.New("invite: invitation is disabled")
	ErrExpired     = errors.New("invite: invitation has expired")
	// ErrUnavailable wraps failures to reach Redis or MongoDB in time; the
	// request may be retried.
	ErrUnavailable = errors.New("invite: reservation store unavailable")
	// ErrFrozen means a reseed of the code is running; retry in a moment.
	ErrFrozen = errors.New("invite: invitation is being reseeded")
	// ErrHoldExpired means a confirmation came after its hold's deadline:
	// the seat went back (or goes back at once); the email may sign up
	// again.
	ErrHoldExpired = errors.New("invite: the confirmation window has passed")
	// ErrMisconfigured means the stores disagree with this process's
	// settings (e.g. Redis seeded for another shard count); it needs an
	// operator.
	ErrMisconfigured = errors.New("invite: stores disagree with this process's settings")
)

// Unavailable wraps err as ErrUnavailable (once): the error every
// reservation path returns when a store it needs does not answer.
func Unavailable(err error) error {
	if errors.Is(err, ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// Outcome is what a successful reservation did.
type Outcome int

const (
	// Created is a new signup.
	Created Outcome = iota + 1
	// Existing means the email already holds this code; nothing changed.
	Existing
	// Held: a code with a confirmation window took a seat for the email
	// as a hold until Deadline; ID names the hold.
	Held
	// HeldAgain: the email's hold on this code lives (a repeat); ID and
	// Deadline are the hold's, unchanged.
	HeldAgain
)

// Result is a successful reservation. Shard is the Redis shard of the
// email and ID the reservation stream entry (empty for Existing); both are
// zero on the MongoDB-only path. Deadline is a hold's (Held, HeldAgain).
type Result struct {
	Outcome  Outcome
	Shard    int
	ID       string
	Deadline time.Time
}

// Status is what a landing page can say about a code before anyone types.
type Status string

// The states of a known code.
const (
	StatusOpen     Status = "open"
	StatusFull     Status = "full"
	StatusDisabled Status = "disabled"
	StatusExpired  Status = "expired"
)

// Reserver is the contract every reservation path keeps (Redis, MongoDB
// alone, and the durable acknowledgement around Redis).
type Reserver interface {
	// Reserve takes one seat of code for a. It returns Created or
	// Existing, or one of ErrUnknownCode, ErrEmailTaken, ErrFull,
	// ErrDisabled, ErrExpired, ErrFrozen, ErrMisconfigured, or an error
	// wrapping ErrUnavailable.
	Reserve(ctx context.Context, code string, a email.Address) (Result, error)
	// Status reports whether code takes signups, or ErrUnknownCode, or an
	// error wrapping ErrUnavailable.
	Status(ctx context.Context, code string) (Status, error)
}
