package workflow_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
	"github.com/invitegate/invitegate/internal/workflow"
)

// TestSetConfirmWindowBeforeSeeding: a window set on a code whose buckets
// do not exist yet (no replica has seen it) reaches them when the first
// signup seeds them from MongoDB; a bad window or an unknown code changes
// nothing.
func TestSetConfirmWindowBeforeSeeding(t *testing.T) {
	ctx := context.Background()
	st := persist.NewStore(testenv.MongoDatabase(t), nil, nil)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.SharedRedis(t)})
	t.Cleanup(func() { rdb.Close() })
	res := reserve.New(rdb, reserve.Config{Namespace: testenv.KeyPrefix(t), Shards: 3})
	w := workflow.NewInvitations(st, res, nil)
	if err := st.CreateInvitation(ctx, invite.Invitation{Code: "later", MaxUses: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.SetConfirmWindow(ctx, "later", 500*time.Millisecond); !errors.Is(err, persist.ErrInvalid) {
		t.Fatalf("a 500ms window: %v, want ErrInvalid", err)
	}
	if _, err := w.SetConfirmWindow(ctx, "nope", time.Minute); !errors.Is(err, persist.ErrNotFound) {
		t.Fatalf("unknown code: %v, want ErrNotFound", err)
	}
	if inv, _, _ := st.Invitation(ctx, "later"); inv.ConfirmWindow != 0 {
		t.Fatalf("a refused window changed MongoDB: %v", inv.ConfirmWindow)
	}
	old, err := w.SetConfirmWindow(ctx, "later", 10*time.Second)
	if err != nil || old != 0 {
		t.Fatalf("SetConfirmWindow = %v, %v; want 0, nil", old, err)
	}
	if _, seeded, err := res.Remaining(ctx, "later"); err != nil || seeded {
		t.Fatalf("set-confirm created buckets (seeded %v, %v)", seeded, err)
	}
	signups := workflow.NewSignups(res, st, workflow.SignupsConfig{})
	r, err := signups.Reserve(ctx, "later", testenv.Address(t, "a@example.com"))
	if err != nil || r.Outcome != invite.Held {
		t.Fatalf("first signup after set-confirm: %+v, %v; want a hold", r, err)
	}
	if old, err := w.SetConfirmWindow(ctx, "later", 0); err != nil || old != 10*time.Second {
		t.Fatalf("SetConfirmWindow(0) = %v, %v; want 10s, nil", old, err)
	}
	if r, err := signups.Reserve(ctx, "later", testenv.Address(t, "b@example.com")); err != nil || r.Outcome != invite.Created {
		t.Fatalf("signup after the window is off: %+v, %v; want created", r, err)
	}
}
