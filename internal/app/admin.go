package app

import (
	"context"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
)

func (m *Main) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !m.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 500*time.Millisecond)
		defer cancel()
		if m.rdb == nil {
			// MongoDB alone takes the signups.
			if err := m.mongo.Ping(ctx, readpref.Primary()); err != nil {
				http.Error(w, "mongodb unreachable", http.StatusServiceUnavailable)
				return
			}
		} else if err := m.rdb.Ping(ctx).Err(); err != nil {
			http.Error(w, "redis unreachable", http.StatusServiceUnavailable)
			return
		}
		if m.failover != nil {
			if why := m.failover.State().Reason(); why != "" {
				http.Error(w, why, http.StatusServiceUnavailable)
				return
			}
		}
		w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry}))
	if m.Config.Pprof {
		// The admin listener only: profiles show code paths and timings,
		// never on the public port. No /cmdline: the arguments may hold
		// passwords.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// health publishes invitegate_dependency_up every 2s and the remaining
// seats per code every 10s.
func (m *Main) health(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	var lastSeats time.Time
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		if m.rdb != nil {
			m.depUp.WithLabelValues("redis").Set(b2f(m.rdb.Ping(cctx).Err() == nil))
		}
		m.depUp.WithLabelValues("mongodb").Set(b2f(m.mongo.Ping(cctx, readpref.Primary()) == nil))
		cancel()
		if time.Since(lastSeats) >= 10*time.Second {
			lastSeats = time.Now()
			m.publishSeats(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// publishSeats sets invitegate_invitation_remaining for every code.
// NOTE: one HGET per code and shard; with thousands of codes this wants a
// pipeline or a sampled subset.
func (m *Main) publishSeats(ctx context.Context) {
	if m.Reserver == nil && m.mongoRes == nil {
		return // invitegate mail: no reservation path to ask
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	invs, err := m.Store.Invitations(ctx)
	if err != nil {
		return
	}
	seats := make(map[string]int, len(invs))
	for _, inv := range invs {
		if m.mongoRes != nil {
			taken, err := m.mongoRes.Taken(ctx, inv.Code)
			if err != nil {
				return
			}
			seats[inv.Code] = max(inv.MaxUses-taken, 0)
			continue
		}
		n, ok, err := m.Reserver.Remaining(ctx, inv.Code)
		if err != nil {
			return
		}
		if ok {
			seats[inv.Code] = n
		}
	}
	m.remaining.Reset()
	for code, n := range seats {
		m.remaining.WithLabelValues(code).Set(float64(n))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
