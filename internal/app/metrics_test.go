package app

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// metricNames returns the name of every metric family /metrics exports
// (histograms by their base name).
func metricNames() []string {
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
