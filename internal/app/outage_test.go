package app_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/invitegate/invitegate/internal/app"
	"github.com/invitegate/invitegate/internal/embedded"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/testenv"
)

// quiet drops FerretDB's warnings about the connections this test cuts.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// maxLag reads the highest per-shard reservation lag from /metrics (-1
// when there is none).
func maxLag(tb testing.TB, admin string) float64 {
	tb.Helper()
	return slices.Max(append(testenv.Metric(tb, admin, "invitegate_reservation_lag_seconds"), -1))
}

// TestMongoOutageLagRisesAndDrains: with MongoDB down, signups go on (Redis
// holds them), the lag metric rises; when MongoDB is back the backlog
// drains, lag returns to 0 and every acknowledged signup is in MongoDB once.
func TestMongoOutageLagRisesAndDrains(t *testing.T) {
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mongoAddr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	uri, stopMongo, err := embedded.StartFerretDB(ctx, dir, mongoAddr, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { stopMongo() }()

	e := newEnv(t, deployment{"redis/K=2", false, 2})
	e.cfg.MongoURI = uri
	e.cfg.MongoDB = "outage"
	m, stop := e.startMode(t, app.Serve)
	defer stop() // before MongoDB stops
	if err := m.Store.CreateInvitation(ctx, invite.Invitation{Code: "o", MaxUses: 500}); err != nil {
		t.Fatal(err)
	}
	s := []string{m.PublicAddr}

	if got := tally(blast(t, s, "o", emails("before", 50))); got[201] != 50 {
		t.Fatalf("before the outage: %v", got)
	}
	e.waitPersistedIn(t, m.Store, "o", 50)

	stopMongo()
	got := tally(blast(t, s, "o", emails("during", 100)))
	if got[201] != 100 {
		t.Fatalf("during the outage: %v, want 100×201 (Redis holds them)", got)
	}
	deadline := time.Now().Add(15 * time.Second)
	for maxLag(t, m.AdminAddr) < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("lag did not rise during the outage: %v", maxLag(t, m.AdminAddr))
		}
		time.Sleep(100 * time.Millisecond)
	}

	_, stopMongo, err = embedded.StartFerretDB(ctx, dir, mongoAddr, quiet)
	if err != nil {
		t.Fatal(err)
	}
	e.waitPersistedIn(t, m.Store, "o", 150)
	deadline = time.Now().Add(15 * time.Second)
	for maxLag(t, m.AdminAddr) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("lag did not return to 0: %v", maxLag(t, m.AdminAddr))
		}
		time.Sleep(100 * time.Millisecond)
	}
	seen := map[string]bool{}
	if err := m.Store.ForEachRegistration(ctx, "o", func(c, _ string) error {
		if seen[c] {
			t.Errorf("%s written twice", c)
		}
		seen[c] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 150 {
		t.Fatalf("%d registrations, want 150", len(seen))
	}
}

func (e *env) waitPersistedIn(tb testing.TB, st *persist.Store, code string, want int) {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		n, err := st.Count(context.Background(), code)
		if err == nil && n == want {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: %d registrations (%v), want %d", code, n, err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
