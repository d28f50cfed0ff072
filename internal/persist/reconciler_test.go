package persist_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
	"github.com/invitegate/invitegate/internal/workflow"
)

type fixture struct {
	st  *persist.Store
	res *reserve.Reserver
	ns  string
	rdb *redis.Client
}

func newFixture(tb testing.TB, shards int, invs ...invite.Invitation) fixture {
	tb.Helper()
	ctx := context.Background()
	st, _ := newStore(tb)
	for _, inv := range invs {
		if err := st.CreateInvitation(ctx, inv); err != nil {
			tb.Fatal(err)
		}
	}
	rdb := redis.NewClient(&redis.Options{Addr: testenv.SharedRedis(tb), PoolSize: 32})
	tb.Cleanup(func() { rdb.Close() })
	ns := testenv.KeyPrefix(tb)
	res := reserve.New(rdb, reserve.Config{Namespace: ns, Shards: shards})
	if err := workflow.NewSignups(res, st, workflow.SignupsConfig{}).SeedIfNeeded(ctx); err != nil {
		tb.Fatal(err)
	}
	return fixture{st: st, res: res, ns: ns, rdb: rdb}
}

func (f fixture) reserve(tb testing.TB, code string, emails ...string) {
	tb.Helper()
	for _, e := range emails {
		a, err := email.Parse(e, email.Options{})
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := f.res.Reserve(context.Background(), code, a); err != nil {
			tb.Fatalf("reserve %s: %v", e, err)
		}
	}
}

// start runs a reconciler until the test ends; stop cancels it and waits.
func (f fixture) start(tb testing.TB, cfg persist.ReconcilerConfig) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rc := persist.NewReconciler(f.res, f.st, cfg)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); rc.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	tb.Cleanup(stop)
	return stop
}

func (f fixture) backlog(tb testing.TB) int64 {
	tb.Helper()
	var total int64
	for s := 0; s < f.res.Shards(); s++ {
		n, _, err := f.res.Backlog(context.Background(), s)
		if err != nil {
			tb.Fatal(err)
		}
		total += n
	}
	return total
}

// waitFor polls cond until it holds or 30s pass.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReconcilerDrains is I3 on the happy path: every reservation reaches
// MongoDB once, and the streams end empty.
func TestReconcilerDrains(t *testing.T) {
	f := newFixture(t, 4, invite.Invitation{Code: "r", MaxUses: 300})
	f.reserve(t, "r", testenv.Emails("d", 300)...)
	m := persist.NewMetrics(nil)
	f.start(t, persist.ReconcilerConfig{Consumer: "a", Batch: 64, Metrics: m, StatsEvery: 50 * time.Millisecond})
	waitFor(t, "300 registrations", func() bool {
		c, _ := f.st.Counts(context.Background())
		return c["r"] == 300
	})
	waitFor(t, "empty streams", func() bool { return f.backlog(t) == 0 })
	if got := testutil.ToFloat64(m.Rows.WithLabelValues("written")); got != 300 {
		t.Fatalf("written rows metric = %v, want 300", got)
	}
	waitFor(t, "lag back to 0", func() bool {
		for s := 0; s < 4; s++ {
			if testutil.ToFloat64(m.Lag.WithLabelValues(fmt.Sprint(s))) != 0 {
				return false
			}
		}
		return true
	})
}

// TestReconcilerTakesOver: a consumer that read a batch and died leaves it
// pending; another consumer claims it after ClaimIdle and writes it.
func TestReconcilerTakesOver(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1, invite.Invitation{Code: "t", MaxUses: 50})
	f.reserve(t, "t", testenv.Emails("t", 50)...)
	got, err := f.res.Read(ctx, 0, "dead", 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 { // the first read created the group
		got, err = f.res.Read(ctx, 0, "dead", 100, 0)
	}
	if err != nil || len(got) != 50 {
		t.Fatalf("dead consumer read %d, %v; want 50", len(got), err)
	}
	// The dead consumer even wrote half before dying: those come back as
	// duplicates and must count as written.
	if _, err := f.st.Persist(ctx, got[:25]); err != nil {
		t.Fatal(err)
	}
	m := persist.NewMetrics(nil)
	f.start(t, persist.ReconcilerConfig{Consumer: "b", ClaimIdle: 300 * time.Millisecond, Block: 100 * time.Millisecond, Metrics: m})
	waitFor(t, "empty stream", func() bool { return f.backlog(t) == 0 })
	c, _ := f.st.Counts(ctx)
	if c["t"] != 50 {
		t.Fatalf("registrations = %d, want 50", c["t"])
	}
	if d := testutil.ToFloat64(m.Rows.WithLabelValues("duplicate")); d != 25 {
		t.Fatalf("duplicates = %v, want 25", d)
	}
	if cl := testutil.ToFloat64(m.Claimed); cl != 50 {
		t.Fatalf("claimed = %v, want 50", cl)
	}
}

// slowConsumer starts a reconciler on f's streams whose MongoDB does not
// answer, holding for holdFor the batch it cannot write; stop ends it.
func slowConsumer(t *testing.T, f fixture, idle, holdFor time.Duration) (m *persist.Metrics, stop func()) {
	t.Helper()
	badClient, err := mongo.Connect(options.Client().ApplyURI("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=100&connectTimeoutMS=100"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { badClient.Disconnect(context.Background()) })
	bad := persist.NewStore(badClient.Database("x"), nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	m = persist.NewMetrics(nil)
	go func() {
		persist.NewReconciler(f.res, bad, persist.ReconcilerConfig{Consumer: "slow", ClaimIdle: idle, HoldFor: holdFor,
			WriteTimeout: 200 * time.Millisecond, DrainTimeout: time.Millisecond, Metrics: m}).Run(ctx)
		close(done)
	}()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	waitFor(t, "the slow consumer's failed writes", func() bool { return testutil.ToFloat64(m.Errors.WithLabelValues("mongo")) >= 2 })
	return m, stop
}

// TestReconcilerKeepsWhatItRetries: a worker retrying a batch on a MongoDB
// that does not answer keeps its claim on it (within HoldFor), so another
// consumer does not take the batch over and write it alongside; once the
// worker is gone, the other one takes it over and writes it.
func TestReconcilerKeepsWhatItRetries(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1, invite.Invitation{Code: "k", MaxUses: 20})
	f.reserve(t, "k", testenv.Emails("k", 20)...)
	const idle = 600 * time.Millisecond
	_, stopSlow := slowConsumer(t, f, idle, time.Hour)
	m := persist.NewMetrics(nil)
	f.start(t, persist.ReconcilerConfig{Consumer: "other", ClaimIdle: idle, Block: 50 * time.Millisecond, Metrics: m})
	// Several of the other's claim rounds (every idle/2) past the point
	// where the entries would have been idle long enough to take.
	time.Sleep(3 * idle)
	if cl := testutil.ToFloat64(m.Claimed); cl != 0 {
		t.Fatalf("the other consumer took over %v reservations still being retried", cl)
	}
	stopSlow()
	waitFor(t, "empty stream", func() bool { return f.backlog(t) == 0 })
	if cl := testutil.ToFloat64(m.Claimed); cl != 20 {
		t.Fatalf("claimed = %v after the slow consumer left, want 20", cl)
	}
	if c, _ := f.st.Counts(ctx); c["k"] != 20 {
		t.Fatalf("registrations = %d, want 20", c["k"])
	}
}

// TestReconcilerLetsGoOfWhatItCannotWrite: a live worker cut off from
// MongoDB stops renewing its claim after HoldFor, so another consumer
// takes the batch over and writes it while the first is still running.
func TestReconcilerLetsGoOfWhatItCannotWrite(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1, invite.Invitation{Code: "g", MaxUses: 20})
	f.reserve(t, "g", testenv.Emails("g", 20)...)
	const idle = 300 * time.Millisecond
	slowConsumer(t, f, idle, idle)
	f.start(t, persist.ReconcilerConfig{Consumer: "other", ClaimIdle: idle, Block: 50 * time.Millisecond})
	waitFor(t, "empty stream", func() bool { return f.backlog(t) == 0 })
	if c, _ := f.st.Counts(ctx); c["g"] != 20 {
		t.Fatalf("registrations = %d, want 20", c["g"])
	}
}

// TestReconcilerConflictGivesBack: MongoDB holds the email on another code
// (Redis lost that claim); the reservation is refused, its token returns
// and the claim points at MongoDB's code.
func TestReconcilerConflictGivesBack(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 2, invite.Invitation{Code: "c", MaxUses: 2}, invite.Invitation{Code: "o", MaxUses: 2})
	at := time.Now()
	if _, err := f.st.Persist(ctx, []invite.Reservation{{ID: "0-1", Code: "o", Canonical: "lost@example.com", Email: "lost@example.com", ReservedAt: at}}); err != nil {
		t.Fatal(err)
	}
	f.reserve(t, "c", "lost@example.com", "fine@example.com") // Redis does not know about "o"
	m := persist.NewMetrics(nil)
	f.start(t, persist.ReconcilerConfig{Consumer: "a", Metrics: m})
	waitFor(t, "empty streams", func() bool { return f.backlog(t) == 0 })
	if n := testutil.ToFloat64(m.Rows.WithLabelValues("conflict")); n != 1 {
		t.Fatalf("conflicts = %v, want 1", n)
	}
	if rem, _, _ := f.res.Remaining(ctx, "c"); rem != 1 {
		t.Fatalf("remaining on c = %d, want 1 (token given back)", rem)
	}
	reg, _, _ := f.st.Registration(ctx, "lost@example.com")
	if reg.Invitation != "o" {
		t.Fatalf("registration moved to %q", reg.Invitation)
	}
	a, _ := email.Parse("lost@example.com", email.Options{})
	if _, err := f.res.Reserve(ctx, "c", a); err == nil {
		t.Fatal("the email got c again; want ErrEmailTaken")
	}
}

// TestReconcilerSurvivesMongoOutage: with MongoDB unreachable the backlog
// stays in Redis; when it returns, everything is written once.
func TestReconcilerSurvivesMongoOutage(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1, invite.Invitation{Code: "m", MaxUses: 40})
	// A store whose MongoDB is a closed port.
	badClient, err := mongo.Connect(options.Client().ApplyURI("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200&connectTimeoutMS=200"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { badClient.Disconnect(context.Background()) })
	bad := persist.NewStore(badClient.Database("x"), nil, nil)
	f.reserve(t, "m", testenv.Emails("m", 20)...)
	ctxBad, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	m := persist.NewMetrics(nil)
	go func() {
		persist.NewReconciler(f.res, bad, persist.ReconcilerConfig{Consumer: "bad", WriteTimeout: 300 * time.Millisecond, Metrics: m}).Run(ctxBad)
		close(done)
	}()
	// A write failed, and its retry after the backoff failed too.
	waitFor(t, "two failed writes", func() bool { return testutil.ToFloat64(m.Errors.WithLabelValues("mongo")) >= 2 })
	cancel()
	<-done
	if n := f.backlog(t); n != 20 {
		t.Fatalf("backlog during outage = %d, want 20", n)
	}
	f.reserve(t, "m", testenv.Emails("late", 20)...)
	f.start(t, persist.ReconcilerConfig{Consumer: "good", ClaimIdle: 200 * time.Millisecond})
	waitFor(t, "empty stream", func() bool { return f.backlog(t) == 0 })
	n, err := f.st.Counts(ctx)
	if err != nil || n["m"] != 40 {
		t.Fatalf("registrations = %v, %v; want 40", n["m"], err)
	}
}
