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
}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered, for tests and tools).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		Sweeps:        f.NewCounter(prometheus.CounterOpts{Name: "invitegate_reserve_sweeps_total", Help: "Requests that found their shard's bucket empty and looked for tokens on other shards."}),
		TokensMoved:   f.NewCounter(prometheus.CounterOpts{Name: "invitegate_reserve_tokens_moved_total", Help: "Tokens moved from one shard's bucket to another's."}),
		GiveBacks:     f.NewCounter(prometheus.CounterOpts{Name: "invitegate_reserve_tokens_given_back_total", Help: "Tokens returned because MongoDB refused a reservation (the email belonged to another code)."}),
		NotReplicated: f.NewCounter(prometheus.CounterOpts{Name: "invitegate_reserve_not_replicated_total", Help: "Signups (and token moves) not confirmed by the Redis replicas within INVITEGATE_ACK_TIMEOUT (INVITEGATE_ACK=replica): answered 503."}),
	}
}
