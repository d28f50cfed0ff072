package workflow

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/sirupsen/logrus"

	"github.com/invitegate/invitegate/internal/defaults"
	"github.com/invitegate/invitegate/internal/logs"
	"github.com/invitegate/invitegate/internal/reserve"
)

// ErrHistoryMoved means Redis changed history again while a failover
// recovery ran; the recovery starts over.
var ErrHistoryMoved = errors.New("redis changed history again during the recovery")

// failoverLock names the lock one recovery holds across replicas; "!" is
// not a valid code character, so it can never be a code's lock.
const failoverLock = "!failover"

// FailoverMetrics are the failover recovery's Prometheus collectors.
type FailoverMetrics struct {
	Recoveries prometheus.Counter
	Recovering prometheus.Gauge
	Duration   prometheus.Gauge
}

// NewFailoverMetrics creates the collectors and registers them with reg
// (nil: not registered).
func NewFailoverMetrics(reg prometheus.Registerer) *FailoverMetrics {
	f := promauto.With(reg)
	return &FailoverMetrics{
		Recoveries: f.NewCounter(prometheus.CounterOpts{Name: "invitegate_redis_failover_recoveries_total", Help: "Recoveries this process ran after Redis changed history (a failover to a replica, a restart): every code rebuilt from MongoDB."}),
		Recovering: f.NewGauge(prometheus.GaugeOpts{Name: "invitegate_redis_failover_recovering", Help: "1 while this process sees a shard whose Redis changed history and is not yet rebuilt: signups needing a seat there get 503."}),
		Duration:   f.NewGauge(prometheus.GaugeOpts{Name: "invitegate_redis_failover_recovery_seconds", Help: "How long the last recovery this process ran took, from its start to the new history recorded."}),
	}
}

// FailoverConfig tunes Failover. Zero values take the defaults noted.
type FailoverConfig struct {
	// CheckEvery is how often Watch compares every shard's recorded Redis
	// history with the current one (default 1s); a signup that meets a
	// changed history wakes it at once.
	CheckEvery time.Duration
	// LockTTL bounds how long a recovery holds the cross-replica lock
	// (default 2m); a replica that dies mid-way delays the next one at
	// most this long, and a recovery still running past it may overlap
	// another, which only repeats work.
	LockTTL time.Duration
	Logger  logrus.FieldLogger
	Metrics *FailoverMetrics
}

// Failover brings Redis back in line with MongoDB after it changed
// history: a replica promoted by a failover, or a restarted Redis. Such a
// Redis may lack the newest seats and claims, so reserve.lua and steal.lua
// hand out nothing on its shards (reserve.ErrHistory, a 503) until every
// code was reseeded (freeze, drain, rebuild: Invitations.Reseed) and the
// new history recorded. One replica recovers at a time (a lock); another
// takes over if it dies.
type Failover struct {
	inv  *Invitations
	res  *reserve.Reserver
	cfg  FailoverConfig
	log  logrus.FieldLogger
	m    *FailoverMetrics
	wake chan struct{}

	mu    sync.Mutex
	state FailoverState
}

// FailoverState is what a process knows of Redis' history, for /readyz.
type FailoverState struct {
	// Stale lists the shards whose Redis changed history and are not yet
	// rebuilt; empty when every shard is in line.
	Stale []int
	// Since is when this process first saw them stale.
	Since time.Time
	// Err is the last recovery attempt's error, if it failed.
	Err error
}

// Reason says why signups wait, or "" when they do not.
func (s FailoverState) Reason() string {
	if len(s.Stale) == 0 {
		return ""
	}
	msg := fmt.Sprintf("redis changed history (a failover or a restart) %s ago; rebuilding %d shard(s) from MongoDB before seats are handed out again",
		time.Since(s.Since).Round(time.Millisecond), len(s.Stale))
	if s.Err != nil {
		msg += "; last attempt: " + s.Err.Error()
	}
	return msg
}

// NewFailover returns the failover recovery for inv's deployment, which
// must run on Redis.
func NewFailover(inv *Invitations, cfg FailoverConfig) *Failover {
	defaults.Positive(&cfg.CheckEvery, time.Second)
	defaults.Positive(&cfg.LockTTL, 2*time.Minute)
	if cfg.Metrics == nil {
		cfg.Metrics = NewFailoverMetrics(nil)
	}
	return &Failover{
		inv: inv, res: inv.res, cfg: cfg, m: cfg.Metrics,
		log:  logs.OrQuiet(cfg.Logger).WithField("component", "failover"),
		wake: make(chan struct{}, 1),
	}
}

// Wake asks Watch to check now (a signup met reserve.ErrHistory). It
// never blocks.
func (f *Failover) Wake() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// State returns what this process last saw.
func (f *Failover) State() FailoverState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state
}

// Watch checks every CheckEvery, and whenever woken, whether a shard's
// Redis changed history, and recovers it; it returns when ctx ends.
func (f *Failover) Watch(ctx context.Context) {
	t := time.NewTicker(f.cfg.CheckEvery)
	defer t.Stop()
	for {
		if err := f.Recover(ctx); err != nil && ctx.Err() == nil {
			f.log.WithError(err).Warn("redis failover recovery did not finish; trying again")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-f.wake:
		}
	}
}

// Recover rebuilds every code from MongoDB if any shard's Redis changed
// history, then records the new history; it returns nil at once when none
// did. Under the lock, it checks again: another replica may have done it.
func (f *Failover) Recover(ctx context.Context) error {
	hs, err := f.res.Histories(ctx)
	if err != nil {
		return err // Redis unreachable: nothing to decide yet
	}
	stale := staleShards(hs)
	f.setState(stale, nil)
	if len(stale) == 0 {
		return nil
	}
	err = f.recover(ctx)
	if err != nil {
		f.mu.Lock()
		f.state.Err = err
		f.mu.Unlock()
	}
	return err
}

func (f *Failover) recover(ctx context.Context) error {
	st := newStepTimes()
	unlock, err := f.res.Lock(ctx, failoverLock, f.cfg.LockTTL)
	if err != nil {
		return err
	}
	defer unlock()
	st.mark("failover lock")
	start := time.Now()
	hs, err := f.res.Histories(ctx)
	if err != nil {
		return err
	}
	stale := staleShards(hs)
	if len(stale) == 0 {
		f.setState(nil, nil) // another replica recovered it meanwhile
		return nil
	}
	log := f.log.WithField("shards", stale)
	log.Warn("redis changed history (a failover or a restart); rebuilding every code from MongoDB before seats are handed out again")
	codes, err := f.inv.reseedEvery(ctx, st)
	if err != nil {
		return fmt.Errorf("reseed (%s): %w", st, err)
	}
	for _, s := range stale {
		ok, err := f.res.RecordHistory(ctx, s, hs[s].Current)
		if err != nil {
			return err
		}
		if !ok {
			return ErrHistoryMoved
		}
	}
	took := time.Since(start)
	f.m.Recoveries.Inc()
	f.m.Duration.Set(took.Seconds())
	f.setState(nil, nil)
	log.WithFields(map[string]any{"codes": codes, "took": took.String(), "steps": st.String()}).
		Warn("redis failover recovery done: every code rebuilt from MongoDB, seats handed out again")
	return nil
}

func (f *Failover) setState(stale []int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case len(stale) == 0:
		f.state = FailoverState{}
		f.m.Recovering.Set(0)
	case len(f.state.Stale) == 0:
		f.state = FailoverState{Stale: stale, Since: time.Now(), Err: err}
		f.m.Recovering.Set(1)
	default:
		f.state.Stale = stale
	}
}

func staleShards(hs []reserve.History) []int {
	var out []int
	for s, h := range hs {
		if h.Stale() {
			out = append(out, s)
		}
	}
	return out
}
