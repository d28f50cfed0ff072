package reserve

import (
	"context"
	"fmt"

	"github.com/invitegate/invitegate/internal/invite"
)

// ErrHistory means a signup needed a token on a shard whose Redis is no
// longer the history it was seeded in: a replica promoted by a failover
// (which may lack the newest writes), or a restarted Redis. Nothing is
// handed out there until the shard is rebuilt from MongoDB and the new
// history recorded (workflow.Failover). It wraps invite.ErrUnavailable.
var ErrHistory = fmt.Errorf("%w: redis failed over or restarted; its counters are being rebuilt from MongoDB", invite.ErrUnavailable)

// History is a shard's Redis history: the replication ID recorded when it
// was seeded or last recovered, and Redis' current one. Either is "" when
// unknown (none recorded yet; a Redis that does not report one).
type History struct {
	Recorded, Current string
}

// Stale reports whether the shard's data may be behind what the service
// wrote: a history was recorded and Redis is now another.
func (h History) Stale() bool {
	return h.Recorded != "" && h.Current != "" && h.Recorded != h.Current
}

// Histories returns every shard's History, one call per shard (each on
// the node that holds it).
func (r *Reserver) Histories(ctx context.Context) ([]History, error) {
	out := make([]History, r.shards)
	for s := range out {
		rec, cur, err := evalHistory(ctx, r.rdb, r.keys.history(s))
		if err != nil {
			return nil, err
		}
		out[s] = History{Recorded: rec, Current: cur}
	}
	return out, nil
}

// InitHistories records Redis' current history for every shard that has
// none recorded (history.lua "init").
func (r *Reserver) InitHistories(ctx context.Context) error {
	for s := 0; s < r.shards; s++ {
		if err := evalHistoryInit(ctx, r.rdb, r.keys.history(s)); err != nil {
			return err
		}
	}
	return nil
}

// RecordHistory records Redis' current history for shard s if it is still
// from, the one the caller rebuilt the shard in; ok is false when Redis
// has moved on to yet another (recover again).
func (r *Reserver) RecordHistory(ctx context.Context, s int, from string) (ok bool, err error) {
	return evalHistorySet(ctx, r.rdb, r.keys.history(s), from)
}
