package persist_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
)

// Regression tests for ways an adversarial review broke MongoDB's cap.

func rows(code string, names ...string) []invite.Reservation {
	var out []invite.Reservation
	for _, n := range names {
		out = append(out, invite.Reservation{Code: code, Canonical: n + "@example.com", Email: n + "@example.com", ReservedAt: time.Now()})
	}
	return out
}

func outcomes(out []persist.Result) []persist.Outcome {
	o := make([]persist.Outcome, len(out))
	for i, r := range out {
		o[i] = r.Outcome
	}
	return o
}

// TestCapNeverRefusesWithASeatFree: another process takes and registers
// between this call's rounds, and rows of the batch that turn out to be
// duplicates or conflicts let their seats go: a new email is still written
// while MongoDB has a seat free, never Refused.
func TestCapNeverRefusesWithASeatFree(t *testing.T) {
	ctx := context.Background()
	_, db := newStore(t)
	o := persist.NewStore(db, nil, nil) // another process
	calls := 0
	st := persist.NewStore(db, nil, func() time.Time {
		calls++
		switch calls {
		case 2: // round 0 of the batch: the other process takes a seat
			if out, err := o.Persist(ctx, rows("c", "z")); err != nil || out[0].Outcome != persist.Written {
				t.Error(out, err)
			}
		case 3: // round 1: it registers y on another code (unless this
			// process's round 0 already wrote y on c)
			if _, err := o.Persist(ctx, rows("other", "y")); err != nil {
				t.Error(err)
			}
		}
		return time.Now()
	})
	if err := st.EnsureSchema(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateInvitation(ctx, invite.Invitation{Code: "c", MaxUses: 3}); err != nil {
		t.Fatal(err)
	}
	createCodes(t, st, "other")
	if out, _ := st.Persist(ctx, append(rows("c", "r0"), rows("other", "w")...)); out[0].Outcome != persist.Written || out[1].Outcome != persist.Written {
		t.Fatal(out)
	}
	out, err := st.Persist(ctx, append(append(rows("c", "y"), rows("c", "w")...), rows("c", "x")...))
	if err != nil {
		t.Fatal(err)
	}
	// w is another code's; y is c's or another code's, whichever writer
	// came first; x is written unless c is full without it.
	n := checkSeats(t, st, "c", 3)
	if out[1].Outcome != persist.Conflict {
		t.Fatalf("w: %v, want Conflict", out[1].Outcome)
	}
	if out[2].Outcome == persist.Refused && n < 3 {
		t.Fatalf("x Refused while c holds %d of 3 (outcomes %v)", n, outcomes(out))
	}
	if out[2].Outcome != persist.Refused && out[2].Outcome != persist.Written {
		t.Fatalf("x: %v, want Written or, with c full, Refused", out[2].Outcome)
	}
	if n != 3 {
		t.Fatalf("c holds %d registrations, want 3 (r0, z, and y or x)", n)
	}
}

// TestCapRefusesOnlyWhenFullUnderChurn: one seat free while concurrent
// repeats of a registered email keep taking and letting go of seats in
// flight; a new email is never refused, and is written (after retries of
// a Failed outcome, as the reconciler retries).
func TestCapRefusesOnlyWhenFullUnderChurn(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	for trial := range 30 {
		code := fmt.Sprintf("near%d", trial)
		if err := st.CreateInvitation(ctx, invite.Invitation{Code: code, MaxUses: 2}); err != nil {
			t.Fatal(err)
		}
		if out, err := st.Persist(ctx, rows(code, "d"+code)); err != nil || out[0].Outcome != persist.Written {
			t.Fatal(out, err)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					st.Persist(ctx, rows(code, "d"+code))
				}
			}()
		}
		time.Sleep(5 * time.Millisecond)
		// Failed (the churn held the seat for every round) is retried, as
		// the reconciler does; it must end Written, never Refused.
		var out []persist.Result
		var err error
		for try := 0; try < 50; try++ {
			if out, err = st.Persist(ctx, rows(code, "x"+code)); err != nil || out[0].Outcome != persist.Failed {
				break
			}
		}
		close(stop)
		wg.Wait()
		if err != nil || out[0].Outcome != persist.Written {
			n, _ := st.Count(ctx, code)
			t.Fatalf("trial %d: new email %v (%v) with %d of 2 seats taken", trial, outcomes(out), err, n)
		}
	}
}

// TestCapToldByKeyNotMessage: duplicates are told apart by what MongoDB
// says of the key, never by the message, which carries the database name
// and the duplicate value (an email may contain "seat_1").
func TestCapToldByKeyNotMessage(t *testing.T) {
	ctx := context.Background()
	_, db0 := newStore(t)
	db := db0.Client().Database(db0.Name() + "_seat_1")
	t.Cleanup(func() { db.Drop(ctx) })
	st := persist.NewStore(db, nil, nil)
	if err := st.EnsureSchema(ctx); err != nil {
		t.Fatal(err)
	}
	createCodes(t, st, "a", "b")
	for _, step := range []struct {
		code, name string
		want       persist.Outcome
	}{
		{"a", "xseat_1", persist.Written},
		{"a", "xseat_1", persist.AlreadyWritten},
		{"b", "xseat_1", persist.Conflict},
		{"a", "f", persist.Written},
	} {
		out, err := st.Persist(ctx, rows(step.code, step.name))
		if err != nil || out[0].Outcome != step.want {
			t.Fatalf("%s on %s: %v %v, want %v", step.name, step.code, outcomes(out), err, step.want)
		}
	}
	checkSeats(t, st, "a", 1000)
	if n, _ := st.Count(ctx, "a"); n != 2 {
		t.Fatalf("%d registrations on a, want 2", n)
	}
}

// TestCapCountsOverAdmittedLegacyAfterARaise: three registrations from
// before seats existed on a code of 2 all get seats (one past max_uses);
// after a raise to 3 the code is still full.
func TestCapCountsOverAdmittedLegacyAfterARaise(t *testing.T) {
	ctx := context.Background()
	st, db := newStore(t)
	if err := st.CreateInvitation(ctx, invite.Invitation{Code: "leg", MaxUses: 2}); err != nil {
		t.Fatal(err)
	}
	var docs []any
	for i := range 3 {
		docs = append(docs, bson.D{{Key: "_id", Value: fmt.Sprintf("old%d@example.com", i)}, {Key: "email", Value: "x"}, {Key: "invitation", Value: "leg"}})
	}
	if _, err := db.Collection(persist.RegistrationsCollection).InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureSchema(ctx); err != nil {
		t.Fatal(err)
	}
	if taken, unseated, _ := st.Seats(ctx, "leg"); len(taken) != 3 || unseated != 0 {
		t.Fatalf("seats %v, %d unseated; want 3 seats", taken, unseated)
	}
	if out, _ := st.Persist(ctx, rows("leg", "p")); out[0].Outcome != persist.Refused {
		t.Fatalf("at max 2 with 3 registrations: %v, want Refused", outcomes(out))
	}
	if err := st.SetMaxUses(ctx, "leg", 2, 3); err != nil {
		t.Fatal(err)
	}
	for _, fresh := range []*persist.Store{st, persist.NewStore(db, nil, nil)} {
		if out, _ := fresh.Persist(ctx, rows("leg", "q")); out[0].Outcome != persist.Refused {
			t.Fatalf("after a raise to 3 with 3 registrations: %v, want Refused", outcomes(out))
		}
	}
	if n, _ := st.Count(ctx, "leg"); n != 3 {
		t.Fatalf("%d registrations, want 3", n)
	}
}

// TestCapCountsSeatsAboveALoweredMax: a seat left at or above a lowered
// max_uses (a gap from duplicate rows) counts; the process refuses once the
// code holds the new max, and a reseat moves it below.
func TestCapCountsSeatsAboveALoweredMax(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	if err := st.CreateInvitation(ctx, invite.Invitation{Code: "gap", MaxUses: 10}); err != nil {
		t.Fatal(err)
	}
	st.Persist(ctx, rows("gap", "d0", "d1", "d2"))
	// Three repeats hold seats in flight, so the new row lands past them.
	if out, err := st.Persist(ctx, rows("gap", "d0", "d1", "d2", "n0")); err != nil || out[3].Outcome != persist.Written {
		t.Fatal(outcomes(out), err)
	}
	if err := st.SetMaxUses(ctx, "gap", 10, 5); err != nil {
		t.Fatal(err)
	}
	out, err := st.Persist(ctx, rows("gap", "x0", "x1"))
	if err != nil || out[0].Outcome != persist.Written || out[1].Outcome != persist.Refused {
		t.Fatalf("after lowering to 5 with 4 registrations: %v %v, want Written, Refused", outcomes(out), err)
	}
	if err := st.Reseat(ctx, "gap", 5); err != nil {
		t.Fatal(err)
	}
	checkSeats(t, st, "gap", 5)
}

// TestCapWaitsForAnUnusableInvitation: max_uses written as a string by
// another tool makes the code unusable; its rows are not written and not
// refused (Failed: they wait in Redis), and are written once it is fixed.
func TestCapWaitsForAnUnusableInvitation(t *testing.T) {
	ctx := context.Background()
	st, db := newStore(t)
	if err := st.CreateInvitation(ctx, invite.Invitation{Code: "bad", MaxUses: 10}); err != nil {
		t.Fatal(err)
	}
	set := func(v any) {
		if _, err := db.Collection(persist.InvitationsCollection).UpdateOne(ctx, bson.D{{Key: "_id", Value: "bad"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "max_uses", Value: v}}}}); err != nil {
			t.Fatal(err)
		}
	}
	set("10")
	if out, err := st.Persist(ctx, rows("bad", "u")); err != nil || out[0].Outcome != persist.Failed {
		t.Fatalf("unusable invitation: %v %v, want Failed", outcomes(out), err)
	}
	set(int32(10))
	if out, err := st.Persist(ctx, rows("bad", "u")); err != nil || out[0].Outcome != persist.Written {
		t.Fatalf("after the fix: %v %v, want Written", outcomes(out), err)
	}
}

// TestCapBatchWithRepeatsAndTwoCodes: one email twice and on two codes in
// one batch, on codes of 2.
func TestCapBatchWithRepeatsAndTwoCodes(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	for _, c := range []string{"p", "q"} {
		if err := st.CreateInvitation(ctx, invite.Invitation{Code: c, MaxUses: 2}); err != nil {
			t.Fatal(err)
		}
	}
	b := append(append(rows("p", "e", "e"), rows("q", "e", "f")...), rows("p", "g", "h")...)
	out, err := st.Persist(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	want := []persist.Outcome{persist.Written, persist.AlreadyWritten, persist.Conflict, persist.Written, persist.Written, persist.Refused}
	if fmt.Sprint(outcomes(out)) != fmt.Sprint(want) {
		t.Fatalf("outcomes %v, want %v", outcomes(out), want)
	}
	checkSeats(t, st, "p", 2)
	checkSeats(t, st, "q", 2)
}
