package app

import (
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"

	api "github.com/invitegate/invitegate/internal/http"
	"github.com/invitegate/invitegate/internal/mail"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/workflow"
)

// metrics are every collector a process exports.
type metrics struct {
	http      *api.Metrics
	mail      *mail.Metrics
	reserve   *reserve.Metrics
	persist   *persist.Metrics
	failover  *workflow.FailoverMetrics
	depUp     *prometheus.GaugeVec
	remaining *prometheus.GaugeVec
}

// registerMetrics creates and registers every collector with reg. It is
// the one list of what /metrics exports; the tests' metricNames reads it
// too.
func registerMetrics(reg prometheus.Registerer) metrics {
	f := promauto.With(reg)
	reg.MustRegister(buildInfo(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return metrics{
		http:      api.NewMetrics(reg),
		mail:      mail.NewMetrics(reg),
		reserve:   reserve.NewMetrics(reg),
		persist:   persist.NewMetrics(reg),
		failover:  workflow.NewFailoverMetrics(reg),
		depUp:     f.NewGaugeVec(prometheus.GaugeOpts{Name: "invitegate_dependency_up", Help: "1 when the last health check of a dependency (redis, mongodb) succeeded."}, []string{"dependency"}),
		remaining: f.NewGaugeVec(prometheus.GaugeOpts{Name: "invitegate_invitation_remaining", Help: "Seats left per invitation code in Redis (codes are created by staff, so the label is bounded)."}, []string{"code"}),
	}
}

// buildInfo is invitegate_build_info{version, revision, goversion} = 1.
func buildInfo() prometheus.Collector {
	version, revision, goVersion := "(devel)", "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "invitegate_build_info",
		Help:        "Build of this process; always 1.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goVersion},
	})
	g.Set(1)
	return g
}
