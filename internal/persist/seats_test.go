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
