// Package invite is invitegate's domain core, the vocabulary every adapter
// speaks (the Redis reservation layer, the MongoDB store, the HTTP API):
// invitations, reservations and the rules for codes; the outcomes, statuses
// and sentinel errors of a signup; and the Reserver contract every
// reservation path keeps. It imports no store.
package invite

import "time"

// MaxUsesLimit is the largest capacity an invitation may have.
const MaxUsesLimit = 1000

// MaxCodeLen is the longest invitation code accepted.
const MaxCodeLen = 64

// Invitation is one invitation code as MongoDB holds it.
type Invitation struct {
	Code      string
	MaxUses   int
	Disabled  bool
	ExpiresAt time.Time // zero: never expires
	// ConfirmWindow, when above zero, makes a signup hold its seat for
	// that long until the email is confirmed (MongoDB's confirm_window_ms,
	// the buckets' cw; see docs/ARCHITECTURE.md, "Confirmation holds").
	// Zero: no confirmation; otherwise ValidConfirmWindow holds.
	ConfirmWindow time.Duration
}

// Expired reports whether the invitation has expired at now.
func (i Invitation) Expired(now time.Time) bool {
	return !i.ExpiresAt.IsZero() && !now.Before(i.ExpiresAt)
}

// Reservation is one signup taken in Redis and waiting to be written to
// MongoDB. ID is the reservation stream's entry ID on Shard.
type Reservation struct {
	ID         string
	Shard      int
	Code       string
	Canonical  string
	Email      string
	ReservedAt time.Time
	// Kind is what the entry records: a registration (the zero value), a
	// hold taken, or a hold that ended unconfirmed.
	Kind EntryKind
	// HoldID names the hold a HoldTaken or HoldEnded entry records, or
	// the hold a Registration confirmed (empty: an instant signup).
	HoldID string
	// Deadline is a HoldTaken entry's deadline.
	Deadline time.Time
}

// EntryKind is what a reservation stream entry records.
type EntryKind int

const (
	// Registration: a seat taken for good (an instant signup, or a hold
	// confirmed: HoldID set).
	Registration EntryKind = iota
	// HoldTaken: a seat held until Deadline for the email to confirm.
	HoldTaken
	// HoldEnded: the hold HoldID passed its deadline unconfirmed; its
	// seat went back. Email is empty.
	HoldEnded
)

// ValidCode reports whether code is a well-formed invitation code:
// 1..64 characters of [A-Za-z0-9_-]. Anything else can never name an
// invitation, so callers answer "not found" without asking a store.
func ValidCode(code string) bool {
	if len(code) == 0 || len(code) > MaxCodeLen {
		return false
	}
	for i := 0; i < len(code); i++ {
		c := code[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// ValidMaxUses reports whether n is an allowed capacity (1..1000).
func ValidMaxUses(n int) bool { return n >= 1 && n <= MaxUsesLimit }

// The bounds of an invitation's confirmation window (ConfirmWindow).
const (
	MinConfirmWindow = time.Second
	MaxConfirmWindow = 7 * 24 * time.Hour
)

// ValidConfirmWindow reports whether d is an allowed confirmation window:
// whole milliseconds (MongoDB and the buckets hold it in ms) from
// MinConfirmWindow to MaxConfirmWindow. Zero, which means no window, is
// not one: callers accept it separately.
func ValidConfirmWindow(d time.Duration) bool {
	return d >= MinConfirmWindow && d <= MaxConfirmWindow && d%time.Millisecond == 0
}
