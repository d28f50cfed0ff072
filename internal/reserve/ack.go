package reserve

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/invite"
)

// INVITEGATE_ACK=replica (Config.AckReplicas): what is WAITed for and why
// is in docs/ARCHITECTURE.md, "Durability".

// ErrNotReplicated means Redis took the signup (or already held it) but
// fewer replicas than Config.AckReplicas confirmed it within
// Config.AckTimeout. The seat may be taken: a retry answers Existing once
// the replicas hold it.
var ErrNotReplicated = fmt.Errorf("%w: the Redis replicas did not confirm the signup in time", invite.ErrUnavailable)

// ackRecheck is how long, after a WAIT came back short, every call takes
// the confirming path (callAcked); a confirmed WAIT ends it at once.
const ackRecheck = time.Second

// needsAck reports whether the answer to rep acknowledges a signup, which
// must then be on the replicas: a new seat, or a repeat (200) whose claim
// an earlier, unconfirmed attempt may have written. Rejections are not
// acknowledgements and never wait.
func needsAck(rep reply) bool {
	return rep.status == stReserved || rep.status == stExisting || rep.status == stHeld
}

// ackWait is how much longer than without AckReplicas one WAITed call may
// take.
func (r *Reserver) ackWait() time.Duration {
	if r.cfg.AckReplicas > 0 {
		return r.cfg.AckTimeout
	}
	return 0
}

// callAcked runs reserve.lua for a caller that must not acknowledge a
// signup before the replicas hold it.
//
// Alone (no crowd for the pipeliner, p nil) and while the replicas keep
// up, the script and WAIT go out as one pipeline on the node that owns the
// shard: one round trip whatever the answer, WAIT returning at once for a
// rejection when the replicas are in step.
//
// Under a crowd (p set) a WAIT behind every call would hold every
// rejection for the replicas and take the batching away; and after a WAIT
// came back short (the replicas are probably gone) it would hold every
// rejection for the timeout. There the script goes first as without
// acknowledgement (through p when set), and only an answer that
// acknowledges a signup is confirmed: reserve.lua again on the owning
// node, which finds the claim, answers Existing and writes the claim
// again, with WAIT behind it in one pipeline. Rejections cost what they
// cost without ack=replica; a new seat or a repeat costs one more round
// trip.
func (r *Reserver) callAcked(ctx context.Context, in reserveCall, p Submitter) (reply, error) {
	node, err := r.node(ctx, in.bucket)
	if err != nil {
		return reply{}, err
	}
	if p == nil && r.cfg.Now().UnixNano() >= r.ackShortUntil.Load() {
		rep, acked, err := evalReserveWait(ctx, node, in, r.cfg.AckReplicas, r.cfg.AckTimeout)
		if err != nil {
			r.movedReload(ctx, err)
			return reply{}, err
		}
		return rep, r.acked(acked, needsAck(rep))
	}
	first := in
	first.ack = false // the confirming call writes the claim again
	rep, err := evalReserve(ctx, r.rdb, p, first)
	if err != nil || !needsAck(rep) {
		return rep, err
	}
	confirm := in
	confirm.carry, confirm.carryEpoch, confirm.transfer, confirm.markTTL = 0, "", "", 0
	// On an error rep still says what the first call took (call counts a
	// new hold from it); callers look at the error first.
	again, acked, err := evalReserveWait(ctx, node, confirm, r.cfg.AckReplicas, r.cfg.AckTimeout)
	if err != nil {
		r.movedReload(ctx, err)
		return rep, err
	}
	// A hold is confirmed by the same hold again; a seat by Existing.
	if again.status != stExisting && (rep.status != stHeld || again.status != stHeld || again.arg != rep.arg) {
		// The claim changed between the two calls (a give-back pointed it
		// at MongoDB's code, or Redis lost it): nothing to acknowledge.
		return rep, fmt.Errorf("%w: the claim changed before the replicas confirmed it (status %d)", invite.ErrUnavailable, again.status)
	}
	return rep, r.acked(acked, true)
}

// acked records WAIT's answer (-1: not sent) and returns ErrNotReplicated
// if the answer needed the replicas and got too few.
func (r *Reserver) acked(acked int64, needed bool) error {
	switch {
	case acked < 0:
		return nil
	case acked >= int64(r.cfg.AckReplicas):
		r.ackShortUntil.Store(0)
		return nil
	}
	r.ackShortUntil.Store(r.cfg.Now().Add(ackRecheck).UnixNano())
	if !needed {
		return nil
	}
	r.metrics.NotReplicated.Inc()
	return ErrNotReplicated
}

// steal runs steal.lua on bucket. With AckReplicas on a cluster the tokens
// it takes must be on the replicas of bucket's node before they are
// deposited on another node: if that node failed over without the steal,
// the tokens would be back in bucket and on the deposit's shard as well,
// seats created. When WAIT comes back short the taken tokens are not
// deposited but stranded (under-admission until a reseed, never over) and
// the answer is ErrNotReplicated. On one node (or one Sentinel group) the
// steal and the deposit go through one replication stream, and the
// deposit's own WAIT covers both.
func (r *Reserver) steal(ctx context.Context, bucket, history string) (taken int, epoch string, err error) {
	cc, ok := r.rdb.(*redis.ClusterClient)
	if r.cfg.AckReplicas <= 0 || !ok {
		return evalSteal(ctx, r.rdb, bucket, history)
	}
	node, err := cc.MasterForKey(ctx, bucket)
	if err != nil {
		return 0, "", invite.Unavailable(err)
	}
	taken, epoch, acked, err := evalStealWait(ctx, node, bucket, history, r.cfg.AckReplicas, r.cfg.AckTimeout)
	if err != nil {
		r.movedReload(ctx, err)
		return 0, "", err
	}
	if err := r.acked(acked, taken > 0); err != nil {
		r.log.WithField("bucket", bucket).WithField("tokens", taken).
			Warn("tokens taken for a move were not confirmed by the replicas; they stay unused until a reseed")
		return 0, "", err
	}
	return taken, epoch, nil
}

// node returns the client of the Redis node that owns key: WAIT counts
// what its own connection wrote, so it must run on the node that took the
// write. On a cluster that is the key's master (WAIT has no key for the
// cluster client to route by).
func (r *Reserver) node(ctx context.Context, key string) (*redis.Client, error) {
	switch c := r.rdb.(type) {
	case *redis.Client:
		return c, nil
	case *redis.ClusterClient:
		n, err := c.MasterForKey(ctx, key)
		if err != nil {
			return nil, invite.Unavailable(err)
		}
		return n, nil
	}
	return nil, fmt.Errorf("reserve: AckReplicas needs a *redis.Client or *redis.ClusterClient, not %T", r.rdb)
}

// movedReload refreshes a cluster client's slot map after a node answered
// MOVED or ASK: calls made on a node's own client are not redirected, so
// the next attempt (the client's retry) must find the new owner.
func (r *Reserver) movedReload(ctx context.Context, err error) {
	cc, ok := r.rdb.(*redis.ClusterClient)
	if ok && (redis.HasErrorPrefix(err, "MOVED") || redis.HasErrorPrefix(err, "ASK")) {
		cc.ReloadState(ctx)
	}
}
