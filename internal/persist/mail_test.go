package persist_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
)

// TestMailClaims: one attempt is held by one mailer until its lease runs
// out; then exactly one other mailer takes it over, and the first one's
// late outcome is refused. Claims are bounded: a code path that keeps
// expiring claims ends in an error, never in two holders.
func TestMailClaims(t *testing.T) {
	ctx := context.Background()
	st, db := newStore(t)
	createCodes(t, st, "c")
	if _, err := st.Persist(ctx, []invite.Reservation{{Code: "c", Canonical: "x@example.com", Email: "x@example.com", ReservedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	claim := func(owner string, at time.Time) bool {
		t.Helper()
		ok, err := st.ClaimMail(ctx, "x@example.com", 0, 0, owner, at, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !claim("a", now) {
		t.Fatal("a could not claim a free attempt")
	}
	if claim("b", now.Add(30*time.Second)) {
		t.Fatal("b claimed an attempt a holds")
	}
	// a's lease runs out: b takes over, c cannot take it from b.
	if !claim("b", now.Add(2*time.Minute)) {
		t.Fatal("b could not take over an expired claim")
	}
	if claim("c", now.Add(2*time.Minute+time.Second)) {
		t.Fatal("c claimed an attempt b holds")
	}
	if n, err := db.Collection(persist.MailClaimsCollection).CountDocuments(ctx, bson.D{}); err != nil || n != 2 {
		t.Fatalf("%d claims (%v), want a's and b's", n, err)
	}
	if err := st.MailSent(ctx, "x@example.com", 0, 0, now.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	// The outcome is recorded: the attempt's claims are deleted.
	if n, err := db.Collection(persist.MailClaimsCollection).CountDocuments(ctx, bson.D{}); err != nil || n != 0 {
		t.Fatalf("%d claims left after the outcome (%v), want 0", n, err)
	}
	if err := st.MailSent(ctx, "x@example.com", 0, 0, now.Add(3*time.Minute)); !errors.Is(err, persist.ErrMailOutcomeLate) {
		t.Fatalf("a's late outcome: %v, want ErrMailOutcomeLate", err)
	}
	// Sent: nobody claims it again, however late, and a mailer working
	// from a stale list leaves no claim behind.
	if claim("d", now.Add(time.Hour)) {
		t.Fatal("d claimed a sent mail")
	}
	if n, err := db.Collection(persist.MailClaimsCollection).CountDocuments(ctx, bson.D{}); err != nil || n != 0 {
		t.Fatalf("%d claims left after a late claimer (%v), want 0", n, err)
	}

	// A registration whose claims keep expiring runs out of generations
	// and gets an error, not a claim.
	if _, err := st.Persist(ctx, []invite.Reservation{{Code: "c", Canonical: "y@example.com", Email: "y@example.com", ReservedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	at := now
	for i := 0; ; i++ {
		ok, err := st.ClaimMail(ctx, "y@example.com", 0, 0, "z", at, time.Minute)
		if errors.Is(err, persist.ErrClaimsExhausted) && i >= 10 {
			break
		}
		if err != nil {
			t.Fatalf("claim %d: %v", i, err)
		}
		if !ok {
			t.Fatalf("claim %d after the previous lease: refused", i)
		}
		if i > 100 {
			t.Fatal("claims never run out")
		}
		at = at.Add(2 * time.Minute)
	}
}
