package reserve

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the reservation layer's Prometheus collectors.
type Metrics struct {
	Sweeps      prometheus.Counter
	TokensMoved prometheus.Counter
	GiveBacks   prometheus.Counter
	// NotReplicated counts signups answered 503 with INVITEGATE_ACK=replica
	// because the replicas did not confirm them in time.
	NotReplicated prometheus.Counter
	// Holds: taken, confirmed and expired (each once, whichever replica
	// does it), and the time from a hold to its confirmation.
	HoldsCreated, HoldsConfirmed, HoldsExpired prometheus.Counter
	ConfirmSeconds                             prometheus.Histogram
}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered, for tests and tools).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		Sweeps:         f.NewCounter(prometheus.CounterOpts{Name: "invitegate_reserve_sweeps_total", Help: "Requests that found their shard's bucket empty and looked for tokens on other shards."}),
		TokensMoved:    f.NewCounter(prometheus.CounterOpts{Name: "invitegate_reserve_tokens_moved_total", Help: "Tokens moved from one shard's bucket to another's."}),
		GiveBacks:      f.NewCounter(prometheus.CounterOpts{Name: "invitegate_reserve_tokens_given_back_total", Help: "Tokens returned because MongoDB refused a reservation (the email belonged to another code)."}),
		NotReplicated:  f.NewCounter(prometheus.CounterOpts{Name: "invitegate_reserve_not_replicated_total", Help: "Signups (and token moves) not confirmed by the Redis replicas within INVITEGATE_ACK_TIMEOUT (INVITEGATE_ACK=replica): answered 503."}),
		HoldsCreated:   f.NewCounter(prometheus.CounterOpts{Name: "invitegate_holds_created_total", Help: "Seats taken as holds on codes with a confirmation window (repeats not counted)."}),
		HoldsConfirmed: f.NewCounter(prometheus.CounterOpts{Name: "invitegate_holds_confirmed_total", Help: "Holds confirmed (turned into registrations) before their deadline."}),
		HoldsExpired:   f.NewCounter(prometheus.CounterOpts{Name: "invitegate_holds_expired_total", Help: "Holds that passed their deadline unconfirmed and gave their seat back."}),
		ConfirmSeconds: f.NewHistogram(prometheus.HistogramOpts{
			Name: "invitegate_hold_confirm_seconds", Help: "Time from a hold to its confirmation.",
			Buckets: []float64{5, 15, 30, 60, 120, 300, 600, 1800, 3600, 6 * 3600, 24 * 3600, 7 * 24 * 3600},
		}),
	}
}
