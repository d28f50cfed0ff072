package persist

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/testenv"
)

// newSeatsReserver returns a MongoReserver on a fresh database of the
// embedded MongoDB-wire server.
func newSeatsReserver(t *testing.T) *MongoReserver {
	t.Helper()
	st := NewStore(testenv.MongoDatabase(t), nil, nil)
	m := NewMongoReserver(st)
	if err := st.EnsureSchema(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := m.EnsureSchema(context.Background()); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestReleaseSeatPastDeadline: a seat the request no longer needs is given
// back even when the request's deadline has passed; otherwise it stays
// taken for good.
func TestReleaseSeatPastDeadline(t *testing.T) {
	m := newSeatsReserver(t)
	bg := context.Background()
	if _, err := m.seats.InsertOne(bg, bson.D{{Key: "_id", Value: seatID("rel", 0)}, {Key: "code", Value: "rel"}, {Key: "k", Value: 0}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithDeadline(bg, time.Now().Add(-time.Second))
	defer cancel()
	if err := m.releaseSeat(ctx, "rel", 0); err != nil {
		t.Fatalf("release past the deadline: %v", err)
	}
	if n, err := m.Taken(bg, "rel"); err != nil || n != 0 {
		t.Fatalf("%d seats taken (%v), want 0", n, err)
	}
}

// TestOwnerReadsAgain: after a duplicate key, owner keeps reading until the
// registration that caused it is visible, here one written 100 ms later.
func TestOwnerReadsAgain(t *testing.T) {
	m := newSeatsReserver(t)
	bg := context.Background()
	for _, c := range []string{"mine", "theirs"} {
		if err := m.st.CreateInvitation(bg, invite.Invitation{Code: c, MaxUses: 10}); err != nil {
			t.Fatal(err)
		}
	}
	r := invite.Reservation{Code: "mine", Canonical: "late@example.com", Email: "late@example.com", ReservedAt: time.Now()}
	go func() {
		time.Sleep(100 * time.Millisecond)
		other := r
		other.Code = "theirs"
		if _, err := m.st.Persist(bg, []invite.Reservation{other}); err != nil {
			t.Error(err)
		}
	}()
	res, err := m.owner(bg, r)
	if err != nil || res.Outcome != Conflict || res.Owner != "theirs" {
		t.Fatalf("owner = %+v, %v; want Conflict with theirs", res, err)
	}
	// Nothing there at all: an error once the attempts are spent, never an
	// outcome that would let the caller answer 200 or 409.
	r.Canonical = "nobody@example.com"
	if res, err := m.owner(bg, r); err == nil {
		t.Fatalf("owner of a missing registration = %+v, want an error", res)
	}
}

// TestMongoReserverRace: the same emails on three codes at once, straight
// on the MongoDB-wire server with no request deadline: each email is
// created on exactly one code and refused on the others (never "store
// unavailable"), and every refused request gave its seat back.
func TestMongoReserverRace(t *testing.T) {
	m := newSeatsReserver(t)
	bg := context.Background()
	codes := []string{"r1", "r2", "r3"}
	for _, c := range codes {
		if err := m.st.CreateInvitation(bg, invite.Invitation{Code: c, MaxUses: 1000}); err != nil {
			t.Fatal(err)
		}
	}
	const emails = 40
	type answer struct {
		email, code string
		res         invite.Result
		err         error
	}
	answers := make(chan answer, emails*len(codes))
	sem := make(chan struct{}, 12)
	var wg sync.WaitGroup
	for i := 0; i < emails; i++ {
		a, err := email.Parse(fmt.Sprintf("race-%d@example.com", i), email.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range codes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				res, err := m.Reserve(bg, c, a)
				answers <- answer{a.Canonical, c, res, err}
			}()
		}
	}
	wg.Wait()
	close(answers)
	won := map[string]string{}
	for a := range answers {
		switch {
		case a.err == nil && a.res.Outcome == invite.Created:
			if prev, ok := won[a.email]; ok {
				t.Fatalf("%s created on %s and %s", a.email, prev, a.code)
			}
			won[a.email] = a.code
		case errors.Is(a.err, invite.ErrEmailTaken) && !errors.Is(a.err, invite.ErrUnavailable):
		default:
			t.Fatalf("%s on %s: %+v, %v", a.email, a.code, a.res, a.err)
		}
	}
	if len(won) != emails {
		t.Fatalf("%d emails created, want %d", len(won), emails)
	}
	counts, err := m.st.Counts(bg)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range codes {
		if n, err := m.Taken(bg, c); err != nil || n != counts[c] {
			t.Fatalf("%s: %d seats taken (%v), %d registrations", c, n, err, counts[c])
		}
	}
}
