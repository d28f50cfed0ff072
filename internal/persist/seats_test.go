package persist_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
)

// TestMongoReserverStatus: the landing page's status on the MongoDB-only
// path: open, full once every seat is taken, disabled, expired, unknown.
func TestMongoReserverStatus(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	m := persist.NewMongoReserver(st)
	if err := m.EnsureSchema(ctx); err != nil {
		t.Fatal(err)
	}
	for _, inv := range []invite.Invitation{
		{Code: "st", MaxUses: 2},
		{Code: "off", MaxUses: 5, Disabled: true},
		{Code: "old", MaxUses: 5, ExpiresAt: time.Now().Add(-time.Minute)},
	} {
		if err := st.CreateInvitation(ctx, inv); err != nil {
			t.Fatal(err)
		}
	}
	want := func(code string, s invite.Status, wantErr error) {
		t.Helper()
		got, err := m.Status(ctx, code)
		if got != s || !errors.Is(err, wantErr) {
			t.Fatalf("Status(%q) = %q, %v; want %q, %v", code, got, err, s, wantErr)
		}
	}
	want("st", invite.StatusOpen, nil)
	want("off", invite.StatusDisabled, nil)
	want("old", invite.StatusExpired, nil)
	want("nope", "", invite.ErrUnknownCode)
	for i := 0; i < 2; i++ {
		a, err := email.Parse(fmt.Sprintf("m%d@example.com", i), email.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Reserve(ctx, "st", a); err != nil {
			t.Fatal(err)
		}
	}
	want("st", invite.StatusFull, nil)
}

// TestSeatsSharedByBothPaths: the Redis path's registrations hold seats
// already; a deployment switching to INVITEGATE_RESERVER=mongo seats only
// those without one (older releases'), so the MongoDB path admits exactly
// the rest of max_uses.
func TestSeatsSharedByBothPaths(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	if err := st.CreateInvitation(ctx, invite.Invitation{Code: "both", MaxUses: 10}); err != nil {
		t.Fatal(err)
	}
	var viaRedis, older []invite.Reservation
	for i := 0; i < 4; i++ {
		e := fmt.Sprintf("redis%d@example.com", i)
		viaRedis = append(viaRedis, invite.Reservation{Code: "both", Canonical: e, Email: e, ReservedAt: time.Now()})
	}
	for i := 0; i < 2; i++ {
		e := fmt.Sprintf("older%d@example.com", i)
		older = append(older, invite.Reservation{Code: "both", Canonical: e, Email: e, ReservedAt: time.Now()})
	}
	if res, err := st.Admit(ctx, viaRedis); err != nil || res[3].Outcome != persist.Written {
		t.Fatalf("admit: %+v, %v", res, err)
	}
	if _, err := st.Persist(ctx, older); err != nil { // without seats
		t.Fatal(err)
	}
	m := persist.NewMongoReserver(st)
	if err := m.EnsureSchema(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.SeatRegistrations(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := m.Taken(ctx, "both"); err != nil || n != 6 {
		t.Fatalf("%d seats taken (%v), want 6: one per registration", n, err)
	}
	for i := 0; i < 5; i++ {
		a, err := email.Parse(fmt.Sprintf("mongo%d@example.com", i), email.Options{})
		if err != nil {
			t.Fatal(err)
		}
		res, err := m.Reserve(ctx, "both", a)
		if i < 4 && (err != nil || res.Outcome != invite.Created) {
			t.Fatalf("signup %d: %+v, %v; want Created", i, res, err)
		}
		if i == 4 && !errors.Is(err, invite.ErrFull) {
			t.Fatalf("signup %d: %+v, %v; want full", i, res, err)
		}
	}
	if n, err := st.Count(ctx, "both"); err != nil || n != 10 {
		t.Fatalf("%d registrations (%v), want 10", n, err)
	}
}
