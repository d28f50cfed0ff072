package persist_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
)

// checkSeats fails unless code's registrations are at most maxUses, each
// on its own seat below maxUses.
func checkSeats(tb testing.TB, st *persist.Store, code string, maxUses int) int {
	tb.Helper()
	taken, unseated, err := st.Seats(context.Background(), code)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := st.Count(context.Background(), code)
	if err != nil {
		tb.Fatal(err)
	}
	if unseated != 0 || len(taken) != n {
		tb.Fatalf("%s: %d registrations, %d seats, %d unseated", code, n, len(taken), unseated)
	}
	seen := map[int]bool{}
	for _, k := range taken {
		if k >= maxUses || seen[k] {
			tb.Fatalf("%s: seat %d taken twice or past max_uses %d (%v)", code, k, maxUses, taken)
		}
		seen[k] = true
	}
	if n > maxUses {
		tb.Fatalf("I1: MongoDB holds %d registrations of %s for max_uses %d", n, code, maxUses)
	}
	return n
}

// TestPersistHoldsTheCap: three stores (three processes' worth of seat
// knowledge) on one real MongoDB-wire server write 60 distinct emails,
// each handed to two of them at once, on a code of 10 while other codes
// are written too. MongoDB ends with exactly 10 registrations on it, on
// distinct seats; every other email is Refused and written nowhere; the
// written ones are reported Written exactly once.
func TestPersistHoldsTheCap(t *testing.T) {
	ctx := context.Background()
	st0, db := newStore(t)
	if err := st0.CreateInvitation(ctx, invite.Invitation{Code: "cap", MaxUses: 10}); err != nil {
		t.Fatal(err)
	}
	createCodes(t, st0, "other")
	stores := []*persist.Store{st0, persist.NewStore(db, nil, nil), persist.NewStore(db, nil, nil)}
	const n = 60
	rows := make([]invite.Reservation, n)
	for i := range rows {
		em := fmt.Sprintf("cap%d@example.com", i)
		rows[i] = invite.Reservation{ID: strconv.Itoa(i), Code: "cap", Canonical: em, Email: em, ReservedAt: time.Now()}
	}
	var mu sync.Mutex
	written := map[string]int{}
	refused := map[string]bool{}
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := stores[w%len(stores)]
			// Worker w writes rows w%3, w%3+3, ... in batches of 5,
			// mixed with rows of another code; two workers share each row.
			var mine []invite.Reservation
			for i := w % 3; i < n; i += 3 {
				mine = append(mine, rows[i])
			}
			for len(mine) > 0 {
				b := mine[:min(5, len(mine))]
				batch := append([]invite.Reservation{{Code: "other", Canonical: fmt.Sprintf("o%d-%d@example.com", w, len(mine)), Email: "o@example.com"}}, b...)
				out, err := st.Persist(ctx, batch)
				if err != nil {
					t.Error(err)
					return
				}
				var again []invite.Reservation
				for i, r := range out[1:] {
					mu.Lock()
					switch r.Outcome {
					case persist.Written:
						written[b[i].Canonical]++
					case persist.Refused:
						refused[b[i].Canonical] = true
					case persist.AlreadyWritten:
					case persist.Failed:
						again = append(again, b[i])
					default:
						t.Errorf("%s: outcome %v", b[i].Canonical, r.Outcome)
					}
					mu.Unlock()
				}
				mine = append(again, mine[len(b):]...)
			}
		}()
	}
	wg.Wait()
	if got := checkSeats(t, st0, "cap", 10); got != 10 {
		t.Fatalf("registrations on cap = %d, want 10", got)
	}
	for em, k := range written {
		if k != 1 {
			t.Errorf("%s reported Written %d times", em, k)
		}
		if _, ok, _ := st0.Registration(ctx, em); !ok {
			t.Errorf("%s reported Written but not in MongoDB", em)
		}
	}
	if len(written) != 10 {
		t.Errorf("%d emails reported Written, want 10", len(written))
	}
	for em := range refused {
		if written[em] > 0 {
			t.Errorf("%s both Written and Refused", em)
		}
		if _, ok, _ := st0.Registration(ctx, em); ok {
			t.Errorf("%s Refused but in MongoDB", em)
		}
	}
	if len(refused) != n-10 {
		t.Errorf("%d emails Refused, want %d", len(refused), n-10)
	}
	checkSeats(t, st0, "other", 1000)
}

// TestPersistSeesARaise: a full code refuses; after max_uses is raised the
// same process writes onto the new seats at once.
func TestPersistSeesARaise(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	if err := st.CreateInvitation(ctx, invite.Invitation{Code: "r", MaxUses: 2}); err != nil {
		t.Fatal(err)
	}
	rows := func(names ...string) []invite.Reservation {
		var out []invite.Reservation
		for _, n := range names {
			out = append(out, invite.Reservation{Code: "r", Canonical: n + "@example.com", Email: n + "@example.com"})
		}
		return out
	}
	out, err := st.Persist(ctx, rows("a", "b", "c"))
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Outcome != persist.Written || out[1].Outcome != persist.Written || out[2].Outcome != persist.Refused {
		t.Fatalf("outcomes %+v, want Written, Written, Refused", out)
	}
	// A repeat of a written email on the full code is AlreadyWritten.
	if out, _ := st.Persist(ctx, rows("a")); out[0].Outcome != persist.AlreadyWritten {
		t.Fatalf("repeat on a full code: %+v, want AlreadyWritten", out[0])
	}
	if err := st.SetMaxUses(ctx, "r", 2, 3); err != nil {
		t.Fatal(err)
	}
	out, err = st.Persist(ctx, rows("c", "d"))
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Outcome != persist.Written || out[1].Outcome != persist.Refused {
		t.Fatalf("after the raise: %+v, want Written, Refused", out)
	}
	checkSeats(t, st, "r", 3)
	// Without a usable invitation nothing is decided: the row is Failed
	// (retried, the lag alert fires), never Refused (settled, lost).
	if out, _ := st.Persist(ctx, []invite.Reservation{{Code: "gone", Canonical: "x@example.com", Email: "x@example.com"}}); out[0].Outcome != persist.Failed {
		t.Fatalf("a code without invitation: %+v, want Failed", out[0])
	}
}

// TestLegacyRegistrationsGetSeats: registrations written before seats
// existed get one at start (EnsureSchema), lowest first, up to max_uses;
// they count against the cap, and a lowered max_uses moves seats down.
func TestLegacyRegistrationsGetSeats(t *testing.T) {
	ctx := context.Background()
	db := testenv.MongoDatabase(t)
	old := persist.NewStore(db, nil, nil)
	if err := old.CreateInvitation(ctx, invite.Invitation{Code: "l", MaxUses: 4}); err != nil {
		t.Fatal(err)
	}
	var docs []any
	for i := 0; i < 3; i++ {
		docs = append(docs, bson.D{{Key: "_id", Value: fmt.Sprintf("old%d@example.com", i)}, {Key: "email", Value: "x"}, {Key: "invitation", Value: "l"}})
	}
	if _, err := db.Collection(persist.RegistrationsCollection).InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}
	st := persist.NewStore(db, nil, nil)
	if err := st.EnsureSchema(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureSchema(ctx); err != nil { // twice: idempotent
		t.Fatal(err)
	}
	checkSeats(t, st, "l", 4)
	out, err := st.Persist(ctx, []invite.Reservation{
		{Code: "l", Canonical: "new1@example.com", Email: "new1@example.com"},
		{Code: "l", Canonical: "new2@example.com", Email: "new2@example.com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if w, r := count(out, persist.Written), count(out, persist.Refused); w != 1 || r != 1 {
		t.Fatalf("outcomes %+v, want one Written and one Refused (3 old + 1 new = 4)", out)
	}
	if n := checkSeats(t, st, "l", 4); n != 4 {
		t.Fatalf("%d registrations, want 4", n)
	}
}

// TestReseatMovesSeatsBelowANewMax: after max_uses is lowered, the
// registrations on seats at or above it move onto free ones below, so the
// code refuses once it holds the new max.
func TestReseatMovesSeatsBelowANewMax(t *testing.T) {
	ctx := context.Background()
	st, db := newStore(t)
	if err := st.CreateInvitation(ctx, invite.Invitation{Code: "s", MaxUses: 10}); err != nil {
		t.Fatal(err)
	}
	// Seats 7, 8, 9 taken (as another writer with gaps would leave them).
	for k := 7; k < 10; k++ {
		if _, err := db.Collection(persist.RegistrationsCollection).InsertOne(ctx, bson.D{{Key: "_id", Value: fmt.Sprintf("h%d@example.com", k)},
			{Key: "invitation", Value: "s"}, {Key: "seat", Value: fmt.Sprintf("s#%d", k)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.SetMaxUses(ctx, "s", 10, 4); err != nil {
		t.Fatal(err)
	}
	if err := st.Reseat(ctx, "s", 4); err != nil {
		t.Fatal(err)
	}
	checkSeats(t, st, "s", 4)
	if err := st.Reseat(ctx, "s", 2); err == nil {
		t.Fatal("reseat of 3 registrations onto 2 seats succeeded")
	}
	out, err := st.Persist(ctx, []invite.Reservation{
		{Code: "s", Canonical: "n1@example.com", Email: "n1@example.com"},
		{Code: "s", Canonical: "n2@example.com", Email: "n2@example.com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if w, r := count(out, persist.Written), count(out, persist.Refused); w != 1 || r != 1 {
		t.Fatalf("outcomes %+v, want one Written and one Refused", out)
	}
	checkSeats(t, st, "s", 4)
}

// TestBlockSeatsHoldsALoweredMax: lowering max_uses 10 -> 4 moves the
// registrations on seats 7, 8, 9 below 4 and blocks seats 4..9, so a
// process that never read the code's seats (any seat below 10 looks free to
// it) writes one more and is refused the rest; the blocks count as no
// registration. Raising to 6 gives seats 4 and 5 back, and only those.
func TestBlockSeatsHoldsALoweredMax(t *testing.T) {
	ctx := context.Background()
	st, db := newStore(t)
	if err := st.CreateInvitation(ctx, invite.Invitation{Code: "b", MaxUses: 10}); err != nil {
		t.Fatal(err)
	}
	for k := 7; k < 10; k++ {
		if _, err := db.Collection(persist.RegistrationsCollection).InsertOne(ctx, bson.D{{Key: "_id", Value: fmt.Sprintf("h%d@example.com", k)},
			{Key: "invitation", Value: "b"}, {Key: "seat", Value: fmt.Sprintf("b#%d", k)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.BlockSeats(ctx, "b", 4, 10); err != nil {
		t.Fatal(err)
	}
	if err := st.BlockSeats(ctx, "b", 4, 10); err != nil {
		t.Fatalf("a repeat: %v", err)
	}
	checkSeats(t, st, "b", 4)
	if err := st.BlockSeats(ctx, "b", 2, 10); !errors.Is(err, persist.ErrChanged) {
		t.Fatalf("blocking down to 2 with 3 registrations: %v, want ErrChanged", err)
	}
	counts, err := st.Counts(ctx)
	if err != nil || counts["b"] != 3 || len(counts) != 1 {
		t.Fatalf("counts %v %v, want b: 3 and nothing else", counts, err)
	}
	// MongoDB still says 10: the blocks alone hold the cap at 4.
	late := persist.NewStore(db, nil, nil)
	out, err := late.Persist(ctx, rows("b", "l0", "l1", "l2"))
	if err != nil || count(out, persist.Written) != 1 || count(out, persist.Refused) != 2 {
		t.Fatalf("outcomes %v %v, want one Written and two Refused", outcomes(out), err)
	}
	checkSeats(t, st, "b", 4)

	if err := st.UnblockSeats(ctx, "b", 6); err != nil {
		t.Fatal(err)
	}
	if err := st.SetMaxUses(ctx, "b", 10, 6); err != nil {
		t.Fatal(err)
	}
	out, err = late.Persist(ctx, rows("b", "m0", "m1", "m2"))
	if err != nil || count(out, persist.Written) != 2 || count(out, persist.Refused) != 1 {
		t.Fatalf("after the raise to 6: %v %v, want two Written and one Refused", outcomes(out), err)
	}
	checkSeats(t, st, "b", 6)
}

// TestReconcilerRefusesPastTheCap hands the reconciler more reservations
// than seats, as a stale Redis would: MongoDB says max_uses 5, Redis was
// seeded with 30 seats over 4 shards. Two reconcilers on two stores (two
// processes) write; MongoDB ends with exactly 5 registrations, each on its
// own seat, the other 25 are counted refused and settled, and only the 5
// registered get an instructions email.
func TestReconcilerRefusesPastTheCap(t *testing.T) {
	for _, l := range []struct {
		name    string
		cluster bool
	}{{"node", false}, {"cluster", true}} {
		t.Run(l.name, func(t *testing.T) {
			ctx := context.Background()
			st, db := newStore(t)
			if err := st.CreateInvitation(ctx, invite.Invitation{Code: "over", MaxUses: 5}); err != nil {
				t.Fatal(err)
			}
			rdb := testenv.SharedRedisClient(t, l.cluster)
			res := reserve.New(rdb, reserve.Config{Namespace: testenv.KeyPrefix(t), Shards: 4})
			if err := res.SeedBuckets(ctx, invite.Invitation{Code: "over", MaxUses: 30}, 0); err != nil {
				t.Fatal(err)
			}
			if err := res.MarkSeeded(ctx); err != nil {
				t.Fatal(err)
			}
			f := fixture{st: st, res: res}
			f.reserve(t, "over", testenv.Emails("over", 30)...)
			m1, m2 := persist.NewMetrics(nil), persist.NewMetrics(nil)
			second := persist.NewStore(db, nil, nil)
			f.start(t, persist.ReconcilerConfig{Consumer: "a", Metrics: m1})
			fixture{st: second, res: res}.start(t, persist.ReconcilerConfig{Consumer: "b", Metrics: m2})
			waitFor(t, "empty streams", func() bool { return f.backlog(t) == 0 })
			if n := checkSeats(t, st, "over", 5); n != 5 {
				t.Fatalf("registrations = %d, want 5", n)
			}
			rows := func(result string) float64 {
				return testutil.ToFloat64(m1.Rows.WithLabelValues(result)) + testutil.ToFloat64(m2.Rows.WithLabelValues(result))
			}
			if w, r := rows("written"), rows("refused"); w != 5 || r != 25 {
				t.Fatalf("written %v, refused %v; want 5 and 25", w, r)
			}
			mail, err := st.MailCounts(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if total := mail[persist.MailPending] + mail[persist.MailSent] + mail[persist.MailFailed]; total != 5 {
				t.Fatalf("instructions emails queued: %d, want 5 (%v)", total, mail)
			}
			var inMongo int
			for _, e := range testenv.Emails("over", 30) {
				if _, ok, _ := st.Registration(ctx, strings.ToLower(e)); ok {
					inMongo++
				}
			}
			if inMongo != 5 {
				t.Fatalf("%d of the 30 emails in MongoDB, want 5", inMongo)
			}
		})
	}
}

func count(out []persist.Result, o persist.Outcome) (n int) {
	for _, r := range out {
		if r.Outcome == o {
			n++
		}
	}
	return n
}
