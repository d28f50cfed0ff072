package persist

import (
	"context"
	"strconv"
	"sync"
	"time"

	backoffv5 "github.com/cenkalti/backoff/v5"
	"github.com/sirupsen/logrus"

	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/logs"
)

// Queue is the reservation streams as the reconciler sees them; implemented
// by *reserve.Reserver.
type Queue interface {
	Shards() int
	Read(ctx context.Context, shard int, consumer string, count int, block time.Duration) ([]invite.Reservation, error)
	Claim(ctx context.Context, shard int, consumer string, minIdle time.Duration, count int) ([]invite.Reservation, error)
	Ack(ctx context.Context, shard int, ids ...string) error
	// Keep renews consumer's hold on reservations it read, so that no
	// other consumer takes them over while it is still retrying them.
	Keep(ctx context.Context, shard int, consumer string, ids ...string) error
	// ReplicationID names the history of the Redis holding shard ("" when
	// unknown), and Present returns which of ids shard's stream still
	// holds (ReconcilerConfig.DropVanished).
	ReplicationID(ctx context.Context, shard int) (string, error)
	Present(ctx context.Context, shard int, ids ...string) ([]string, error)
	GiveBack(ctx context.Context, res invite.Reservation, owner string) (bool, error)
	Backlog(ctx context.Context, shard int) (n int64, oldest time.Time, err error)
	// Committed reports which of shard's reservations MongoDB already
	// holds, written by the INVITEGATE_ACK=mongo group commit.
	Committed(ctx context.Context, shard int, rs []invite.Reservation) ([]bool, error)
}

// ReconcilerConfig tunes a Reconciler. Zero values take the defaults noted.
type ReconcilerConfig struct {
	// Consumer names this process in the consumer group; unique per process.
	Consumer string
	// DropVanished: when the shard's Redis changed history (replication
	// ID) between reading a batch and writing it, the entries its stream
	// no longer holds are not written. With INVITEGATE_ACK=replica or mongo
	// such an entry was never acknowledged (a failover promoted a replica
	// that never received it, so its signup was answered 503), and writing
	// it after the failover recovery counted MongoDB would take a seat that
	// Redis hands out again, to a signup it then answers 201. With
	// INVITEGATE_ACK=redis it may have been answered 201, so it is written
	// (false). Costs one Redis call per read and per batch written.
	DropVanished bool
	// Batch is the most reservations one bulk insert carries (default 500).
	Batch int
	// Block is how long one read waits for new reservations (default
	// 250ms); it also bounds how long shutdown waits for an idle worker.
	Block time.Duration
	// ClaimIdle is how long a reservation read by another consumer may stay
	// unacknowledged before this one takes it over (default 15s).
	ClaimIdle time.Duration
	// WriteTimeout bounds one bulk insert and its acknowledgement (default 10s).
	WriteTimeout time.Duration
	// HoldFor is how long a worker keeps renewing its claim on a batch
	// once its attempts stop making progress (default 2 × ClaimIdle); after
	// that another consumer may take the batch over, so a replica cut off
	// from MongoDB holds nothing for good. Waiting for a write slot and
	// writing do not count.
	HoldFor time.Duration
	// Writers bounds the bulk inserts this process has in flight at once,
	// whatever the number of shards (default 4): a MongoDB that falls
	// behind gets a bounded queue, not one insert per shard.
	Writers int
	// DrainTimeout bounds the final drain after Run's context ends: the
	// worker keeps writing what is already in its stream, without waiting
	// for more, until the stream is empty or this passes (default 5s).
	DrainTimeout time.Duration
	// Defer (INVITEGATE_ACK=mongo) is how long a reservation is left to the
	// group commit that its signup waits on (the caller's wait plus the
	// commit's own write timeout): the reconciler acknowledges what that
	// commit wrote as soon as it sees its mark, and writes only the rest,
	// once they are Defer old, instead of inserting the same registrations
	// alongside it (default 0: write everything at once; at most
	// ClaimIdle/2, so the batch is not taken over meanwhile).
	Defer time.Duration
	// StatsEvery is how often backlog and lag are measured (default 1s).
	StatsEvery time.Duration
	Now        func() time.Time
	Logger     logrus.FieldLogger
	Metrics    *Metrics
}

// Reconciler moves reservations from the Redis streams into MongoDB: one
// worker per shard reads its stream through the consumer group, writes a
// batch, and acknowledges exactly what MongoDB acknowledged.
type Reconciler struct {
	q      Queue
	st     persister
	cfg    ReconcilerConfig
	log    logrus.FieldLogger
	m      *Metrics
	writes chan struct{} // a slot per bulk insert in flight
}

// persister is what the reconciler needs of a Store.
type persister interface {
	Persist(ctx context.Context, rs []invite.Reservation) ([]Result, error)
}

// NewReconciler returns a Reconciler draining q into st.
func NewReconciler(q Queue, st *Store, cfg ReconcilerConfig) *Reconciler {
	if cfg.Consumer == "" {
		cfg.Consumer = "reconciler"
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.Block <= 0 {
		cfg.Block = 250 * time.Millisecond
	}
	if cfg.ClaimIdle <= 0 {
		cfg.ClaimIdle = 15 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.Writers <= 0 {
		cfg.Writers = 4
	}
	if cfg.HoldFor <= 0 {
		cfg.HoldFor = 2 * cfg.ClaimIdle
	}
	deferWanted := cfg.Defer
	cfg.Defer = min(max(cfg.Defer, 0), cfg.ClaimIdle/2)
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 5 * time.Second
	}
	if cfg.StatsEvery <= 0 {
		cfg.StatsEvery = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Logger = logs.OrQuiet(cfg.Logger)
	if deferWanted > cfg.Defer {
		cfg.Logger.WithFields(logrus.Fields{"wanted": deferWanted.String(), "kept": cfg.Defer.String()}).
			Warn("the reconciler leaves entries to the group commit for at most half of INVITEGATE_RECONCILER_CLAIM_IDLE: slower commits may be inserted twice (harmless, but it adds to MongoDB's load); lower INVITEGATE_ACK_TIMEOUT or raise the claim idle time")
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	return &Reconciler{q: q, st: st, cfg: cfg, log: cfg.Logger.WithFields(logrus.Fields{"component": "reconciler", "consumer": cfg.Consumer}), m: cfg.Metrics,
		writes: make(chan struct{}, cfg.Writers)}
}

// Run drains every shard until ctx is canceled. On cancellation each
// worker makes one last attempt at the batch it holds (if a write slot is
// free), then writes what is already in its stream until the stream is
// empty or DrainTimeout passes, and Run returns nil. Whatever it could not
// finish stays in Redis for another consumer.
//
// NOTE: consumers are never removed from the group: every process start
// adds one name (XINFO CONSUMERS grows with each deploy). Their pending
// entries are taken over by XAUTOCLAIM; a periodic XGROUP DELCONSUMER of
// consumers idle for a day with nothing pending would tidy the list.
func (rc *Reconciler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for s := 0; s < rc.q.Shards(); s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc.work(ctx, s)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		rc.stats(ctx)
	}()
	wg.Wait()
	return nil
}

func (rc *Reconciler) work(ctx context.Context, shard int) {
	log := rc.log.WithField("shard", shard)
	bo := backoff{}
	lastClaim := time.Time{}
	for ctx.Err() == nil {
		var batch []invite.Reservation
		var err error
		from := rc.history(ctx, shard)
		if now := rc.cfg.Now(); now.Sub(lastClaim) >= rc.cfg.ClaimIdle/2 {
			lastClaim = now
			batch, err = rc.q.Claim(ctx, shard, rc.cfg.Consumer, rc.cfg.ClaimIdle, rc.cfg.Batch)
			if len(batch) > 0 {
				rc.m.Claimed.Add(float64(len(batch)))
				log.WithField("entries", len(batch)).Info("took over reservations left pending by another consumer")
			}
		}
		if err == nil && len(batch) == 0 {
			batch, err = rc.q.Read(ctx, shard, rc.cfg.Consumer, rc.cfg.Batch, rc.cfg.Block)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			rc.m.Errors.WithLabelValues("redis").Inc()
			log.WithError(err).Warn("read reservations")
			bo.wait(ctx)
			continue
		}
		bo.reset()
		if batch = rc.skipCommitted(ctx, log, shard, batch, true); len(batch) > 0 {
			rc.process(ctx, log, shard, batch, from)
		}
	}
	rc.drain(context.WithoutCancel(ctx), log, shard)
}

// drain writes what is already in shard's stream, without blocking for
// more, until it is empty or DrainTimeout passes.
func (rc *Reconciler) drain(ctx context.Context, log logrus.FieldLogger, shard int) {
	ctx, cancel := context.WithTimeout(ctx, rc.cfg.DrainTimeout)
	defer cancel()
	for ctx.Err() == nil {
		from := rc.history(ctx, shard)
		batch, err := rc.q.Read(ctx, shard, rc.cfg.Consumer, rc.cfg.Batch, -1)
		if err != nil || len(batch) == 0 {
			return
		}
		if batch = rc.skipCommitted(ctx, log, shard, batch, false); len(batch) > 0 {
			rc.process(ctx, log, shard, batch, from)
		}
	}
}

// skipCommitted acknowledges the reservations of batch that the
// INVITEGATE_ACK=mongo group commit already wrote and returns the others.
// With wait, it gives the others until they are Defer old (the commit
// their signups wait on is usually under way), looking at the marks again
// at growing intervals, and returns what is still unwritten then. Without
// Defer it returns batch as it is; when Redis cannot say, it returns what
// it has not settled: writing twice is harmless.
func (rc *Reconciler) skipCommitted(ctx context.Context, log logrus.FieldLogger, shard int, batch []invite.Reservation, wait bool) []invite.Reservation {
	if rc.cfg.Defer <= 0 || len(batch) == 0 {
		return batch
	}
	rest := rc.ackCommitted(ctx, log, shard, batch)
	if !wait {
		return rest
	}
	step := 20 * time.Millisecond
	start := time.Now() // monotonic: never wait longer than Defer after reading
	for len(rest) > 0 && ctx.Err() == nil {
		youngest := rest[0].ReservedAt
		for _, r := range rest[1:] {
			if r.ReservedAt.After(youngest) {
				youngest = r.ReservedAt
			}
		}
		d := min(youngest.Add(rc.cfg.Defer).Sub(rc.cfg.Now()), rc.cfg.Defer-time.Since(start))
		if d <= 0 {
			break
		}
		t := time.NewTimer(min(d, step, rc.cfg.Defer))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		step = min(2*step, time.Second)
		rest = rc.ackCommitted(context.WithoutCancel(ctx), log, shard, rest)
	}
	return rest
}

// ackCommitted acknowledges the reservations of batch MongoDB already holds
// from the group commit and returns the others.
func (rc *Reconciler) ackCommitted(ctx context.Context, log logrus.FieldLogger, shard int, batch []invite.Reservation) []invite.Reservation {
	ctx, cancel := context.WithTimeout(ctx, rc.cfg.WriteTimeout)
	defer cancel()
	done, err := rc.q.Committed(ctx, shard, batch)
	if err != nil {
		rc.m.Errors.WithLabelValues("redis").Inc()
		log.WithError(err).Warn("read the group commit's marks; writing the batch")
		return batch
	}
	var ids []string
	rest := batch[:0:0]
	for i, r := range batch {
		if done[i] {
			ids = append(ids, r.ID)
		} else {
			rest = append(rest, r)
		}
	}
	if len(ids) == 0 {
		return batch
	}
	if err := rc.q.Ack(ctx, shard, ids...); err != nil {
		rc.m.Errors.WithLabelValues("redis").Inc()
		log.WithError(err).Warn("acknowledge reservations")
		return batch
	}
	rc.m.Rows.WithLabelValues("committed").Add(float64(len(ids)))
	return rest
}

// process writes batch until every reservation is settled or ctx is
// canceled; on cancellation it makes one last attempt if a write slot is
// free, and what it leaves stays pending for another consumer. While it
// holds the batch it renews its claim every ClaimIdle/3 (queued for a write
// slot and writing included), and once attempts stop making progress, for
// up to HoldFor more: a slow MongoDB must not make another consumer take
// the batch over and write it alongside, but a worker that cannot write at
// all must let go.
// history returns shard's replication ID with DropVanished ("" otherwise,
// or when Redis cannot say: then nothing is dropped).
func (rc *Reconciler) history(ctx context.Context, shard int) string {
	if !rc.cfg.DropVanished {
		return ""
	}
	id, err := rc.q.ReplicationID(ctx, shard)
	if err != nil {
		return ""
	}
	return id
}

// process writes batch, read from shard's Redis in history from, until
// every entry is settled or parked.
func (rc *Reconciler) process(ctx context.Context, log logrus.FieldLogger, shard int, batch []invite.Reservation, from string) {
	var mu sync.Mutex
	held := batch
	var failingSince time.Time // zero while attempts make progress
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(rc.cfg.ClaimIdle / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			mu.Lock()
			ids := make([]string, len(held))
			for i, r := range held {
				ids[i] = r.ID
			}
			holding := failingSince.IsZero() || rc.cfg.Now().Sub(failingSince) < rc.cfg.HoldFor
			mu.Unlock()
			if !holding {
				continue
			}
			if err := rc.q.Keep(context.WithoutCancel(ctx), shard, rc.cfg.Consumer, ids...); err != nil {
				rc.m.Errors.WithLabelValues("redis").Inc()
				log.WithError(err).Warn("renew the claim on reservations being written")
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	bo := backoff{}
	for len(batch) > 0 {
		left := rc.attempt(ctx, log, shard, batch, from)
		mu.Lock()
		switch {
		case len(left) < len(batch):
			failingSince = time.Time{}
		case failingSince.IsZero():
			failingSince = rc.cfg.Now()
		}
		held = left
		mu.Unlock()
		batch = left
		if len(batch) == 0 || ctx.Err() != nil {
			return
		}
		bo.wait(ctx)
	}
}

// attempt persists batch once and acknowledges what is settled; it returns
// what must be retried.
func (rc *Reconciler) attempt(ctx context.Context, log logrus.FieldLogger, shard int, batch []invite.Reservation, from string) []invite.Reservation {
	// A write slot; after cancellation only a free one, so shutdown is not
	// held behind other workers' writes (what is left stays pending and is
	// taken over).
	select {
	case rc.writes <- struct{}{}:
	default:
		select {
		case rc.writes <- struct{}{}:
		case <-ctx.Done():
			return batch
		}
	}
	defer func() { <-rc.writes }()
	start := time.Now()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rc.cfg.WriteTimeout)
	defer cancel()

	valid := batch[:0:0]
	var done []string
	for _, r := range batch {
		if r.Code == "" {
			rc.m.Rows.WithLabelValues("malformed").Inc()
			log.WithField("id", r.ID).Error("dropping a stream entry that is not a reservation")
			done = append(done, r.ID)
			continue
		}
		valid = append(valid, r)
	}
	if from != "" && len(valid) > 0 {
		var err error
		if valid, err = rc.dropVanished(wctx, log, shard, valid, from); err != nil {
			rc.m.Errors.WithLabelValues("redis").Inc()
			log.WithError(err).Warn("check reservations against the stream; will retry")
			if len(done) > 0 {
				_ = rc.q.Ack(wctx, shard, done...)
			}
			return valid
		}
	}
	results, err := rc.st.Persist(wctx, valid)
	if err != nil {
		rc.m.Errors.WithLabelValues("mongo").Inc()
		log.WithError(err).WithField("entries", len(valid)).Warn("write registrations; will retry")
		if len(done) > 0 {
			_ = rc.q.Ack(wctx, shard, done...)
		}
		return valid
	}
	var retry []invite.Reservation
	for i, res := range results {
		r := valid[i]
		switch res.Outcome {
		case Written:
			rc.m.Rows.WithLabelValues("written").Inc()
			rc.m.Persisted.Observe(rc.cfg.Now().Sub(r.ReservedAt).Seconds())
			done = append(done, r.ID)
		case AlreadyWritten:
			rc.m.Rows.WithLabelValues("duplicate").Inc()
			done = append(done, r.ID)
		case Conflict:
			if _, err := rc.q.GiveBack(wctx, r, res.Owner); err != nil {
				rc.m.Errors.WithLabelValues("redis").Inc()
				log.WithError(err).Warn("give back token; will retry")
				retry = append(retry, r)
				continue
			}
			rc.m.Rows.WithLabelValues("conflict").Inc()
			log.WithFields(logrus.Fields{"code": r.Code, "owner": res.Owner}).Warn("mongodb refused a reservation: the email belongs to another code; token given back")
			done = append(done, r.ID)
		case Refused:
			// MongoDB holds max_uses registrations of the code: Redis
			// admitted past the cap (a stale replica promoted, an old AOF,
			// a mistake). Not written, no mail; the entry is settled.
			rc.m.Rows.WithLabelValues("refused").Inc()
			log.WithFields(logrus.Fields{"code": r.Code, "email": email.Mask(r.Email)}).Error("mongodb refused a reservation: every seat of the code is taken")
			done = append(done, r.ID)
		default:
			if res.NoInvitation {
				// Parked: left pending, not retried in this loop, so the
				// shard goes on; taken over again after ClaimIdle.
				rc.m.Rows.WithLabelValues("no_invitation").Inc()
				continue
			}
			retry = append(retry, r)
		}
	}
	if err := rc.q.Ack(wctx, shard, done...); err != nil {
		// Unacknowledged entries come back as duplicates: harmless.
		rc.m.Errors.WithLabelValues("redis").Inc()
		log.WithError(err).Warn("acknowledge reservations")
	}
	rc.m.Batches.Inc()
	rc.m.BatchSeconds.Observe(time.Since(start).Seconds())
	if len(retry) > 0 {
		rc.m.Errors.WithLabelValues("mongo").Inc()
	}
	return retry
}

// dropVanished returns the reservations of batch to write: all of it while
// shard's Redis is still in history from, else those its stream still
// holds (DropVanished).
func (rc *Reconciler) dropVanished(ctx context.Context, log logrus.FieldLogger, shard int, batch []invite.Reservation, from string) ([]invite.Reservation, error) {
	now, err := rc.q.ReplicationID(ctx, shard)
	if err != nil {
		return batch, err
	}
	if now == "" || now == from {
		return batch, nil
	}
	ids := make([]string, len(batch))
	for i, r := range batch {
		ids[i] = r.ID
	}
	present, err := rc.q.Present(ctx, shard, ids...)
	if err != nil {
		return batch, err
	}
	if len(present) == len(batch) {
		return batch, nil
	}
	keep := make(map[string]bool, len(present))
	for _, id := range present {
		keep[id] = true
	}
	still := batch[:0:0]
	for _, r := range batch {
		if keep[r.ID] {
			still = append(still, r)
		}
	}
	rc.m.Rows.WithLabelValues("vanished").Add(float64(len(batch) - len(still)))
	log.WithField("entries", len(batch)-len(still)).Warn("reservations a Redis failover lost before they were acknowledged (their signups got 503): not written")
	return still, nil
}

// stats publishes backlog and lag (age of the oldest unpersisted
// reservation) per shard.
func (rc *Reconciler) stats(ctx context.Context) {
	t := time.NewTicker(rc.cfg.StatsEvery)
	defer t.Stop()
	for {
		for s := 0; s < rc.q.Shards(); s++ {
			sctx, cancel := context.WithTimeout(ctx, rc.cfg.StatsEvery)
			n, oldest, err := rc.q.Backlog(sctx, s)
			cancel()
			if err != nil {
				continue
			}
			shard := strconv.Itoa(s)
			rc.m.Backlog.WithLabelValues(shard).Set(float64(n))
			lag := 0.0
			if !oldest.IsZero() {
				lag = max(rc.cfg.Now().Sub(oldest).Seconds(), 0)
			}
			rc.m.Lag.WithLabelValues(shard).Set(lag)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// backoff waits 50ms, doubling to 5s, between failed attempts (no
// jitter); the zero value is ready.
type backoff struct{ exp *backoffv5.ExponentialBackOff }

func (b *backoff) reset() { b.exp = nil }

func (b *backoff) wait(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(b.next()):
	}
}

func (b *backoff) next() time.Duration {
	if b.exp == nil {
		b.exp = &backoffv5.ExponentialBackOff{InitialInterval: 50 * time.Millisecond, Multiplier: 2, MaxInterval: 5 * time.Second}
		b.exp.Reset()
	}
	return b.exp.NextBackOff()
}
