package persist

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/testenv"
)

// newAdmitStore returns a Store on a fresh database with the invitations
// invs.
func newAdmitStore(t *testing.T, invs ...invite.Invitation) *Store {
	t.Helper()
	st := NewStore(testenv.MongoDatabase(t), nil, nil)
	ctx := context.Background()
	if err := st.EnsureSchema(ctx); err != nil {
		t.Fatal(err)
	}
	for _, inv := range invs {
		if err := st.CreateInvitation(ctx, inv); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

func reservations(code, prefix string, n int) []invite.Reservation {
	out := make([]invite.Reservation, n)
	for i, e := range testenv.Emails(prefix, n) {
		out[i] = invite.Reservation{ID: fmt.Sprintf("0-%d", i), Code: code, Canonical: e, Email: e, ReservedAt: time.Now()}
	}
	return out
}

// seatsOfCode returns code's seats, failing the test on an error.
func seatsOfCode(t *testing.T, st *Store, code string) []seatDoc {
	t.Helper()
	seats, err := st.seatsOf(context.Background(), []string{code})
	if err != nil {
		t.Fatal(err)
	}
	return seats[code]
}

// checkCap fails the test unless code has at most max registrations, each
// holding a seat below max, and no email holds two seats.
func checkCap(t *testing.T, st *Store, code string, max int) (registrations int) {
	t.Helper()
	ctx := context.Background()
	regs, err := st.registeredEmails(ctx, []string{code})
	if err != nil {
		t.Fatal(err)
	}
	if len(regs[code]) > max {
		t.Fatalf("%s: %d registrations in MongoDB, max_uses %d", code, len(regs[code]), max)
	}
	held := map[string]int{}
	for _, s := range seatsOfCode(t, st, code) {
		if s.K < 0 || s.K >= max {
			t.Errorf("%s: seat %d is outside [0, %d)", code, s.K, max)
		}
		held[s.Email]++
	}
	for _, e := range regs[code] {
		if held[e] == 0 {
			t.Errorf("%s: registration %s holds no seat", code, e)
		}
	}
	return len(regs[code])
}

func outcomes(res []Result) map[Outcome]int {
	out := map[Outcome]int{}
	for _, r := range res {
		out[r.Outcome]++
	}
	return out
}

// TestAdmitRefusesPastTheCap: Admit takes a seat per registration and
// refuses what does not fit, however many batches race on the code, from
// two stores (two replicas); a refused reservation is not written.
func TestAdmitRefusesPastTheCap(t *testing.T) {
	st := newAdmitStore(t, invite.Invitation{Code: "cap", MaxUses: 10})
	other := NewStore(st.db, nil, nil) // a second process on the same database
	rs := reservations("cap", "cap", 25)
	var mu sync.Mutex
	got := map[Outcome]int{}
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := st
			if i%2 == 1 {
				s = other
			}
			res, err := s.Admit(context.Background(), rs[i*5:(i+1)*5])
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for o, n := range outcomes(res) {
				got[o] += n
			}
		}()
	}
	wg.Wait()
	if got[Written] != 10 || got[Refused] != 15 {
		t.Fatalf("outcomes %v; want 10 written, 15 refused", got)
	}
	if n := checkCap(t, st, "cap", 10); n != 10 {
		t.Fatalf("%d registrations, want 10", n)
	}
	// Refused stays refused, written stays written.
	res, err := st.Admit(context.Background(), rs)
	if err != nil {
		t.Fatal(err)
	}
	if o := outcomes(res); o[AlreadyWritten] != 10 || o[Refused] != 15 {
		t.Fatalf("again: %v; want 10 already written, 15 refused", o)
	}
}

// TestAdmitReusesItsSeat: a writer that took a seat and died before the
// registration leaves the seat; the reservation delivered again keeps that
// seat instead of taking a second one.
func TestAdmitReusesItsSeat(t *testing.T) {
	ctx := context.Background()
	st := newAdmitStore(t, invite.Invitation{Code: "re", MaxUses: 3})
	r := reservations("re", "re", 1)[0]
	// The crash: seat 2 taken for r, no registration.
	if _, err := st.seats.InsertOne(ctx, seatDoc{ID: seatID("re", 2), Code: "re", K: 2, Email: r.Canonical, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for round, want := range []Outcome{Written, AlreadyWritten} {
		res, err := st.Admit(ctx, []invite.Reservation{r})
		if err != nil || res[0].Outcome != want {
			t.Fatalf("delivery %d: %+v, %v; want %v", round, res, err, want)
		}
		seats := seatsOfCode(t, st, "re")
		if len(seats) != 1 || seats[0].ID != seatID("re", 2) {
			t.Fatalf("delivery %d: seats %+v, want only re#2", round, seats)
		}
	}
	// Two seats for one email (two writers raced): the higher one goes.
	if _, err := st.seats.InsertOne(ctx, seatDoc{ID: seatID("re", 0), Code: "re", K: 0, Email: r.Canonical, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	res, err := st.Admit(ctx, reservations("re", "next", 2))
	if err != nil || outcomes(res)[Written] != 2 {
		t.Fatalf("next two: %+v, %v; want both written", res, err)
	}
	if n := checkCap(t, st, "re", 3); n != 3 {
		t.Fatalf("%d registrations, want 3", n)
	}
}

// TestAdmitSeatsLegacyRegistrations: registrations written without seats
// (before this release, or by an old replica during a rolling deploy)
// count against the cap.
func TestAdmitSeatsLegacyRegistrations(t *testing.T) {
	ctx := context.Background()
	st := newAdmitStore(t, invite.Invitation{Code: "old", MaxUses: 10})
	// Eight registrations from before seats.
	if _, err := st.Persist(ctx, reservations("old", "legacy", 8)); err != nil {
		t.Fatal(err)
	}
	res, err := st.Admit(ctx, reservations("old", "new", 5))
	if err != nil {
		t.Fatal(err)
	}
	if o := outcomes(res); o[Written] != 2 || o[Refused] != 3 {
		t.Fatalf("outcomes %v; want 2 written, 3 refused", o)
	}
	if n := checkCap(t, st, "old", 10); n != 10 {
		t.Fatalf("%d registrations, want 10", n)
	}

	// The store compared this code once; an old replica then writes
	// without seats, and the next batch notices from the counts.
	st2 := newAdmitStore(t, invite.Invitation{Code: "roll", MaxUses: 10})
	if res, err := st2.Admit(ctx, reservations("roll", "first", 4)); err != nil || outcomes(res)[Written] != 4 {
		t.Fatalf("first: %+v, %v", res, err)
	}
	if _, err := st2.Persist(ctx, reservations("roll", "oldreplica", 4)); err != nil {
		t.Fatal(err)
	}
	res, err = st2.Admit(ctx, reservations("roll", "later", 5))
	if err != nil {
		t.Fatal(err)
	}
	if o := outcomes(res); o[Written] != 2 || o[Refused] != 3 {
		t.Fatalf("after the old replica: %v; want 2 written, 3 refused", o)
	}
	if n := checkCap(t, st2, "roll", 10); n != 10 {
		t.Fatalf("%d registrations, want 10", n)
	}

	// More registrations than seats already (data from before seats on a
	// code over its cap): nothing to refuse there, but nothing added.
	st3 := newAdmitStore(t, invite.Invitation{Code: "over", MaxUses: 3})
	if _, err := st3.Persist(ctx, reservations("over", "over", 5)); err != nil {
		t.Fatal(err)
	}
	st3.SetMetrics(NewMetrics(nil))
	res, err = st3.Admit(ctx, reservations("over", "more", 2))
	if err != nil || outcomes(res)[Refused] != 2 {
		t.Fatalf("over the cap already: %+v, %v; want both refused", res, err)
	}
	if n, _ := st3.Count(ctx, "over"); n != 5 {
		t.Fatalf("%d registrations, want the 5 there were", n)
	}
	if len(seatsOfCode(t, st3, "over")) != 3 {
		t.Fatalf("seats %+v, want 3", seatsOfCode(t, st3, "over"))
	}
}

// TestAdmitAfterACut: a code cut below seats already taken (set-max down)
// moves those seats below the new maximum before it takes new ones, so its
// registrations stay within the new max_uses.
func TestAdmitAfterACut(t *testing.T) {
	ctx := context.Background()
	st := newAdmitStore(t, invite.Invitation{Code: "cut", MaxUses: 10})
	// Three registrations holding seats 7, 8 and 9.
	rs := reservations("cut", "cut", 3)
	for i, r := range rs {
		if _, err := st.seats.InsertOne(ctx, seatDoc{ID: seatID("cut", 7+i), Code: "cut", K: 7 + i, Email: r.Canonical, At: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if res, err := st.Admit(ctx, rs); err != nil || outcomes(res)[Written] != 3 {
		t.Fatalf("first three: %+v, %v", res, err)
	}
	if err := st.SetMaxUses(ctx, "cut", 10, 5); err != nil {
		t.Fatal(err)
	}
	// The store still remembers max_uses 10.
	res, err := st.Admit(ctx, reservations("cut", "after", 5))
	if err != nil {
		t.Fatal(err)
	}
	if o := outcomes(res); o[Written] != 2 || o[Refused] != 3 {
		t.Fatalf("after the cut: %v; want 2 written, 3 refused", o)
	}
	if n := checkCap(t, st, "cut", 5); n != 5 {
		t.Fatalf("%d registrations, want 5", n)
	}
}

// TestAdmitConflictGivesSeatBack: an email registered on another code
// takes no seat of this one for good.
func TestAdmitConflictGivesSeatBack(t *testing.T) {
	ctx := context.Background()
	st := newAdmitStore(t, invite.Invitation{Code: "a", MaxUses: 2}, invite.Invitation{Code: "b", MaxUses: 2})
	r := reservations("a", "x", 1)[0]
	if res, err := st.Admit(ctx, []invite.Reservation{r}); err != nil || res[0].Outcome != Written {
		t.Fatalf("on a: %+v, %v", res, err)
	}
	r.Code = "b"
	res, err := st.Admit(ctx, []invite.Reservation{r})
	if err != nil || res[0].Outcome != Conflict || res[0].Owner != "a" {
		t.Fatalf("on b: %+v, %v; want Conflict owned by a", res, err)
	}
	if s := seatsOfCode(t, st, "b"); len(s) != 0 {
		t.Fatalf("b's seats %+v, want none", s)
	}
	// Unknown code: refused, nothing written.
	r.Code, r.Canonical = "nope", "y@example.com"
	if res, err := st.Admit(ctx, []invite.Reservation{r}); err != nil || res[0].Outcome != Refused {
		t.Fatalf("unknown code: %+v, %v; want Refused", res, err)
	}
	if _, ok, _ := st.Registration(ctx, "y@example.com"); ok {
		t.Fatal("a reservation of an unknown code was written")
	}
	// The seats collection holds nothing that is not a seat.
	n, err := st.seats.CountDocuments(ctx, bson.D{{Key: "code", Value: bson.D{{Key: "$nin", Value: []string{"a", "b"}}}}})
	if err != nil || n != 0 {
		t.Fatalf("%d other seats (%v)", n, err)
	}
}

// TestReleaseStrandedSeats: a seat no registration holds and no pending
// reservation waits for, older than the bound, is given back; every other
// seat stays.
func TestReleaseStrandedSeats(t *testing.T) {
	ctx := context.Background()
	st := newAdmitStore(t, invite.Invitation{Code: "gc", MaxUses: 10})
	old, young := time.Now().Add(-time.Hour), time.Now()
	for _, d := range []seatDoc{
		{ID: seatID("gc", 5), Code: "gc", K: 5, Email: "lost@example.com", At: old},
		{ID: seatID("gc", 6), Code: "gc", K: 6, Email: "busy@example.com", At: young},
		{ID: seatID("gc", 7), Code: "gc", K: 7, Email: "pending@example.com", At: old},
		{ID: seatID("gc", 8), Code: "gc", K: 8},
	} {
		if _, err := st.seats.InsertOne(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if res, err := st.Admit(ctx, reservations("gc", "kept", 1)); err != nil || res[0].Outcome != Written {
		t.Fatalf("admit: %+v, %v", res, err)
	}
	n, err := st.ReleaseStrandedSeats(ctx, "gc", []string{"pending@example.com"}, time.Now().Add(-time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("released %d (%v), want 1", n, err)
	}
	left := map[string]bool{}
	for _, s := range seatsOfCode(t, st, "gc") {
		left[s.Email] = true
	}
	if left["lost@example.com"] || !left["busy@example.com"] || !left["pending@example.com"] || !left[""] || len(left) != 4 {
		// kept0@… (registered), busy, pending and the seat without an email
		t.Fatalf("seats left for %v", left)
	}
}
