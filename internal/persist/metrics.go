package persist

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the reconciler's Prometheus collectors.
type Metrics struct {
	Batches      prometheus.Counter
	Rows         *prometheus.CounterVec // result: written, duplicate, committed, conflict, refused, vanished, no_invitation, malformed
	Errors       *prometheus.CounterVec // dependency: redis, mongo
	Claimed      prometheus.Counter
	BatchSeconds prometheus.Histogram
	Persisted    prometheus.Histogram // reservation → MongoDB delay
	Backlog      *prometheus.GaugeVec // shard
	Lag          *prometheus.GaugeVec // shard
	AckBatch     prometheus.Histogram // INVITEGATE_ACK=mongo: reservations per group commit
}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		Batches:      f.NewCounter(prometheus.CounterOpts{Name: "invitegate_reconciler_batches_total", Help: "Bulk inserts the reconciler completed."}),
		Rows:         f.NewCounterVec(prometheus.CounterOpts{Name: "invitegate_reconciler_rows_total", Help: "Reservations settled by the reconciler, by result (written, duplicate, committed, conflict, refused: over the cap in MongoDB, vanished: lost by a Redis failover before acknowledged, not written; no_invitation: left pending, the code has no usable invitation; malformed)."}, []string{"result"}),
		Errors:       f.NewCounterVec(prometheus.CounterOpts{Name: "invitegate_reconciler_errors_total", Help: "Failed reconciler operations by dependency (redis, mongo); the work is retried."}, []string{"dependency"}),
		Claimed:      f.NewCounter(prometheus.CounterOpts{Name: "invitegate_reconciler_claimed_total", Help: "Reservations taken over from a consumer that left them pending."}),
		BatchSeconds: f.NewHistogram(prometheus.HistogramOpts{Name: "invitegate_reconciler_batch_duration_seconds", Help: "Time to write and acknowledge one batch.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}),
		Persisted:    f.NewHistogram(prometheus.HistogramOpts{Name: "invitegate_reconciler_persist_delay_seconds", Help: "Time from reservation in Redis to registration in MongoDB.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 18)}),
		Backlog:      f.NewGaugeVec(prometheus.GaugeOpts{Name: "invitegate_reservation_backlog", Help: "Reservations in Redis not yet written to MongoDB, per shard."}, []string{"shard"}),
		Lag:          f.NewGaugeVec(prometheus.GaugeOpts{Name: "invitegate_reservation_lag_seconds", Help: "Age of the oldest reservation not yet written to MongoDB, per shard (0 when none)."}, []string{"shard"}),
		AckBatch:     f.NewHistogram(prometheus.HistogramOpts{Name: "invitegate_ack_commit_batch_size", Help: "With INVITEGATE_ACK=mongo, signups written to MongoDB by one group commit.", Buckets: prometheus.ExponentialBuckets(1, 2, 9)}),
	}
}
