package app_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/invitegate/invitegate/internal/app"
	"github.com/invitegate/invitegate/internal/config"
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

// TestAckReplicaOverHTTP: INVITEGATE_ACK=replica through Sentinel. With the
// replica up a signup is 201; with it stopped a new signup is 503 with
// Retry-After within about INVITEGATE_ACK_TIMEOUT, while a rejection is
// still answered at once; once the replica is back the retry is 200 (its
// seat was taken), and the reconciler writes it to MongoDB once.
func TestAckReplicaOverHTTP(t *testing.T) {
	g := testenv.StartSentinelGroup(t, testenv.SentinelOptions{})
	e := newSentinelEnv(t, g, 1)
	e.cfg.Ack, e.cfg.AckTimeout = config.AckReplica, 300*time.Millisecond
	e.create(t, "wait", 3)
	e.create(t, "tiny", 1)
	m, _ := e.start(t)

	if st := post(t, m.PublicAddr, "wait", "first@example.com"); st != 201 {
		t.Fatalf("signup with the replica up: %d, want 201", st)
	}
	if st := post(t, m.PublicAddr, "tiny", "only@example.com"); st != 201 {
		t.Fatalf("signup with the replica up: %d, want 201", st)
	}
	replica := g.Replica(t)
	replica.Pause(t)
	start := time.Now()
	resp, err := client.Post("http://"+m.PublicAddr+"/invitations/wait", "application/json", strings.NewReader(`{"email":"second@example.com"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || took < e.cfg.AckTimeout || took > e.cfg.AckTimeout+2*time.Second {
		t.Fatalf("signup with the replica stopped: %d (Retry-After %q) after %v; want 503 with Retry-After after about %v",
			resp.StatusCode, resp.Header.Get("Retry-After"), took, e.cfg.AckTimeout)
	}
	start = time.Now()
	if st := post(t, m.PublicAddr, "tiny", "late@example.com"); st != 410 || time.Since(start) >= e.cfg.AckTimeout {
		t.Fatalf("a full code with the replica stopped: %d after %v; want 410 without waiting for the replica", st, time.Since(start))
	}
	replica.Resume(t)
	if st := post(t, m.PublicAddr, "wait", "second@example.com"); st != 200 {
		t.Fatalf("retry once the replica is back: %d, want 200", st)
	}
	if st := post(t, m.PublicAddr, "wait", "third@example.com"); st != 201 {
		t.Fatalf("a new signup once the replica is back: %d, want 201", st)
	}
	e.waitPersisted(t, "wait", 3)
}

// TestWarnsWhenTooFewReplicas: with INVITEGATE_ACK=replica a primary with
// fewer replicas online than INVITEGATE_ACK_REPLICAS is named in a warning
// at start (its signups would all be answered 503); one with enough is not.
func TestWarnsWhenTooFewReplicas(t *testing.T) {
	g := testenv.StartSentinelGroup(t, testenv.SentinelOptions{})
	e := newSentinelEnv(t, g, 1)
	e.cfg.Ack, e.cfg.AckTimeout = config.AckReplica, 300*time.Millisecond
	for _, want := range []int{1, 2} {
		e.cfg.AckReplicas = want
		var logs testenv.Buffer
		e.log = logrus.New()
		e.log.SetOutput(&logs)
		_, stop := e.start(t)
		stop()
		warned := strings.Contains(logs.String(), "fewer replicas online than INVITEGATE_ACK_REPLICAS")
		if warned != (want == 2) || (warned && !strings.Contains(logs.String(), g.Primary(t).Addr)) {
			t.Errorf("INVITEGATE_ACK_REPLICAS=%d with one replica: warned %v; log:\n%s", want, warned, logs.String())
		}
	}
}
