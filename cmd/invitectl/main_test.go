package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/testenv"
	"github.com/invitegate/invitegate/internal/workflow"
)

// ctl runs invitectl against the test's own Redis namespace and database.
type ctl struct {
	env map[string]string
}

func newCtl(t *testing.T, shards string) ctl {
	t.Helper()
	return ctl{env: map[string]string{
		"INVITEGATE_REDIS_ADDRS":     testenv.SharedRedis(t),
		"INVITEGATE_REDIS_NAMESPACE": testenv.KeyPrefix(t),
		"INVITEGATE_MONGO_URI":       testenv.Mongo(t),
		"INVITEGATE_MONGO_DB":        testenv.DBName(t),
		"INVITEGATE_SHARDS":          shards,
	}}
}

func (c ctl) run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, func(k string) string { return c.env[k] }, &out, &errb)
	return code, out.String(), errb.String()
}

// must runs invitectl and fails the test, with what it printed, unless it
// exits 0.
func (c ctl) must(t *testing.T, args ...string) {
	t.Helper()
	code, out, errOut := c.run(t, args...)
	if code != 0 {
		t.Fatalf("invitectl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
}

func TestCreateListReseed(t *testing.T) {
	c := newCtl(t, "4")
	for _, tt := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"create", "beta", "--max", "5"}, exitOK, "created beta"},
		{[]string{"create", "--max", "3", "later", "--expires", "2099-01-01T00:00:00Z"}, exitOK, "created later"},
		{[]string{"create", "off", "--max", "2", "--disabled"}, exitOK, "created off"},
		{[]string{"create", "beta", "--max", "5"}, exitExists, "already exists"},
		{[]string{"create", "bad/code", "--max", "5"}, exitUsage, "CODE must be"},
		{[]string{"create", "x", "--max", "0"}, exitUsage, "--max must be"},
		{[]string{"create", "x", "--max", "1001"}, exitUsage, "--max must be"},
		{[]string{"create", "x", "--max", "5", "--expires", "tomorrow"}, exitUsage, "RFC 3339"},
		{[]string{"create"}, exitUsage, "exactly one CODE"},
		{[]string{"frobnicate"}, exitUsage, "unknown command"},
		{[]string{"list", "extra"}, exitUsage, "unexpected"},
	} {
		code, out, errOut := c.run(t, tt.args...)
		if code != tt.code || !strings.Contains(out+errOut, tt.msg) {
			t.Fatalf("%v: exit %d, out %q, err %q; want exit %d mentioning %q", tt.args, code, out, errOut, tt.code, tt.msg)
		}
	}

	// Two signups on beta through the reservation layer, one of them
	// already written to MongoDB by hand (as the reconciler would).
	e, err := connect(func(k string) string { return c.env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.close()
	ctx := context.Background()
	for _, s := range []string{"a@example.com", "b@example.com"} {
		res, err := e.signups().Reserve(ctx, "beta", testenv.Address(t, s))
		if err != nil {
			t.Fatal(err)
		}
		if s == "a@example.com" {
			batch, err := e.res.Read(ctx, res.Shard, "t", 10, -1)
			if err != nil {
				t.Fatal(err)
			}
			if len(batch) == 0 { // the first read created the group
				batch, _ = e.res.Read(ctx, res.Shard, "t", 10, -1)
			}
			if _, err := e.store.Persist(ctx, batch); err != nil {
				t.Fatal(err)
			}
		}
	}

	rows := listJSON(t, c)
	want := map[string]workflow.Counters{
		"beta":  {Code: "beta", MaxUses: 5, Persisted: 1, Reserved: 1, Remaining: 3, Seeded: true},
		"later": {Code: "later", MaxUses: 3, Remaining: 3, Seeded: true},
		"off":   {Code: "off", MaxUses: 2, Remaining: 2, Disabled: true, Seeded: true},
	}
	if len(rows) != 3 {
		t.Fatalf("list: %d rows, want 3: %+v", len(rows), rows)
	}
	for _, r := range rows {
		w := want[r.Code]
		r.ExpiresAt = nil
		if r.Code == "beta" && r.LagSeconds <= 0 {
			t.Fatalf("beta has an unpersisted reservation but lag %v", r.LagSeconds)
		}
		if r.Code != "beta" && r.LagSeconds != 0 {
			t.Fatalf("%s has nothing pending but lag %v", r.Code, r.LagSeconds)
		}
		r.LagSeconds = 0
		if r != w {
			t.Fatalf("list row %+v, want %+v", r, w)
		}
	}
	code, out, _ := c.run(t, "list")
	if code != 0 || !strings.Contains(out, "PERSISTED") || !strings.Contains(out, "disabled") {
		t.Fatalf("table list: %d\n%s", code, out)
	}

	// Redis wiped: list shows the codes unseeded, reseed rebuilds them
	// from MongoDB (the unpersisted reservation of b is gone with Redis).
	rdb := redis.NewClient(&redis.Options{Addr: c.env["INVITEGATE_REDIS_ADDRS"]})
	defer rdb.Close()
	iter := rdb.Scan(ctx, 0, "{"+c.env["INVITEGATE_REDIS_NAMESPACE"]+":*", 1000).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
	for _, r := range listJSON(t, c) {
		if r.Seeded {
			t.Fatalf("after wipe %s still seeded", r.Code)
		}
	}
	c.must(t, "reseed")
	for _, r := range listJSON(t, c) {
		if r.Code == "beta" && (r.Remaining != 4 || r.Persisted != 1 || !r.Seeded) {
			t.Fatalf("after reseed beta = %+v, want remaining 4, persisted 1", r)
		}
	}
}

func listJSON(t *testing.T, c ctl) []workflow.Counters {
	t.Helper()
	code, out, errOut := c.run(t, "list", "--json")
	if code != 0 {
		t.Fatalf("list --json: %d %s", code, errOut)
	}
	var rows []workflow.Counters
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("list --json output %q: %v", out, err)
	}
	return rows
}

func TestBadConfiguration(t *testing.T) {
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"list"}, func(k string) string {
		if k == "INVITEGATE_SHARDS" {
			return "zero"
		}
		return ""
	}, &out, &errb)
	if code != exitUsage || !strings.Contains(errb.String(), "INVITEGATE_SHARDS") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}

func TestRefusesWrongShardCount(t *testing.T) {
	c := newCtl(t, "4")
	e := c.connect(t)
	if err := e.store.CheckShards(context.Background(), 4); err != nil { // as the service's first start does
		t.Fatal(err)
	}
	c.env["INVITEGATE_SHARDS"] = "2"
	code, _, errOut := c.run(t, "reseed")
	if code != exitUsage || !strings.Contains(errOut, "INVITEGATE_SHARDS=2") {
		t.Fatalf("exit %d, %q; want a refusal naming INVITEGATE_SHARDS", code, errOut)
	}
}

var signupPaths sync.Map // *env -> *workflow.Signups

// signups is the service's Redis signup path over e's stores, one per env
// (it keeps a snapshot of the known codes), for tests that sign up.
func (e *env) signups() *workflow.Signups {
	s, _ := signupPaths.LoadOrStore(e, workflow.NewSignups(e.res, e.store, workflow.SignupsConfig{}))
	return s.(*workflow.Signups)
}
