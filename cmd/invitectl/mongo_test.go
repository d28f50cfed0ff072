package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/invitegate/invitegate/internal/email"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/workflow"
)

// TestMongoOnlyDeployment: with INVITEGATE_RESERVER=mongo invitectl needs
// no Redis (the address given here has nothing listening): create, import,
// list, disable/enable, set-max up, set-confirm and mail work on MongoDB alone and the
// MongoDB-only reservation path sees each change at once; set-max down and
// reseed are refused with nothing changed; a deployment that runs the Redis
// path refuses this mode.
func TestMongoOnlyDeployment(t *testing.T) {
	c := newCtl(t, "1")
	c.env["INVITEGATE_RESERVER"] = "mongo"
	c.env["INVITEGATE_REDIS_ADDRS"] = "127.0.0.1:1" // no Redis
	step := func(want int, msg string, args ...string) {
		t.Helper()
		code, out, errOut := c.run(t, args...)
		if code != want || !strings.Contains(out+errOut, msg) {
			t.Fatalf("%v: exit %d, out %q, err %q; want exit %d mentioning %q", args, code, out, errOut, want, msg)
		}
	}
	step(exitOK, "created beta", "create", "beta", "--max", "2")
	csv := filepath.Join(t.TempDir(), "codes.csv")
	if err := os.WriteFile(csv, []byte("code,max_uses\ngamma,3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	step(exitOK, "imported 1", "import", csv)

	e := c.connect(t)
	if e.res != nil {
		t.Fatal("connected to Redis in mongo mode")
	}
	seats := persist.NewMongoReserver(e.store)
	ctx := context.Background()
	signup := func(code, addr string) error {
		t.Helper()
		a, err := email.Parse(addr, email.Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = seats.Reserve(ctx, code, a)
		return err
	}
	if err := signup("beta", "first@example.com"); err != nil {
		t.Fatal(err)
	}
	byCode := func() map[string]workflow.Counters {
		out := map[string]workflow.Counters{}
		for _, r := range listJSON(t, c) {
			out[r.Code] = r
		}
		return out
	}
	if b := byCode()["beta"]; b.MaxUses != 2 || b.Persisted != 1 || b.Remaining != 1 || b.Reserved != 0 || !b.Seeded {
		t.Fatalf("list beta: %+v, want max 2, persisted 1, remaining 1", b)
	}
	if g := byCode()["gamma"]; g.MaxUses != 3 || g.Remaining != 3 {
		t.Fatalf("list gamma: %+v", g)
	}

	step(exitOK, "disabled beta", "disable", "beta")
	if err := signup("beta", "second@example.com"); !errors.Is(err, invite.ErrDisabled) {
		t.Fatalf("signup on a disabled code: %v, want disabled", err)
	}
	step(exitOK, "enabled beta", "enable", "beta")
	if err := signup("beta", "second@example.com"); err != nil {
		t.Fatalf("signup after enable: %v", err)
	}
	if err := signup("beta", "third@example.com"); !errors.Is(err, invite.ErrFull) {
		t.Fatalf("third signup on 2 seats: %v, want full", err)
	}
	step(exitOK, "max 2 -> 4", "set-max", "beta", "4")
	for i := 0; i < 2; i++ {
		if err := signup("beta", fmt.Sprintf("more%d@example.com", i)); err != nil {
			t.Fatalf("signup after set-max up: %v", err)
		}
	}
	if err := signup("beta", "fifth@example.com"); !errors.Is(err, invite.ErrFull) {
		t.Fatalf("fifth signup on 4 seats: %v, want full", err)
	}
	step(exitRefused, "can only be raised", "set-max", "gamma", "1")
	if g := byCode()["gamma"]; g.MaxUses != 3 {
		t.Fatalf("a refused set-max changed gamma: %+v", g)
	}
	step(exitUsage, "INVITEGATE_RESERVER=mongo", "reseed", "beta")
	step(exitOK, "pending", "mail")
	step(exitMissing, "no invitation", "disable", "nope")
	// The confirmation window: MongoDB alone (a Redis call would fail).
	step(exitOK, "created delta (max 1, confirm 1h)", "create", "delta", "--max", "1", "--confirm", "1h")
	step(exitOK, "beta: confirm - -> 30m", "set-confirm", "beta", "30m")
	if inv, _, err := e.store.Invitation(ctx, "beta"); err != nil || inv.ConfirmWindow != 30*time.Minute {
		t.Fatalf("MongoDB after set-confirm: %+v, %v; want a 30m window", inv, err)
	}
	if rows := byCode(); rows["beta"].ConfirmWindowMs != 1800000 || rows["delta"].ConfirmWindowMs != 3600000 || rows["gamma"].ConfirmWindowMs != 0 {
		t.Fatalf("list after set-confirm: %+v", rows)
	}
	step(exitOK, "beta: confirm 30m -> -", "set-confirm", "beta", "off")
	step(exitMissing, "no invitation", "set-confirm", "nope", "1m")
	// invitectl only reads the deployment's path: recording it is the
	// service's first start, which seats the registrations made before.
	if mode, ok, err := e.store.Reserver(ctx); err != nil || ok {
		t.Fatalf("invitectl recorded the path %q (%v)", mode, err)
	}

	// A deployment on the Redis path refuses invitectl in mongo mode.
	r := newCtl(t, "1")
	mc, err := mongo.Connect(options.Client().ApplyURI(r.env["INVITEGATE_MONGO_URI"]))
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Disconnect(ctx)
	// As the service's first start on the Redis path records it.
	if _, err := persist.NewStore(mc.Database(r.env["INVITEGATE_MONGO_DB"]), nil, nil).CheckReserver(ctx, "redis"); err != nil {
		t.Fatal(err)
	}
	r.env["INVITEGATE_RESERVER"] = "mongo"
	if code, _, errOut := r.run(t, "list"); code != exitUsage || !strings.Contains(errOut, "reserver") {
		t.Fatalf("mongo mode on a redis deployment: exit %d, %q", code, errOut)
	}
}
