package reserve

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/invite"
)

// Holds: on a code whose buckets carry a confirmation window (field cw,
// milliseconds), reserve.lua takes the seat as a hold, claim
// "h|<code>|<deadline ms>|<hold id>|<epoch>", indexed by deadline in the
// shard's sorted set {ns:s}:hx, with a stream entry carrying field h (the
// deadline). Confirm turns it into a registration (claim "<code>" and an
// entry with field hc, the hold's ID); Expire gives the seat back once the
// deadline passed (an entry with field x). Deadlines are read from Redis'
// clock in every script, so a confirmation and an expiry never both win.

// Expire gives back the seat of canonical's hold on code on shard s when
// it is past its deadline, exactly once across callers: expired is false
// when there was nothing to do (confirmed, already expired, not yet due).
// It returns an error wrapping invite.ErrUnavailable.
func (r *Reserver) Expire(ctx context.Context, s int, canonical, code string) (expired bool, err error) {
	keys := []string{r.keys.claim(s, canonical), r.keys.bucket(s, code), r.keys.holds(s), r.keys.stream(s)}
	v, err := expireScript.Run(ctx, r.rdb, keys, canonical, code).Slice()
	if err != nil {
		return false, invite.Unavailable(err)
	}
	n, _, err := decodePair(v)
	if n == 1 {
		r.metrics.HoldsExpired.Inc()
	}
	return n == 1, err
}

// DueHold is one hold past its deadline, from ExpireDue's index read.
type DueHold struct {
	Canonical, Code string
}

// ExpireDue expires up to limit holds of shard s whose deadline has
// passed by Redis' clock, the clock that set it (duehold.lua reads the
// index; expire.lua checks each against its claim), and returns how many
// it expired. Several replicas may run it on the same shard at once: each
// hold's seat comes back once.
func (r *Reserver) ExpireDue(ctx context.Context, s int, limit int) (int, error) {
	members, err := dueHoldScript.Run(ctx, r.rdb, []string{r.keys.holds(s)}, limit).StringSlice()
	if err != nil {
		return 0, invite.Unavailable(err)
	}
	n := 0
	for _, canonical := range members {
		owner, err := r.rdb.Get(ctx, r.keys.claim(s, canonical)).Result()
		code, ok := holdCode(owner)
		if err != nil || !ok {
			code = "" // gone or not a hold: expire.lua drops the index entry
		}
		done, err := r.Expire(ctx, s, canonical, code)
		if err != nil {
			return n, err
		}
		if done {
			n++
		}
	}
	return n, nil
}

// holdCode returns the code of a hold claim "h|<code>|...".
func holdCode(claim string) (string, bool) {
	if len(claim) < 3 || claim[:2] != "h|" {
		return "", false
	}
	for i := 2; i < len(claim); i++ {
		if claim[i] == '|' {
			return claim[2:i], i > 2
		}
	}
	return "", false
}

// restampHolds counts code's live holds on every shard and moves them into
// epoch (restamp.lua), for a rebuild: the code is frozen, so no hold is
// taken or confirmed meanwhile; one expiring meanwhile stays counted (a
// seat unused until the next reseed, never one too many).
func (r *Reserver) restampHolds(ctx context.Context, code, epoch, owner string) (int, error) {
	live := 0
	for s := 0; s < r.shards; s++ {
		// Every indexed hold: restamp.lua decides by Redis' clock which
		// still live (this process's clock may differ).
		members, err := r.rdb.ZRangeByScore(ctx, r.keys.holds(s), &redis.ZRangeBy{Min: "-inf", Max: "+inf"}).Result()
		if err != nil {
			return 0, invite.Unavailable(err)
		}
		for _, canonical := range members {
			n, err := restampScript.Run(ctx, r.rdb, []string{r.keys.claim(s, canonical), r.keys.bucket(s, code)}, code, epoch, owner).Int()
			if err != nil {
				return 0, invite.Unavailable(err)
			}
			if n < 0 {
				return 0, ErrFreezeLost
			}
			live += n
		}
	}
	return live, nil
}

// ConfirmOutcome is what Confirm did.
type ConfirmOutcome int

const (
	// Confirmed: the hold is a registration now; ID is its stream entry.
	Confirmed ConfirmOutcome = 1 + iota
	// AlreadyConfirmed: the email holds the code (a repeat).
	AlreadyConfirmed
	// HoldExpired: the deadline passed; the seat goes back.
	HoldExpired
	// NoHold: no such hold (another code's, another hold, swept, never).
	NoHold
)

// Confirm turns canonical's hold holdID on code into a registration. email
// is the address as entered, for the registration. With AckReplicas, a
// Confirmed or AlreadyConfirmed answer waits until the replicas hold it
// (ErrNotReplicated otherwise: a retry answers AlreadyConfirmed). It
// returns invite.ErrFrozen while a reseed holds the code, ErrHistory while
// the shard's Redis changed history and is not yet recovered, ErrNotSeeded
// on a shard not seeded (seed, then call again: workflow.Signups does), or
// an error wrapping invite.ErrUnavailable.
func (r *Reserver) Confirm(ctx context.Context, code, canonical, holdID, email string) (ConfirmOutcome, string, error) {
	s := shardOf(canonical, r.shards)
	keys := []string{r.keys.claim(s, canonical), r.keys.holds(s), r.keys.stream(s), r.keys.bucket(s, code), r.keys.history(s), r.keys.sentinel(s)}
	ack := "0"
	if r.cfg.AckReplicas > 0 {
		ack = "1"
	}
	args := []any{code, canonical, holdID, email, r.cfg.Now().UnixMilli(), ack}
	var v []any
	acked := int64(-1)
	var err error
	if r.cfg.AckReplicas > 0 {
		node, nerr := r.node(ctx, keys[3])
		if nerr != nil {
			return 0, "", nerr
		}
		v, acked, err = evalWait(ctx, node, confirmScript, keys, args, r.cfg.AckReplicas, r.cfg.AckTimeout)
		if err != nil {
			r.movedReload(ctx, err)
		}
	} else {
		v, err = confirmScript.Run(ctx, r.rdb, keys, args...).Slice()
	}
	if err != nil {
		return 0, "", invite.Unavailable(err)
	}
	n, id, err := decodePair(v)
	if err != nil {
		return 0, "", err
	}
	out := ConfirmOutcome(n)
	switch out {
	case Confirmed, AlreadyConfirmed:
		if out == Confirmed {
			// Counted where Redis confirmed it, whatever WAIT then said:
			// a retry after ErrNotReplicated is AlreadyConfirmed.
			r.metrics.HoldsConfirmed.Inc()
			if at, ok := entryTime(holdID); ok {
				r.metrics.ConfirmSeconds.Observe(max(r.cfg.Now().Sub(at).Seconds(), 0))
			}
		}
		if err := r.acked(acked, true); err != nil {
			return 0, "", err
		}
	case HoldExpired, NoHold:
	case confirmFrozen:
		return 0, "", invite.ErrFrozen
	case confirmStale:
		return 0, "", ErrHistory
	case confirmUnseeded:
		return 0, "", ErrNotSeeded
	default:
		return 0, "", fmt.Errorf("reserve: unexpected confirm status %d", n)
	}
	return out, id, nil
}

// confirm.lua's answers while a reseed freezes the code, and while the
// shard's Redis is not the history it was seeded in.
const (
	confirmFrozen   ConfirmOutcome = 5
	confirmStale    ConfirmOutcome = 6
	confirmUnseeded ConfirmOutcome = 7
)

// entryTime is when the stream entry id was appended (its milliseconds
// part, by Redis' clock).
func entryTime(id string) (time.Time, bool) {
	ms, _, ok := strings.Cut(id, "-")
	n, err := strconv.ParseInt(ms, 10, 64)
	if !ok || err != nil {
		return time.Time{}, false
	}
	return time.UnixMilli(n), true
}

// HoldRecord is a live hold as MongoDB recorded it.
type HoldRecord struct {
	Canonical, Code, HoldID string
	Deadline                time.Time
}

// RestoreHolds writes back the claims (and index entries) of holds Redis
// lost, in epoch (a seeding's buckets'; a reseed's rebuild moves them into
// its own), leaving every email that has a claim as it is. It returns how
// many it restored.
func (r *Reserver) RestoreHolds(ctx context.Context, holds []HoldRecord, epoch string) (int, error) {
	n := 0
	for _, h := range holds {
		if !invite.ValidCode(h.Code) || h.HoldID == "" || strings.Contains(h.HoldID, "|") {
			continue // not written by this service; never a claim
		}
		s := shardOf(h.Canonical, r.shards)
		dl := strconv.FormatInt(h.Deadline.UnixMilli(), 10)
		claim := "h|" + h.Code + "|" + dl + "|" + h.HoldID + "|" + epoch
		done, err := restoreScript.Run(ctx, r.rdb, []string{r.keys.claim(s, h.Canonical), r.keys.holds(s)}, claim, dl, h.Canonical).Int()
		if err != nil {
			return n, invite.Unavailable(err)
		}
		n += done
	}
	return n, nil
}
