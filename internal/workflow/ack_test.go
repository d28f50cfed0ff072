package workflow_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/testenv"
)

// TestMongoAckNeverCreatesPastTheCap: with INVITEGATE_ACK=mongo, Redis
// believes a code has 25 seats while MongoDB caps it at 10 (a stale
// replica promoted, an old AOF restored, an operator's mistake). Of 25
// signups racing on it, on a Redis node and a cluster, exactly 10 are
// answered Created, every one of them in MongoDB, and the other 15 full:
// never Created for a signup MongoDB does not hold.
func TestMongoAckNeverCreatesPastTheCap(t *testing.T) {
	for _, cluster := range []bool{false, true} {
		name := "redis"
		if cluster {
			name = "cluster"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st := newStore(t)
			if err := st.CreateInvitation(ctx, invite.Invitation{Code: "stale", MaxUses: 25}); err != nil {
				t.Fatal(err)
			}
			r := redisPath(cluster, 16, true)(t, st)
			// Redis is seeded with MongoDB's 25, then MongoDB says 10.
			if s, err := r.Status(ctx, "stale"); err != nil || s != invite.StatusOpen {
				t.Fatalf("status %q, %v", s, err)
			}
			if err := st.SetMaxUses(ctx, "stale", 25, 10); err != nil {
				t.Fatal(err)
			}

			type answer struct {
				canonical string
				res       invite.Result
				err       error
			}
			answers := make(chan answer, 25)
			var wg sync.WaitGroup
			for _, e := range testenv.Emails("stale", 25) {
				a, err := email.Parse(e, email.Options{})
				if err != nil {
					t.Fatal(err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					res, err := r.Reserve(ctx, "stale", a)
					answers <- answer{a.Canonical, res, err}
				}()
			}
			wg.Wait()
			close(answers)
			created, full := 0, 0
			for a := range answers {
				switch {
				case a.err == nil && a.res.Outcome == invite.Created:
					created++
					if reg, ok, err := st.Registration(ctx, a.canonical); err != nil || !ok || reg.Invitation != "stale" {
						t.Errorf("%s answered Created, but MongoDB holds %+v (%v, %v)", a.canonical, reg, ok, err)
					}
				case errors.Is(a.err, invite.ErrFull):
					full++
				default:
					t.Errorf("%s: %+v, %v; want Created or full", a.canonical, a.res, a.err)
				}
			}
			if created != 10 || full != 15 {
				t.Fatalf("%d created, %d full; want 10 and 15", created, full)
			}
			if n, err := st.Count(ctx, "stale"); err != nil || n != 10 {
				t.Fatalf("MongoDB holds %d registrations (%v), want 10", n, err)
			}
		})
	}
}
