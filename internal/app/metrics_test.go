package app

import (
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// metricNames returns the name of every metric family /metrics exports
// (histograms by their base name).
func metricNames() []string {
	rec := &recorder{}
	registerMetrics(rec)
	return rec.names
}

// recorder is a Registerer that only notes metric names and counts the
// collectors registered.
type recorder struct {
	names      []string
	collectors int
}

func (r *recorder) Register(c prometheus.Collector) error {
	r.collectors++
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

// TestEveryCollectorIsRegistered: every collector the metrics struct holds
// (its packages' Metrics structs included) is registered once, plus the
// three that only the registry holds (build info, Go runtime, process); a
// collector created with prometheus.New… instead of the registering
// factory would be held but never exported.
func TestEveryCollectorIsRegistered(t *testing.T) {
	rec := &recorder{}
	m := registerMetrics(rec)
	collector := reflect.TypeFor[prometheus.Collector]()
	var held func(reflect.Type) int
	held = func(typ reflect.Type) int {
		n := 0
		for f := range typ.Fields() {
			switch {
			case f.Type.Implements(collector):
				n++
			case f.Type.Kind() == reflect.Pointer && f.Type.Elem().Kind() == reflect.Struct:
				n += held(f.Type.Elem())
			}
		}
		return n
	}
	if want := held(reflect.TypeOf(m)) + 3; rec.collectors != want {
		t.Fatalf("%d collectors registered, want %d (%d held by the metrics struct, plus build info, Go and process)", rec.collectors, want, want-3)
	}
}
