package reserve

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/invite"
)

// Group is the consumer group every reconciler joins on every shard stream.
const Group = "reconciler"

// Read returns up to count new reservations of shard for consumer, waiting
// up to block when there are none. It creates the consumer group when Redis
// has none (first start, or Redis lost its data).
func (r *Reserver) Read(ctx context.Context, shard int, consumer string, count int, block time.Duration) ([]invite.Reservation, error) {
	res, err := r.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group:    Group,
		Consumer: consumer,
		Streams:  []string{r.keys.stream(shard), ">"},
		Count:    int64(count),
		Block:    block,
	}).Result()
	if err != nil {
		return nil, r.readErr(ctx, shard, err)
	}
	var out []invite.Reservation
	for _, st := range res {
		out = r.appendEntries(out, shard, st.Messages)
	}
	return out, nil
}

// Claim takes over up to count reservations of shard that another consumer
// read but did not acknowledge within minIdle (it died or hangs).
func (r *Reserver) Claim(ctx context.Context, shard int, consumer string, minIdle time.Duration, count int) ([]invite.Reservation, error) {
	msgs, _, err := r.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
		Stream:   r.keys.stream(shard),
		Group:    Group,
		Consumer: consumer,
		MinIdle:  minIdle,
		Start:    "0-0",
		Count:    int64(count),
	}).Result()
	if err != nil {
		return nil, r.readErr(ctx, shard, err)
	}
	return r.appendEntries(nil, shard, msgs), nil
}

// readErr is what Read and Claim return for err: nil for redis.Nil
// (nothing to read), the group created for NOGROUP, err wrapped in
// invite.ErrUnavailable otherwise.
func (r *Reserver) readErr(ctx context.Context, shard int, err error) error {
	switch {
	case errors.Is(err, redis.Nil):
		return nil
	case strings.HasPrefix(err.Error(), "NOGROUP"):
		return r.createGroup(ctx, shard)
	}
	return invite.Unavailable(err)
}

func (r *Reserver) createGroup(ctx context.Context, shard int) error {
	err := r.rdb.XGroupCreateMkStream(ctx, r.keys.stream(shard), Group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return invite.Unavailable(err)
	}
	return nil
}

// appendEntries decodes stream messages. A message that cannot be decoded
// (never written by the scripts) is returned with an empty Code so the
// caller can drop it instead of retrying it forever. Entries of holds
// carry field h (taken: its deadline), hc (a registration confirming the
// hold named) or x (ended unconfirmed: the hold named).
func (r *Reserver) appendEntries(out []invite.Reservation, shard int, msgs []redis.XMessage) []invite.Reservation {
	for _, m := range msgs {
		out = append(out, decodeEntry(shard, m))
	}
	return out
}

func decodeEntry(shard int, m redis.XMessage) invite.Reservation {
	res := invite.Reservation{ID: m.ID, Shard: shard}
	c, _ := m.Values["c"].(string)
	k, _ := m.Values["k"].(string)
	if c == "" || k == "" {
		return res
	}
	if x, ok := m.Values["x"].(string); ok {
		if x == "" {
			return res
		}
		res.Code, res.Canonical, res.Kind, res.HoldID = c, k, invite.HoldEnded, x
		return res
	}
	e, _ := m.Values["e"].(string)
	ts, _ := m.Values["t"].(string)
	ms, err := strconv.ParseInt(ts, 10, 64)
	if e == "" || err != nil {
		return res
	}
	kind, holdID := invite.Registration, ""
	var deadline time.Time
	if h, ok := m.Values["h"].(string); ok {
		dl, err := strconv.ParseInt(h, 10, 64)
		if err != nil {
			return res
		}
		kind, holdID, deadline = invite.HoldTaken, m.ID, time.UnixMilli(dl).UTC()
	} else if hc, ok := m.Values["hc"].(string); ok {
		if hc == "" {
			return res
		}
		holdID = hc
	}
	res.Code, res.Canonical, res.Email = c, k, e
	res.ReservedAt = time.UnixMilli(ms).UTC()
	res.Kind, res.HoldID, res.Deadline = kind, holdID, deadline
	return res
}

// Keep renews consumer's claim on reservations of shard it read and has
// not acknowledged (XCLAIM with no minimum idle time), so that another
// consumer's takeover after its idle limit does not start on them. IDs
// that were acknowledged meanwhile are skipped by Redis.
func (r *Reserver) Keep(ctx context.Context, shard int, consumer string, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	err := r.rdb.XClaimJustID(ctx, &redis.XClaimArgs{
		Stream: r.keys.stream(shard), Group: Group, Consumer: consumer, Messages: ids,
	}).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return invite.Unavailable(err)
	}
	return nil
}

// ReplicationID returns the replication ID of the Redis that holds shard
// now ("" when it does not report one): it changes when a failover
// promotes a replica or Redis restarts.
func (r *Reserver) ReplicationID(ctx context.Context, shard int) (string, error) {
	_, cur, err := evalHistory(ctx, r.rdb, r.keys.history(shard))
	return cur, err
}

// Present returns those of ids that shard's stream holds, reading only
// (one pipelined XRANGE per ID). Acknowledged entries are deleted with
// their acknowledgement, so an ID missing here was acknowledged, or
// belongs to a history Redis no longer has. It returns an error wrapping
// invite.ErrUnavailable.
func (r *Reserver) Present(ctx context.Context, shard int, ids ...string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	key := r.keys.stream(shard)
	pipe := r.rdb.Pipeline()
	cmds := make([]*redis.XMessageSliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.XRangeN(ctx, key, id, id, 1)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, invite.Unavailable(err)
	}
	var out []string
	for i, c := range cmds {
		if msgs, err := c.Result(); err == nil && len(msgs) > 0 {
			out = append(out, ids[i])
		}
	}
	return out, nil
}

// Ack acknowledges reservations of shard that MongoDB holds and deletes them
// from the stream, so the stream only ever holds unpersisted reservations.
func (r *Reserver) Ack(ctx context.Context, shard int, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	key := r.keys.stream(shard)
	pipe := r.rdb.TxPipeline()
	pipe.XAck(ctx, key, Group, ids...)
	pipe.XDel(ctx, key, ids...)
	if _, err := pipe.Exec(ctx); err != nil {
		return invite.Unavailable(err)
	}
	return nil
}

// Backlog returns how many reservations of shard wait for MongoDB and when
// the oldest of them was made (zero when none).
func (r *Reserver) Backlog(ctx context.Context, shard int) (n int64, oldest time.Time, err error) {
	key := r.keys.stream(shard)
	n, err = r.rdb.XLen(ctx, key).Result()
	if err != nil {
		return 0, time.Time{}, invite.Unavailable(err)
	}
	if n == 0 {
		return 0, time.Time{}, nil
	}
	msgs, err := r.rdb.XRangeN(ctx, key, "-", "+", 1).Result()
	if err != nil {
		return 0, time.Time{}, invite.Unavailable(err)
	}
	if len(msgs) == 0 {
		return n, time.Time{}, nil
	}
	ms, err := strconv.ParseInt(strings.SplitN(msgs[0].ID, "-", 2)[0], 10, 64)
	if err != nil {
		return n, time.Time{}, fmt.Errorf("reserve: stream id %q: %w", msgs[0].ID, err)
	}
	return n, time.UnixMilli(ms), nil
}

// Pending returns the reservations of code still in the streams (not yet
// acknowledged as written to MongoDB).
func (r *Reserver) Pending(ctx context.Context, code string) ([]invite.Reservation, error) {
	var out []invite.Reservation
	err := r.eachPending(ctx, func(e invite.Reservation) {
		if e.Code == code {
			out = append(out, e)
		}
	})
	return out, err
}

// PendingByCode returns every reservation still in the streams, by code,
// in one pass over them.
func (r *Reserver) PendingByCode(ctx context.Context) (map[string][]invite.Reservation, error) {
	out := map[string][]invite.Reservation{}
	err := r.eachPending(ctx, func(e invite.Reservation) {
		out[e.Code] = append(out[e.Code], e)
	})
	return out, err
}

// OldestPending returns, per code, when its oldest reservation not yet in
// MongoDB was made. It reads the whole backlog: an admin tool's call.
func (r *Reserver) OldestPending(ctx context.Context) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	err := r.eachPending(ctx, func(e invite.Reservation) {
		if e.Code == "" {
			return
		}
		if t, ok := out[e.Code]; !ok || e.ReservedAt.Before(t) {
			out[e.Code] = e.ReservedAt
		}
	})
	return out, err
}

// eachPending calls fn for every entry of every shard's stream.
func (r *Reserver) eachPending(ctx context.Context, fn func(invite.Reservation)) error {
	for s := 0; s < r.shards; s++ {
		start := "-"
		for {
			msgs, err := r.rdb.XRangeN(ctx, r.keys.stream(s), start, "+", 1000).Result()
			if err != nil {
				return invite.Unavailable(err)
			}
			for _, e := range r.appendEntries(nil, s, msgs) {
				fn(e)
			}
			if len(msgs) < 1000 {
				break
			}
			start = "(" + msgs[len(msgs)-1].ID
		}
	}
	return nil
}
