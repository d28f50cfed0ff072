package app_test

import (
	"context"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/invitegate/invitegate/internal/config"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/testenv"
)

// TestMongoReserverInvariants runs INVITEGATE_RESERVER=mongo with no Redis
// at all (the configured address has nothing listening) through two
// replicas over HTTP: the same spike and race TestInvariants runs on the
// Redis path (I1, I2, I4), plus the rest of the status contract.
func TestMongoReserverInvariants(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, deployments[0])
	e.cfg.Reserver = config.ReserverMongo
	e.cfg.RedisAddrs = []string{testenv.FreeAddr(t)} // nothing there
	// This test checks invariants, not latency. A signup here is 8 to 15
	// sequential round trips to the embedded MongoDB-wire server, each
	// 0.1-2 s on a loaded 2-core CI box under -race: 5 s (newEnv's
	// deadline) ran out and answered 503. The HTTP client waits 30 s.
	e.cfg.RequestTimeout = 25 * time.Second
	e.create(t, "spike", 50)
	for _, c := range []string{"c1", "c2", "c3"} {
		e.create(t, c, 1000)
	}
	if err := e.store.CreateInvitation(ctx, invite.Invitation{Code: "off", MaxUses: 5, Disabled: true}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.CreateInvitation(ctx, invite.Invitation{Code: "old", MaxUses: 5, ExpiresAt: time.Now().Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	e.log = logrus.New()
	e.log.SetLevel(logrus.WarnLevel)
	m1, _ := e.start(t)
	m2, _ := e.start(t)
	servers := []string{m1.PublicAddr, m2.PublicAddr}

	// Smaller than TestInvariants' spike: every request costs the embedded
	// MongoDB-wire server several writes, and it serializes them.
	spike := blastN(t, 8, servers, "spike", emails("spike", 150))
	if got := tally(spike); got[201] != 50 || got[410] != 100 || len(got) != 2 {
		t.Fatalf("spike statuses %v, want 50×201 and 100×410", got)
	}
	e.waitPersisted(t, "spike", 50)

	// Each email is sent once per code, so a loser is only ever 409.
	wins := raceCodes(t, 4, servers, emails("race", 60), 409)
	stored := e.registrations(t)
	for em, code := range wins {
		if stored[em] != code {
			t.Fatalf("%s in MongoDB on %q, want %s", em, stored[em], code)
		}
	}
	// No seat stranded by the refused duplicates: seats == registrations.
	counts, err := e.store.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seats := persist.NewMongoReserver(e.store)
	for _, c := range []string{"spike", "c1", "c2", "c3"} {
		if taken, err := seats.Taken(ctx, c); err != nil || taken != counts[c] {
			t.Fatalf("%s: %d seats taken (err %v), %d registrations", c, taken, err, counts[c])
		}
	}

	winner := firstWith(spike, 201)
	for _, tc := range []struct {
		code, email string
		want        int
	}{
		{"spike", winner, 200}, {"c1", winner, 409}, {"off", "x@example.com", 410},
		{"old", "x@example.com", 410}, {"nope", "x@example.com", 404},
	} {
		if st := post(t, m1.PublicAddr, tc.code, tc.email); st != tc.want {
			t.Fatalf("%s on %s: %d, want %d", tc.email, tc.code, st, tc.want)
		}
	}
}

// TestMongoPathSeatsEarlierRegistrations: a deployment that moves to
// INVITEGATE_RESERVER=mongo with registrations already in MongoDB seats
// them before it serves, even when something else (an older invitectl, a
// start that died while seating) recorded the path first: a full code
// stays full.
func TestMongoPathSeatsEarlierRegistrations(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, deployments[0])
	e.cfg.Reserver = config.ReserverMongo
	e.cfg.RedisAddrs = []string{testenv.FreeAddr(t)} // nothing there
	e.create(t, "beta", 2)
	var rs []invite.Reservation
	for _, em := range []string{"one@example.com", "two@example.com"} {
		rs = append(rs, invite.Reservation{Code: "beta", Canonical: em, Email: em, ReservedAt: time.Now()})
	}
	if _, err := e.store.Persist(ctx, rs); err != nil {
		t.Fatal(err)
	}
	// The path is recorded, no seat was taken.
	if fresh, err := e.store.CheckReserver(ctx, config.ReserverMongo); err != nil || !fresh {
		t.Fatalf("record the path: fresh=%v %v", fresh, err)
	}
	m, _ := e.start(t)
	got := tally(blastN(t, 4, []string{m.PublicAddr}, "beta", emails("late", 6)))
	if got[410] != 6 {
		t.Fatalf("statuses %v on a code whose 2 seats were taken before the switch, want 6×410", got)
	}
	if n, err := e.store.Count(ctx, "beta"); err != nil || n != 2 {
		t.Fatalf("beta has %d registrations (%v), want 2", n, err)
	}
}
