package app_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/invitegate/invitegate/internal/app"
	"github.com/invitegate/invitegate/internal/persist"
)

// TestReconcileModeAndForeignInvitations: invitations written into MongoDB
// by another tool (int64 and double max_uses) work on their first request
// without a restart; a serve process without its reconciler leaves the
// reservations in Redis, and `invitegate reconcile` writes them.
func TestReconcileModeAndForeignInvitations(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, deployment{"redis/K=4", false, 4})
	e.cfg.Reconciler = false
	m, _ := e.start(t)

	_, err := e.db.Collection(persist.InvitationsCollection).InsertMany(ctx, []any{
		bson.D{{Key: "_id", Value: "foreign"}, {Key: "max_uses", Value: int64(3)}},
		bson.D{{Key: "_id", Value: "dbl"}, {Key: "max_uses", Value: 2.0}},
		bson.D{{Key: "_id", Value: "broken"}, {Key: "max_uses", Value: "ten"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	s := []string{m.PublicAddr}
	if got := tally(blast(t, s, "foreign", emails("f", 5))); got[201] != 3 || got[410] != 2 {
		t.Fatalf("foreign: %v, want 3×201 2×410", got)
	}
	if got := tally(blast(t, s, "dbl", emails("d", 3))); got[201] != 2 || got[410] != 1 {
		t.Fatalf("dbl: %v, want 2×201 1×410", got)
	}
	if st := post(t, m.PublicAddr, "broken", "b@example.com"); st != 404 {
		t.Fatalf("invitation with a string max_uses: %d, want 404", st)
	}
	var backlog int64
	for s := 0; s < 4; s++ {
		n, _, err := m.Reserver.Backlog(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		backlog += n
	}
	if backlog != 5 {
		t.Fatalf("backlog without a reconciler = %d, want 5", backlog)
	}

	rec, _ := e.startMode(t, app.Reconcile)
	if rec.PublicAddr != "" {
		t.Fatalf("reconcile mode listens publicly on %s", rec.PublicAddr)
	}
	e.waitPersisted(t, "foreign", 3)
	e.waitPersisted(t, "dbl", 2)

	resp, err := http.Get("http://" + rec.AdminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, metric := range []string{"invitegate_reservation_lag_seconds", "invitegate_reconciler_rows_total", "invitegate_dependency_up"} {
		if !strings.Contains(string(body), metric) {
			t.Errorf("/metrics lacks %s", metric)
		}
	}
	// Lag returns to zero once everything is written.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + rec.AdminAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		zero := true
		for _, sh := range []string{"0", "1", "2", "3"} {
			if !strings.Contains(string(b), "invitegate_reservation_backlog{shard=\""+sh+"\"} 0\n") {
				zero = false
			}
		}
		if !zero {
			if time.Now().After(deadline) {
				t.Fatal("backlog metric did not return to 0")
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		break
	}
}
