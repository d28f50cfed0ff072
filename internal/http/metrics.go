package http

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the API's Prometheus collectors. Labels are bounded: route
// templates, status codes and outcome names, never codes or emails.
type Metrics struct {
	Requests *prometheus.CounterVec   // route, status, outcome
	Duration *prometheus.HistogramVec // route, outcome
	// LimiterErrors counts requests let through because the rate
	// limiter could not be asked.
	LimiterErrors prometheus.Counter
}

// latencyBuckets span a signup's latency, from 0.5 ms to 5 s.
var latencyBuckets = []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		Requests:      f.NewCounterVec(prometheus.CounterOpts{Name: "invitegate_http_requests_total", Help: "Public API requests by route, status and outcome."}, []string{"route", "status", "outcome"}),
		Duration:      f.NewHistogramVec(prometheus.HistogramOpts{Name: "invitegate_http_request_duration_seconds", Help: "Public API request latency by route and outcome.", Buckets: latencyBuckets}, []string{"route", "outcome"}),
		LimiterErrors: f.NewCounter(prometheus.CounterOpts{Name: "invitegate_rate_limiter_errors_total", Help: "Signups let through because the rate limiter's Redis call failed."}),
	}
}

func (m *Metrics) observe(route string, status int, outcome string, d time.Duration) {
	m.Requests.WithLabelValues(route, strconv.Itoa(status), outcome).Inc()
	m.Duration.WithLabelValues(route, outcome).Observe(d.Seconds())
}
