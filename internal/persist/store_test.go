package persist_test

import (
	"context"
	"errors"
	"sort"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/testenv"
)

func newStore(tb testing.TB) (*persist.Store, *mongo.Database) {
	tb.Helper()
	db := testenv.MongoDatabase(tb)
	st := persist.NewStore(db, nil, nil)
	if err := st.EnsureSchema(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return st, db
}

// createCodes creates invitations of max_uses 1000 for codes: MongoDB
// writes registrations only on a code it knows, within its max_uses.
func createCodes(tb testing.TB, st *persist.Store, codes ...string) {
	tb.Helper()
	for _, c := range codes {
		if err := st.CreateInvitation(context.Background(), invite.Invitation{Code: c, MaxUses: 1000}); err != nil {
			tb.Fatal(err)
		}
	}
}

func TestInvitations(t *testing.T) {
	ctx := context.Background()
	st, db := newStore(t)
	if err := st.CreateInvitation(ctx, invite.Invitation{Code: "a", MaxUses: 5}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateInvitation(ctx, invite.Invitation{Code: "a", MaxUses: 5}); !errors.Is(err, persist.ErrExists) {
		t.Fatalf("duplicate create: %v, want ErrExists", err)
	}
	for _, bad := range []invite.Invitation{{Code: "b", MaxUses: 0}, {Code: "b", MaxUses: 1001}, {Code: "b/c", MaxUses: 1}} {
		if err := st.CreateInvitation(ctx, bad); !errors.Is(err, persist.ErrInvalid) {
			t.Fatalf("create %+v: %v, want ErrInvalid", bad, err)
		}
	}
	// Documents written by other tools, with every numeric type MongoDB
	// shells produce, and some that are unusable.
	docs := []any{
		bson.D{{Key: "_id", Value: "i64"}, {Key: "max_uses", Value: int64(3)}},
		bson.D{{Key: "_id", Value: "dbl"}, {Key: "max_uses", Value: 4.0}},
		bson.D{{Key: "_id", Value: "str"}, {Key: "max_uses", Value: "4"}},
		bson.D{{Key: "_id", Value: "frac"}, {Key: "max_uses", Value: 4.5}},
	}
	if _, err := db.Collection(persist.InvitationsCollection).InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}
	invs, err := st.Invitations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, i := range invs {
		got = append(got, i.Code)
	}
	sort.Strings(got)
	if want := []string{"a", "dbl", "i64"}; !equal(got, want) {
		t.Fatalf("usable invitations %v, want %v", got, want)
	}
	if _, ok, err := st.Invitation(ctx, "str"); ok || err != nil {
		t.Fatalf("Invitation(str) ok=%v err=%v; want unusable, no error", ok, err)
	}
	if inv, ok, err := st.Invitation(ctx, "dbl"); !ok || err != nil || inv.MaxUses != 4 {
		t.Fatalf("Invitation(dbl) = %+v, %v, %v", inv, ok, err)
	}
	if _, ok, err := st.Invitation(ctx, "none"); ok || err != nil {
		t.Fatalf("Invitation(none) ok=%v err=%v", ok, err)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCheckShards(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	if err := st.CheckShards(ctx, 16); err != nil {
		t.Fatal(err)
	}
	if err := st.CheckShards(ctx, 16); err != nil {
		t.Fatalf("same count again: %v", err)
	}
	if err := st.CheckShards(ctx, 4); !errors.Is(err, persist.ErrSettingsMismatch) {
		t.Fatalf("other count: %v, want ErrSettingsMismatch", err)
	}
	if err := st.CheckEmailRule(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := st.CheckEmailRule(ctx, false); err != nil {
		t.Fatalf("same rule again: %v", err)
	}
	if err := st.CheckEmailRule(ctx, true); !errors.Is(err, persist.ErrSettingsMismatch) {
		t.Fatalf("other email rule: %v, want ErrSettingsMismatch", err)
	}
}

// TestPersistOutcomes: a batch mixing new, already written and conflicting
// registrations reports each one right, and writes the new ones once.
func TestPersistOutcomes(t *testing.T) {
	ctx := context.Background()
	st, db := newStore(t)
	createCodes(t, st, "c", "d")
	at := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	first := []invite.Reservation{
		{ID: "1-0", Code: "c", Canonical: "a@x.io", Email: "a@x.io", ReservedAt: at},
		{ID: "1-1", Code: "d", Canonical: "b@x.io", Email: "b@x.io", ReservedAt: at},
	}
	res, err := st.Persist(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Outcome != persist.Written {
			t.Fatalf("first[%d] = %v, want Written", i, r.Outcome)
		}
	}
	second := []invite.Reservation{
		{ID: "2-0", Code: "c", Canonical: "new@x.io", Email: "New@x.io", ReservedAt: at},
		{ID: "1-0", Code: "c", Canonical: "a@x.io", Email: "a@x.io", ReservedAt: at}, // redelivered
		{ID: "2-1", Code: "c", Canonical: "b@x.io", Email: "b@x.io", ReservedAt: at}, // belongs to d
	}
	res, err = st.Persist(ctx, second)
	if err != nil {
		t.Fatal(err)
	}
	want := []persist.Result{{Outcome: persist.Written}, {Outcome: persist.AlreadyWritten}, {Outcome: persist.Conflict, Owner: "d"}}
	for i := range want {
		if res[i] != want[i] {
			t.Fatalf("second[%d] = %+v, want %+v", i, res[i], want[i])
		}
	}
	n, err := db.Collection(persist.RegistrationsCollection).CountDocuments(ctx, bson.D{})
	if err != nil || n != 3 {
		t.Fatalf("registrations = %d, %v; want 3", n, err)
	}
	reg, ok, err := st.Registration(ctx, "new@x.io")
	if err != nil || !ok || reg.Email != "New@x.io" || reg.Invitation != "c" || !reg.ReservedAt.Equal(at) || reg.PersistedAt.IsZero() {
		t.Fatalf("stored registration = %+v, %v, %v", reg, ok, err)
	}
	counts, err := st.Counts(ctx)
	if err != nil || counts["c"] != 2 || counts["d"] != 1 {
		t.Fatalf("counts = %v, %v", counts, err)
	}
}

// TestEnsureSchemaIsIdempotent: every process start runs it; the second
// run must neither fail nor crash the MongoDB-wire server.
func TestEnsureSchemaIsIdempotent(t *testing.T) {
	st, _ := newStore(t) // the first run
	for i := 0; i < 2; i++ {
		if err := st.EnsureSchema(context.Background()); err != nil {
			t.Fatalf("run %d: %v", i+2, err)
		}
	}
}

// TestConfirmWindowStore: confirm_window_ms through create, import and
// SetConfirmWindow; bad windows are refused with nothing written.
func TestConfirmWindowStore(t *testing.T) {
	ctx := context.Background()
	st, db := newStore(t)
	coll := db.Collection(persist.InvitationsCollection)
	field := func(code string) bson.RawValue {
		t.Helper()
		raw, err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: code}}).Raw()
		if err != nil {
			t.Fatal(err)
		}
		return raw.Lookup("confirm_window_ms")
	}
	if err := st.CreateInvitation(ctx, invite.Invitation{Code: "w", MaxUses: 5, ConfirmWindow: 30 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	if v := field("w"); v.Type != bson.TypeInt64 || v.Int64() != 1800000 {
		t.Fatalf("confirm_window_ms = %v, want the long 1800000", v)
	}
	if err := st.CreateInvitation(ctx, invite.Invitation{Code: "none", MaxUses: 5}); err != nil {
		t.Fatal(err)
	}
	if v := field("none"); v.Type != 0 {
		t.Fatalf("no window written as %v, want the field absent", v)
	}
	for _, d := range []time.Duration{time.Millisecond, -time.Second, 8 * 24 * time.Hour, time.Second + time.Microsecond} {
		if err := st.CreateInvitation(ctx, invite.Invitation{Code: "bad", MaxUses: 5, ConfirmWindow: d}); !errors.Is(err, persist.ErrInvalid) {
			t.Fatalf("create with window %v: %v, want ErrInvalid", d, err)
		}
		if err := st.CreateInvitations(ctx, []invite.Invitation{{Code: "ok", MaxUses: 1}, {Code: "bad", MaxUses: 5, ConfirmWindow: d}}); !errors.Is(err, persist.ErrInvalid) {
			t.Fatalf("import with window %v: %v, want ErrInvalid", d, err)
		}
		if err := st.SetConfirmWindow(ctx, "w", d); !errors.Is(err, persist.ErrInvalid) {
			t.Fatalf("SetConfirmWindow(%v): %v, want ErrInvalid", d, err)
		}
	}
	if n, _ := coll.CountDocuments(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: bson.A{"ok", "bad"}}}}}); n != 0 {
		t.Fatalf("refused creates wrote %d invitations", n)
	}
	if err := st.CreateInvitations(ctx, []invite.Invitation{{Code: "imp", MaxUses: 1, ConfirmWindow: 7 * 24 * time.Hour}}); err != nil {
		t.Fatal(err)
	}
	if inv, ok, err := st.Invitation(ctx, "imp"); !ok || err != nil || inv.ConfirmWindow != 7*24*time.Hour {
		t.Fatalf("imported: %+v, %v, %v; want a 7-day window", inv, ok, err)
	}
	if err := st.SetConfirmWindow(ctx, "none", time.Second); err != nil {
		t.Fatal(err)
	}
	if inv, _, _ := st.Invitation(ctx, "none"); inv.ConfirmWindow != time.Second || inv.MaxUses != 5 {
		t.Fatalf("after SetConfirmWindow(1s): %+v", inv)
	}
	if err := st.SetConfirmWindow(ctx, "w", 0); err != nil {
		t.Fatal(err)
	}
	if v := field("w"); v.Type != 0 {
		t.Fatalf("window off left confirm_window_ms %v, want it removed", v)
	}
	if err := st.SetConfirmWindow(ctx, "nope", time.Minute); !errors.Is(err, persist.ErrNotFound) {
		t.Fatalf("SetConfirmWindow(nope): %v, want ErrNotFound", err)
	}
}
