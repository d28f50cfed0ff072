package workflow_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/confirm"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
	"github.com/invitegate/invitegate/internal/workflow"
)

// TestSetMaxBelowLiveHoldsWhileRedisUnseeded: two holds on a code with
// max_uses 2 are recorded in MongoDB; Redis loses its data (a wipe, a
// fresh node) and, before any request seeds it, an operator lowers the
// code to 1. SetMax's check is MongoDB's registrations (0) and Redis'
// free tokens, and with no bucket Shrink reports "not seeded" and nothing
// else is checked: the live holds MongoDB records are not counted. The
// next seeding restores both holds into buckets of max_uses 1 (live
// holds 2 > max 1: I1' broken in Redis), both confirm with 201, and
// MongoDB's cap refuses one of the two acknowledged registrations.
func TestSetMaxBelowLiveHoldsWhileRedisUnseeded(t *testing.T) {
	ctx := context.Background()
	db := testenv.MongoDatabase(t)
	st := persist.NewStore(db, nil, nil)
	if err := st.EnsureSchema(ctx); err != nil {
		t.Fatal(err)
	}
	const code = "smh"
	if err := st.CreateInvitation(ctx, invite.Invitation{Code: code, MaxUses: 2, ConfirmWindow: time.Minute}); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: testenv.SharedRedis(t)})
	t.Cleanup(func() { c.Close() })
	ns := testenv.KeyPrefix(t)
	res := reserve.New(c, reserve.Config{Namespace: ns, Shards: 1})
	sg := workflow.NewSignups(res, st, workflow.SignupsConfig{})

	var holds []confirm.Hold
	for i := 0; i < 2; i++ {
		a := testenv.Address(t, fmt.Sprintf("h%d@example.com", i))
		r, err := sg.Reserve(ctx, code, a)
		if err != nil || r.Outcome != invite.Held {
			t.Fatalf("hold %d: %+v %v", i, r, err)
		}
		holds = append(holds, confirm.Hold{Code: code, HoldID: r.ID, Canonical: a.Canonical, Email: a.Normalized})
	}
	// The reconciler records both holds.
	pend, err := res.Pending(ctx, code)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := st.Persist(ctx, pend); err != nil {
		t.Fatal(out, err)
	}

	testenv.Wipe(t, c, ns)
	w := workflow.NewInvitations(st, res, nil)
	if _, err := w.SetMax(ctx, code, 1); errors.Is(err, workflow.ErrRefused) {
		// Refused, as it should be: nothing changed.
		if inv, _, _ := st.Invitation(ctx, code); inv.MaxUses != 2 {
			t.Fatalf("refused, but max_uses is %d now", inv.MaxUses)
		}
		return
	} else if err != nil {
		t.Fatalf("set-max: %v, want refused", err)
	}
	t.Errorf("set-max 2->1 accepted while MongoDB records 2 live holds")

	created := 0
	for i, h := range holds {
		r, err := sg.Confirm(ctx, h)
		if err == nil && r.Outcome == invite.Created {
			created++
		} else {
			t.Logf("confirm %d: %+v %v", i, r, err)
		}
	}
	if created > 1 {
		t.Errorf("max_uses 1: %d confirmations answered 201", created)
	}
	pend, err = res.Pending(ctx, code)
	if err != nil {
		t.Fatal(err)
	}
	out, err := st.Persist(ctx, pend)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range out {
		if pend[i].Kind == invite.Registration && o.Outcome == persist.Refused {
			t.Errorf("a confirmation answered 201 was refused by MongoDB's cap (acknowledged signup lost): %+v", pend[i])
		}
	}
}
