package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/testenv"
)

func TestParseFormatWindow(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		ok   bool
		out  string // formatWindow(want); "" = in
	}{
		{"30m", 30 * time.Minute, true, ""},
		{"1h30m", 90 * time.Minute, true, ""},
		{"90s", 90 * time.Second, true, "1m30s"},
		{"1s", time.Second, true, ""},
		{"1.5s", 1500 * time.Millisecond, true, ""},
		{"1001ms", 1001 * time.Millisecond, true, "1.001s"},
		{"24h", 24 * time.Hour, true, "1d"},
		{"7d", 7 * 24 * time.Hour, true, ""},
		{"1d12h", 36 * time.Hour, true, ""},
		{"1d0h30m", 24*time.Hour + 30*time.Minute, true, "1d30m"},
		{"6d23h59m59.999s", 7*24*time.Hour - time.Millisecond, true, ""},
		{" 10s ", 10 * time.Second, true, "10s"},
		{"off", 0, true, "-"},
		{"OFF", 0, true, "-"},
		{"0", 0, true, "-"},
		{"999ms", 0, false, ""},
		{"7d1ms", 0, false, ""},
		{"8d", 0, false, ""},
		{"99999999999999999999d", 0, false, ""},
		{"1s500us", 0, false, ""}, // not whole milliseconds
		{"-5m", 0, false, ""},
		{"1d-1h", 0, false, ""},
		{"-1d", 0, false, ""},
		{"1.5d", 0, false, ""},
		{"d", 0, false, ""},
		{"30", 0, false, ""},
		{"soon", 0, false, ""},
		{"", 0, false, ""},
	} {
		got, err := parseWindow(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseWindow(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
			continue
		}
		if !tt.ok {
			continue
		}
		out := tt.out
		if out == "" {
			out = strings.TrimSpace(tt.in)
		}
		if f := formatWindow(got); f != out {
			t.Errorf("formatWindow(%v) = %q, want %q", got, f, out)
		} else if back, err := parseWindow(f); f != "-" && (err != nil || back != got) {
			t.Errorf("parseWindow(formatWindow(%v)) = %v, %v", got, back, err)
		}
	}
}

// buckets returns the cw field of code's bucket on every shard ("" when
// the bucket has none) and fails unless every bucket exists.
func buckets(t *testing.T, c ctl, shards int, code string) []string {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: c.env["INVITEGATE_REDIS_ADDRS"]})
	defer rdb.Close()
	out := make([]string, shards)
	for s := range out {
		key := fmt.Sprintf("{%s:%d}:b:%s", c.env["INVITEGATE_REDIS_NAMESPACE"], s, code)
		h, err := rdb.HGetAll(context.Background(), key).Result()
		if err != nil || len(h) == 0 {
			t.Fatalf("bucket %s: %v, %v", key, h, err)
		}
		out[s] = h["cw"]
	}
	return out
}

func windows(t *testing.T, c ctl) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, r := range listJSON(t, c) {
		out[r.Code] = r.ConfirmWindowMs
	}
	return out
}

// TestConfirmWindowPolicy: create --confirm and set-confirm write
// MongoDB's confirm_window_ms and the live buckets' cw; a signup after
// set-confirm CODE 10s is a hold, one after set-confirm CODE off registers
// at once, and the hold taken before stays one. Bad windows change
// nothing.
func TestConfirmWindowPolicy(t *testing.T) {
	c := newCtl(t, "2")
	e := c.connect(t)
	ctx := context.Background()
	for _, tt := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"create", "held", "--max", "5", "--confirm", "30m"}, exitOK, "created held (max 5, confirm 30m)"},
		{[]string{"create", "--confirm", "1d12h", "--max", "2", "long"}, exitOK, "confirm 1d12h"},
		{[]string{"create", "plain", "--max", "3"}, exitOK, "created plain (max 3)"},
		{[]string{"create", "x", "--max", "5", "--confirm", "500ms"}, exitUsage, "1s..7d"},
		{[]string{"create", "x", "--max", "5", "--confirm", "8d"}, exitUsage, "1s..7d"},
		{[]string{"create", "x", "--max", "5", "--confirm", "soon"}, exitUsage, `"soon"`},
		{[]string{"create", "x", "--max", "5", "--confirm", "1s500us"}, exitUsage, "whole milliseconds"},
		{[]string{"set-confirm", "plain"}, exitUsage, "want CODE WINDOW"},
		{[]string{"set-confirm", "plain", "0.5s"}, exitUsage, "1s..7d"},
		{[]string{"set-confirm", "plain", "8d"}, exitUsage, "1s..7d"},
		{[]string{"set-confirm", "nope", "10s"}, exitMissing, `no invitation "nope"`},
	} {
		code, out, errOut := c.run(t, tt.args...)
		if code != tt.code || !strings.Contains(out+errOut, tt.msg) {
			t.Fatalf("%v: exit %d, out %q, err %q; want exit %d mentioning %q", tt.args, code, out, errOut, tt.code, tt.msg)
		}
	}
	want := map[string]int64{"held": 1800000, "long": 36 * 3600000, "plain": 0}
	if got := windows(t, c); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("list --json windows %v, want %v (a refused command changed something)", got, want)
	}
	if got := buckets(t, c, 2, "held"); got[0] != "1800000" || got[1] != "1800000" {
		t.Fatalf("held's buckets have cw %q, want 1800000", got)
	}
	code, out, _ := c.run(t, "list")
	if code != exitOK || !strings.Contains(out, "CONFIRM") || !strings.Contains(out, " 30m ") || !strings.Contains(out, " 1d12h ") {
		t.Fatalf("table list: %d\n%s", code, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == "plain" && f[2] != "-" {
			t.Fatalf("plain's CONFIRM is %q, want -:\n%s", f[2], out)
		}
	}

	// set-confirm 10s: the next signup on plain is a hold until about 10s
	// from now.
	c.must(t, "set-confirm", "plain", "10s")
	if inv, ok, err := e.store.Invitation(ctx, "plain"); err != nil || !ok || inv.ConfirmWindow != 10*time.Second {
		t.Fatalf("MongoDB after set-confirm 10s: %+v %v %v", inv, ok, err)
	}
	if got := buckets(t, c, 2, "plain"); got[0] != "10000" || got[1] != "10000" {
		t.Fatalf("plain's buckets have cw %q, want 10000", got)
	}
	first := testenv.Address(t, "first@example.com")
	before := time.Now()
	res, err := e.signups().Reserve(ctx, "plain", first)
	if err != nil || res.Outcome != invite.Held {
		t.Fatalf("signup after set-confirm 10s: %+v, %v; want a hold", res, err)
	}
	if dl := res.Deadline.Sub(before); dl < 9*time.Second || dl > 12*time.Second {
		t.Fatalf("hold deadline %v after the signup, want about 10s", dl)
	}
	if code, out, _ := c.run(t, "set-confirm", "plain", "10s"); code != exitOK || !strings.Contains(out, "already has confirm 10s") {
		t.Fatalf("repeated set-confirm: %d %q", code, out)
	}

	// off: a new email registers at once; the hold taken before is still
	// the same hold.
	if code, out, _ := c.run(t, "set-confirm", "plain", "off"); code != exitOK || !strings.Contains(out, "plain: confirm 10s -> -") {
		t.Fatalf("set-confirm off: %d %q", code, out)
	}
	if got := buckets(t, c, 2, "plain"); got[0] != "" || got[1] != "" {
		t.Fatalf("plain's buckets still have cw %q after off", got)
	}
	if inv, _, _ := e.store.Invitation(ctx, "plain"); inv.ConfirmWindow != 0 {
		t.Fatalf("MongoDB still has window %v after off", inv.ConfirmWindow)
	}
	if res, err := e.signups().Reserve(ctx, "plain", testenv.Address(t, "second@example.com")); err != nil || res.Outcome != invite.Created {
		t.Fatalf("signup after set-confirm off: %+v, %v; want created", res, err)
	}
	again, err := e.signups().Reserve(ctx, "plain", first)
	if err != nil || again.Outcome != invite.HeldAgain || again.ID != res.ID || !again.Deadline.Equal(res.Deadline) {
		t.Fatalf("the earlier hold after off: %+v, %v; want the same hold (deadline %v)", again, err, res.Deadline)
	}
	if r := remaining(t, e, "plain"); r != 1 {
		t.Fatalf("plain remaining %d, want 1 (one hold, one registration of 3)", r)
	}

	// Another tool's documents: a double is read, a string makes the
	// invitation unusable (not listed, not found), as a bad max_uses does.
	mc, err := mongo.Connect(options.Client().ApplyURI(c.env["INVITEGATE_MONGO_URI"]))
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Disconnect(ctx)
	coll := mc.Database(c.env["INVITEGATE_MONGO_DB"]).Collection(persist.InvitationsCollection)
	if _, err := coll.InsertMany(ctx, []any{
		bson.D{{Key: "_id", Value: "ext"}, {Key: "max_uses", Value: int32(3)}, {Key: "confirm_window_ms", Value: 60000.0}},
		bson.D{{Key: "_id", Value: "broken"}, {Key: "max_uses", Value: int32(3)}, {Key: "confirm_window_ms", Value: "30m"}},
	}); err != nil {
		t.Fatal(err)
	}
	got := windows(t, c)
	if _, listed := got["broken"]; listed || got["ext"] != 60000 {
		t.Fatalf("list --json windows %v: want ext 60000 and no broken", got)
	}
	if code, _, errOut := c.run(t, "set-confirm", "broken", "1m"); code != exitMissing {
		t.Fatalf("set-confirm on an unusable invitation: %d %q", code, errOut)
	}
	var raw bson.M
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "held"}}).Decode(&raw); err != nil || raw["confirm_window_ms"] != int64(1800000) {
		t.Fatalf("held's document %v (%v): want confirm_window_ms 1800000 as a long", raw, err)
	}
}

// TestImportConfirmWindow: import's fourth column, confirm_window.
func TestImportConfirmWindow(t *testing.T) {
	c := newCtl(t, "2")
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for i, b := range []struct{ body, msg string }{
		{"ok1,5,,30m\nok2,5,,45x\n", "line 2: confirm_window \"45x\""},
		{"ok1,5,,8d\n", "line 1: confirm_window \"8d\""},
		{"ok1,5,,999ms\n", "1s..7d"},
		{"ok1,5,,30m,extra\n", "got 5 fields"},
	} {
		code, _, errOut := c.run(t, "import", write(fmt.Sprintf("bad%d.csv", i), b.body))
		if code != exitUsage || !strings.Contains(errOut, b.msg) {
			t.Fatalf("bad file %q: exit %d, %q; want exit 2 mentioning %q", b.body, code, errOut, b.msg)
		}
	}
	if rows := listJSON(t, c); len(rows) != 0 {
		t.Fatalf("bad imports left %d invitations", len(rows))
	}
	good := write("good.csv", "code,max_uses,expires_at,confirm_window\n"+
		"a,5,,30m\nb,5,2099-01-01T00:00:00Z,7d\nc,5\nd,5,,\ne,5,,off\n")
	if code, out, errOut := c.run(t, "import", good); code != exitOK || !strings.Contains(out, "imported 5") {
		t.Fatalf("good import: %d %s %s", code, out, errOut)
	}
	want := map[string]int64{"a": 1800000, "b": 604800000, "c": 0, "d": 0, "e": 0}
	if got := windows(t, c); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("windows after import %v, want %v", got, want)
	}
	if got := buckets(t, c, 2, "a"); got[0] != "1800000" || got[1] != "1800000" {
		t.Fatalf("a's buckets have cw %q, want 1800000", got)
	}
	e := c.connect(t)
	if res, err := e.signups().Reserve(context.Background(), "a", testenv.Address(t, "x@example.com")); err != nil || res.Outcome != invite.Held {
		t.Fatalf("signup on an imported code with a window: %+v, %v; want a hold", res, err)
	}
}
