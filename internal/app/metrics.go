package app

import (
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	api "github.com/invitegate/invitegate/internal/http"
	"github.com/invitegate/invitegate/internal/mail"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
)

// metrics are every collector a process exports.
type metrics struct {
	http      *api.Metrics
	mail      *mail.Metrics
	reserve   *reserve.Metrics
	persist   *persist.Metrics
	depUp     *prometheus.GaugeVec
	remaining *prometheus.GaugeVec
}

// registerMetrics creates and registers every collector with reg. It is
// the one list of what /metrics exports; MetricNames reads it too.
func registerMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		http:    api.NewMetrics(reg),
		mail:    mail.NewMetrics(reg),
		reserve: reserve.NewMetrics(reg),
		persist: persist.NewMetrics(reg),
		depUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "invitegate_dependency_up",
			Help: "1 when the last health check of a dependency (redis, mongodb) succeeded.",
		}, []string{"dependency"}),
		remaining: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "invitegate_invitation_remaining",
			Help: "Seats left per invitation code in Redis (codes are created by staff, so the label is bounded).",
		}, []string{"code"}),
	}
	reg.MustRegister(m.depUp, m.remaining, buildInfo(),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// MetricNames returns the name of every metric family /metrics exports
// (histograms by their base name).
func MetricNames() []string {
	rec := &recorder{}
	registerMetrics(rec)
	return rec.names
}

// recorder is a Registerer that only notes metric names.
type recorder struct{ names []string }

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		// Desc has no name accessor; its String() is stable:
		// Desc{fqName: "name", help: ...}.
		s := d.String()
		if i := strings.Index(s, `fqName: "`); i >= 0 {
			rest := s[i+len(`fqName: "`):]
			r.names = append(r.names, rest[:strings.IndexByte(rest, '"')])
		}
	}
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r *recorder) Unregister(prometheus.Collector) bool { return false }

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
