// Package reserve owns invitegate's hot path: the Redis reservation layer.
// A code's capacity is split over K token buckets; one reserve.lua call on
// the email's shard takes a seat atomically, and an empty shard moves
// tokens from the others (docs/ARCHITECTURE.md, "A signup"). It holds
// the Redis steps of the workflows in internal/workflow (seeding, reseed,
// invitation changes), which read MongoDB; internal/persist drains the
// streams back into MongoDB.
package reserve

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/invitegate/invitegate/internal/defaults"
	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/logs"
)

// ErrShardMismatch means Redis was seeded for another shard count than
// this process runs with; it needs an operator.
var ErrShardMismatch = fmt.Errorf("%w: redis is seeded for a different shard count", invite.ErrMisconfigured)

// Config tunes a Reserver. Zero values take the defaults noted.
type Config struct {
	// Namespace prefixes every key (default DefaultNamespace). Tests use
	// their own.
	Namespace string
	// Shards is K, fixed per deployment (default 1).
	Shards int
	// SoldOutTTL is how long a shard trusts "every shard was empty" before
	// it looks again (default 2s). Returned tokens clear the mark at once.
	SoldOutTTL time.Duration
	// SweepLease is how long, once a shard's sold-out mark has expired, the
	// one request that sweeps again keeps the others on that shard on the
	// mark's answer instead of sweeping too (default 100ms; negative: no
	// lease, every request sweeps).
	SweepLease time.Duration
	// Pipeline, when set, carries the hot path's script calls: concurrent
	// signups share pipelined round trips instead of one each (see
	// Submitter). Nil: one round trip per call. With AckReplicas the WAIT
	// never rides it (ack.go).
	Pipeline Submitter
	// PipelineAbove is how many of this Reserver's calls must be waiting
	// on Redis before a new one takes the pipeline (default 4; negative:
	// always). Below it a call goes out on its own: batching only pays
	// under a crowd, and at moderate load its hand-offs lengthen the
	// latency tail.
	PipelineAbove int
	// AckReplicas, when above 0, is INVITEGATE_ACK=replica: a signup is
	// answered Created or Existing only once Redis' WAIT confirms that this
	// many replicas hold it (docs/ARCHITECTURE.md, "Durability"). The
	// client must then be a *redis.Client (one node, or a failover client
	// following Sentinel's primary) or a *redis.ClusterClient.
	AckReplicas int
	// AckTimeout bounds WAIT (default 500ms). Past it the answer is
	// ErrNotReplicated; the seat may be taken, and a retry answers
	// Existing once the replicas hold it.
	AckTimeout time.Duration
	Now        func() time.Time
	Logger     logrus.FieldLogger
	Metrics    *Metrics
}

// Submitter coalesces concurrent commands into pipelined round trips:
// go-redis' AutoPipeliner from AsyncAutoPipeline, whose flusher sends
// whatever callers queued while the previous batch was on the wire, so a
// lone request goes out at once and a crowd shares one write and one read.
type Submitter interface {
	Submit(ctx context.Context, cmd redis.Cmder) redis.AutoFuture
}

// Reserver runs reservations against Redis. It is safe for concurrent use.
type Reserver struct {
	rdb     Client
	keys    keys
	shards  int
	kArg    string
	cfg     Config
	log     logrus.FieldLogger
	metrics *Metrics

	waiting atomic.Int64 // calls waiting on Redis, for PipelineAbove
	// ackShortUntil (unix ns): a WAIT came back short, so until then calls
	// send WAIT only behind an answer that needs it (ack.go).
	ackShortUntil atomic.Int64
}

// moveTimeout bounds one token move (steal + deposit). A move runs on a
// context detached from the request's: a deadline or a client that hangs
// up between the two calls would otherwise strand the moved tokens.
const moveTimeout = 2 * time.Second

// Client is the part of go-redis the reservation layer uses: the Lua
// scripts (scripts.go) and a few plain commands for seeding, locks, the
// admin tools and the streams. *redis.Client, *redis.ClusterClient and
// redis.UniversalClient satisfy it.
type Client interface {
	redis.Scripter
	Get(ctx context.Context, key string) *redis.StringCmd
	MGet(ctx context.Context, keys ...string) *redis.SliceCmd
	Set(ctx context.Context, key string, value any, expiration time.Duration) *redis.StatusCmd
	SetNX(ctx context.Context, key string, value any, expiration time.Duration) *redis.BoolCmd
	Exists(ctx context.Context, keys ...string) *redis.IntCmd
	HGet(ctx context.Context, key, field string) *redis.StringCmd
	ZRangeByScore(ctx context.Context, key string, opt *redis.ZRangeBy) *redis.StringSliceCmd
	Pipeline() redis.Pipeliner
	TxPipeline() redis.Pipeliner
	XReadGroup(ctx context.Context, a *redis.XReadGroupArgs) *redis.XStreamSliceCmd
	XAutoClaim(ctx context.Context, a *redis.XAutoClaimArgs) *redis.XAutoClaimCmd
	XClaimJustID(ctx context.Context, a *redis.XClaimArgs) *redis.StringSliceCmd
	XGroupCreateMkStream(ctx context.Context, stream, group, start string) *redis.StatusCmd
	XRangeN(ctx context.Context, stream, start, stop string, count int64) *redis.XMessageSliceCmd
	XLen(ctx context.Context, stream string) *redis.IntCmd
}

var (
	_ Client = (*redis.Client)(nil)
	_ Client = (*redis.ClusterClient)(nil)
	_ Client = (redis.UniversalClient)(nil)
)

// New returns a Reserver over rdb.
func New(rdb Client, cfg Config) *Reserver {
	cfg.Namespace = cmp.Or(cfg.Namespace, DefaultNamespace)
	defaults.Positive(&cfg.Shards, 1)
	defaults.Positive(&cfg.SoldOutTTL, 2*time.Second)
	if cfg.SweepLease == 0 {
		cfg.SweepLease = 100 * time.Millisecond
	}
	if cfg.PipelineAbove == 0 {
		cfg.PipelineAbove = 4
	}
	defaults.Positive(&cfg.AckTimeout, 500*time.Millisecond)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Logger = logs.OrQuiet(cfg.Logger)
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	return &Reserver{
		rdb:     rdb,
		keys:    newKeys(cfg.Namespace, cfg.Shards),
		shards:  cfg.Shards,
		kArg:    strconv.Itoa(cfg.Shards),
		cfg:     cfg,
		log:     cfg.Logger.WithField("component", "reserve"),
		metrics: cfg.Metrics,
	}
}

// Shards returns K.
func (r *Reserver) Shards() int { return r.shards }

// Reserve takes one seat of code for a. It returns invite.Created or
// invite.Existing, or one of invite.ErrUnknownCode (an invalid code),
// invite.ErrEmailTaken, invite.ErrFull, invite.ErrDisabled,
// invite.ErrExpired, invite.ErrFrozen, ErrShardMismatch, ErrNoBucket or
// ErrNotSeeded (seed, then call again: workflow.Signups does), ErrHistory
// (recover from MongoDB, then call again: workflow.Failover does), or an
// error wrapping invite.ErrUnavailable.
func (r *Reserver) Reserve(ctx context.Context, code string, a email.Address) (invite.Result, error) {
	if !invite.ValidCode(code) {
		return invite.Result{}, invite.ErrUnknownCode
	}
	s := shardOf(a.Canonical, r.shards)
	rep, err := r.call(ctx, s, code, a, 0, "", 0)
	if err == nil && rep.status == stHoldDue {
		// The email's hold is past its deadline and not yet swept: give
		// its seat back (once, whoever does it), then ask again.
		if _, err = r.Expire(ctx, s, a.Canonical, rep.arg); err == nil {
			rep, err = r.call(ctx, s, code, a, 0, "", 0)
		}
	}
	if err != nil {
		return invite.Result{}, err
	}
	switch rep.status {
	case stEmpty:
		return r.sweep(ctx, s, code, a)
	case stNoBucket:
		return invite.Result{}, ErrNoBucket
	case stNoSeed:
		return invite.Result{}, ErrNotSeeded
	}
	return r.result(s, rep)
}

// sweep moves tokens from other shards to s, starting at a random shard so
// concurrent sweeps spread out, until a reservation goes through or every
// shard is empty; then it marks s sold out. The sold-out mark and the
// sweep lease are in docs/ARCHITECTURE.md, "A signup".
func (r *Reserver) sweep(ctx context.Context, s int, code string, a email.Address) (invite.Result, error) {
	r.metrics.Sweeps.Inc()
	if r.shards > 1 {
		start := rand.IntN(r.shards - 1)
		for i := 0; i < r.shards-1; i++ {
			if err := ctx.Err(); err != nil {
				return invite.Result{}, invite.Unavailable(err) // no new move past the deadline
			}
			j := (s + 1 + (start+i)%(r.shards-1)) % r.shards
			rep, moved, err := r.move(ctx, j, s, code, a)
			if err != nil {
				return invite.Result{}, err
			}
			if moved && rep.status != stEmpty {
				return r.result(s, rep)
			}
		}
	}
	rep, err := r.call(ctx, s, code, a, 0, "", r.cfg.SoldOutTTL.Milliseconds())
	if err != nil {
		return invite.Result{}, err
	}
	return r.result(s, rep)
}

func (r *Reserver) result(s int, rep reply) (invite.Result, error) {
	switch rep.status {
	case stReserved:
		return invite.Result{Outcome: invite.Created, Shard: s, ID: rep.arg}, nil
	case stExisting:
		return invite.Result{Outcome: invite.Existing, Shard: s}, nil
	case stHeld:
		ms, err := strconv.ParseInt(rep.arg2, 10, 64)
		if err != nil {
			return invite.Result{}, fmt.Errorf("reserve: hold deadline %q: %w", rep.arg2, err)
		}
		out := invite.Held
		if rep.again {
			out = invite.HeldAgain
		}
		return invite.Result{Outcome: out, Shard: s, ID: rep.arg, Deadline: time.UnixMilli(ms).UTC()}, nil
	case stHoldDue:
		// Expired once above; a second due hold means Redis' clock jumped.
		return invite.Result{}, fmt.Errorf("%w: a hold past its deadline could not be expired", invite.ErrUnavailable)
	case stTaken:
		return invite.Result{}, invite.ErrEmailTaken
	case stSoldOut:
		return invite.Result{}, invite.ErrFull
	case stClosed:
		if rep.arg == "expired" {
			return invite.Result{}, invite.ErrExpired
		}
		return invite.Result{}, invite.ErrDisabled
	case stMismatch:
		r.log.WithField("redis_shards", rep.arg).WithField("shards", r.shards).Error("redis was seeded for another shard count")
		return invite.Result{}, ErrShardMismatch
	case stNoBucket:
		// The bucket vanished between two calls of one request (a sweep's):
		// Redis lost data. Only a request's first call seeds and retries.
		return invite.Result{}, fmt.Errorf("%w: bucket disappeared", invite.ErrUnavailable)
	case stNoSeed:
		return invite.Result{}, fmt.Errorf("%w: shard not seeded", invite.ErrUnavailable)
	case stEmpty:
		return invite.Result{}, invite.ErrFull
	case stFrozen:
		return invite.Result{}, invite.ErrFrozen
	case stHistory:
		return invite.Result{}, ErrHistory
	}
	return invite.Result{}, fmt.Errorf("reserve: unexpected script status %d", rep.status)
}

// move steals tokens from shard from and deposits them on shard to with
// this signup's reserve.lua call. Both calls run on a context detached from
// ctx (bounded by moveTimeout), so only a crash or a Redis error between
// them can strand the tokens (under-admission until a reseed), never the
// request's deadline or its client hanging up. moved is false when shard
// from had nothing to give.
func (r *Reserver) move(ctx context.Context, from, to int, code string, a email.Address) (rep reply, moved bool, err error) {
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), moveTimeout+2*r.ackWait()) // a steal and a deposit may each WAIT
	defer cancel()
	taken, epoch, err := r.steal(mctx, r.keys.bucket(from, code), r.keys.history(from))
	if err != nil || taken == 0 {
		return reply{}, false, err
	}
	if taken < 0 {
		return reply{}, false, ErrHistory
	}
	r.metrics.TokensMoved.Add(float64(taken))
	rep, err = r.call(mctx, to, code, a, taken, epoch, 0)
	return rep, true, err
}

// call runs reserve.lua on shard s; carry tokens of epoch carryEpoch come
// from other shards.
func (r *Reserver) call(ctx context.Context, s int, code string, a email.Address, carry int, carryEpoch string, markTTL int64) (reply, error) {
	in := reserveCall{
		sentinel: r.keys.sentinel(s), bucket: r.keys.bucket(s, code), claim: r.keys.claim(s, a.Canonical), stream: r.keys.stream(s),
		history: r.keys.history(s), holds: r.keys.holds(s),
		code: code, canonical: a.Canonical, email: a.Normalized, now: r.cfg.Now().UnixMilli(),
		carry: carry, carryEpoch: carryEpoch, markTTL: markTTL, shards: r.kArg,
		sweepLease: max(r.cfg.SweepLease.Milliseconds(), 0),
		ack:        r.cfg.AckReplicas > 0,
	}
	if carry > 0 {
		// Names this transfer, so that running the call twice adds the
		// tokens once.
		in.transfer = r.keys.transfer(s, strconv.FormatUint(rand.Uint64(), 36))
	}
	// Calls without carried tokens (a signup's first, and a sweep's final
	// one that sets the sold-out mark) ride the pipeline; a deposit of
	// carried tokens goes out on its own. Any call may be sent twice by the
	// client after a lost reply, which reserve.lua makes harmless: the
	// email's claim stops a second seat, the transfer mark a second deposit
	// of carried tokens, and a resend of the call that took a sweep lease
	// is answered as the first run was.
	n := r.waiting.Add(1)
	defer r.waiting.Add(-1)
	var p Submitter
	if carry == 0 && r.cfg.Pipeline != nil && (r.cfg.PipelineAbove <= 0 || n > int64(r.cfg.PipelineAbove)) {
		p = r.cfg.Pipeline
	}
	var rep reply
	var err error
	if in.ack {
		rep, err = r.callAcked(ctx, in, p)
	} else {
		rep, err = evalReserve(ctx, r.rdb, p, in)
	}
	if rep.status == stHeld && !rep.again {
		// Counted where Redis took it, whatever WAIT then said: a retry
		// after ErrNotReplicated gets the same hold again.
		r.metrics.HoldsCreated.Inc()
	}
	return rep, err
}

var _ invite.Reserver = (*Reserver)(nil)
