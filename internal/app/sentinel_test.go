package app_test

import (
	"testing"
	"time"

	"github.com/invitegate/invitegate/internal/app"
	"github.com/invitegate/invitegate/internal/testenv"
)

// newSentinelEnv is newEnv on the Sentinels of g: INVITEGATE_REDIS_ADDRS
// lists them and INVITEGATE_REDIS_SENTINEL_MASTER names g's master.
func newSentinelEnv(tb testing.TB, g *testenv.SentinelGroup, shards int) *env {
	tb.Helper()
	e := newEnv(tb, deployment{name: "sentinel", shards: shards})
	e.cfg.RedisAddrs = g.SentinelAddrs()
	e.cfg.SentinelMaster = g.MasterName
	if err := e.cfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	e.rdb.Close()
	e.rdb = app.NewRedis(e.cfg, 8)
	tb.Cleanup(func() { e.rdb.Close() })
	return e
}

// TestServiceFollowsSentinelPrimary: through Sentinel the service takes
// signups; once the primary is killed and the Sentinels promote the
// replica, the same process answers again on the new primary, which holds
// the earlier signups (they were replicated before the kill), and every
// 201 reaches MongoDB.
func TestServiceFollowsSentinelPrimary(t *testing.T) {
	g := testenv.StartSentinelGroup(t, testenv.SentinelOptions{})
	e := newSentinelEnv(t, g, 4)
	e.create(t, "follow", 100)
	m, _ := e.start(t)

	before := emails("before", 10)
	if got := tally(blast(t, []string{m.PublicAddr}, "follow", before)); got[201] != len(before) {
		t.Fatalf("before the failover: %v, want %d × 201", got, len(before))
	}
	g.WaitReplicated(t)
	old := g.Primary(t)
	old.Kill(t)
	killed := time.Now()
	promoted := g.WaitForPromotion(t, old, 30*time.Second)
	t.Logf("sentinels promoted %s %v after the kill", promoted.Addr, time.Since(killed).Round(time.Millisecond))

	// The first signup after the promotion that the service answers 201
	// shows it follows the new primary; until then 503 is the only answer.
	after := emails("after", 200)
	var n int
	for ; n < len(after); n++ {
		st := post(t, m.PublicAddr, "follow", after[n])
		if st == 201 {
			break
		}
		if st != 503 {
			t.Fatalf("signup during the failover: %d, want 201 or 503", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n == len(after) {
		t.Fatalf("no 201 within %d attempts after the promotion", n)
	}
	t.Logf("first 201 %v after the kill (%d × 503 before it)", time.Since(killed).Round(time.Millisecond), n)
	for _, em := range before {
		if st := post(t, m.PublicAddr, "follow", em); st != 200 {
			t.Fatalf("repeat of %s on the new primary: %d, want 200", em, st)
		}
	}
	e.waitPersisted(t, "follow", len(before)+1)
}
