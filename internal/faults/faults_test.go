package faults_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/invitegate/invitegate/internal/testenv"
)

// TestKillAPIReplica: one of two replicas is killed with SIGKILL mid-spike
// and started again; clients retry on the other. Requests cut mid-flight
// may have reserved a seat without an answer; those are persisted too, and
// nothing acknowledged is lost.
func TestKillAPIReplica(t *testing.T) {
	s := newStack(t)
	s.create("kill-api", 1000)
	reps := s.start(2, "serve")
	sp := newSpike("kill-api", publics(reps), 16)
	done := make(chan struct{})
	go func() { defer close(done); sp.run(t, emails("ka", 2500)) }()

	waitFor(t, 60*time.Second, "300 admissions", func() bool { return sp.admitted.Load() >= 300 })
	reps[0].Kill(t)
	admittedAtKill := sp.admitted.Load()
	reps[0].Start(t)
	<-done
	sp.check(t)
	if sp.admitted.Load() <= admittedAtKill {
		t.Fatalf("no signup after the kill")
	}
	s.verify("kill -9 API replica", "kill-api", 1000, sp.acked(), sp.sent.Load(), check{full: true})
}

// TestKillReconcilerMidBatch: the only reconciler is killed with SIGKILL
// while it holds read-but-unacknowledged entries (a batch in flight); a
// second reconciler takes them over after INVITEGATE_RECONCILER_CLAIM_IDLE.
func TestKillReconcilerMidBatch(t *testing.T) {
	s := newStack(t)
	s.create("kill-rec", 1000)
	reps := s.start(2, "serve", "INVITEGATE_RECONCILER=false")
	rec1 := s.start(1, "reconcile")[0]
	sp := newSpike("kill-rec", publics(reps), 16)
	done := make(chan struct{})
	go func() { defer close(done); sp.run(t, emails("kr", 2500)) }()

	ctx := context.Background()
	pending := func() int64 {
		var n int64
		for sh := 0; sh < shards; sh++ {
			p, err := s.rdb.XPending(ctx, streamKey(s.ns, sh), "reconciler").Result()
			if err == nil {
				n += p.Count
			}
		}
		return n
	}
	// Read by the reconciler and not yet acknowledged: a batch in flight.
	// Frozen first, so the batch it holds cannot be acknowledged between
	// the look and the kill.
	waitFor(t, 60*time.Second, "a batch in flight", func() bool {
		if pending() == 0 {
			return false
		}
		rec1.Pause(t)
		if pending() > 0 {
			return true
		}
		rec1.Resume(t)
		return false
	})
	rec1.Kill(t)
	orphaned := pending()
	if orphaned == 0 {
		t.Fatal("the killed reconciler left no pending entries; the kill missed its batch")
	}
	t.Logf("reconciler killed holding %d unacknowledged entries", orphaned)
	<-done
	sp.check(t)
	rec2 := s.start(1, "reconcile")[0]
	s.verify("kill -9 reconciler", "kill-rec", 1000, sp.acked(), sp.sent.Load(), check{full: true})
	if n := slices.Max(append(testenv.Metric(t, rec2.Admin, "invitegate_reconciler_claimed_total"), 0)); n < 1 {
		t.Fatalf("the second reconciler claimed %v entries; the orphaned batch must have been taken over", n)
	}
}

// TestMongoOutage: MongoDB is stopped for 20s mid-spike and started again.
// Signups go on (Redis answers them), the backlog and the lag metric grow
// while MongoDB is away, then the backlog drains: nothing lost or doubled.
func TestMongoOutage(t *testing.T) {
	s := newStack(t)
	s.create("mongo-out", 1000)
	reps := s.start(2, "serve")
	sp := newSpike("mongo-out", publics(reps), 8)
	sp.pace = 200 * time.Millisecond // ~40 signups/s: the spike outlasts the outage
	done := make(chan struct{})
	go func() { defer close(done); sp.run(t, emails("mo", 1300)) }()

	waitFor(t, 30*time.Second, "50 admissions", func() bool { return sp.admitted.Load() >= 50 })
	s.mongo.Kill(t)
	before := sp.admitted.Load()
	time.Sleep(20 * time.Second)
	during := sp.admitted.Load() - before
	lag := slices.Max(append(testenv.Metric(t, reps[0].Admin, "invitegate_reservation_lag_seconds"), -1))
	backlog := s.backlog()
	s.mongo.Restart(t)
	back := time.Now()
	t.Logf("while MongoDB was down: %d signups admitted, backlog %d, lag %.1fs", during, backlog, lag)
	if during == 0 {
		t.Error("no signup was admitted while MongoDB was down")
	}
	if backlog <= 0 || lag < 10 {
		t.Errorf("backlog %d and lag %.1fs at the end of a 20s outage; want both visible", backlog, lag)
	}
	waitFor(t, 60*time.Second, "the backlog to drain", func() bool { return s.backlog() == 0 })
	t.Logf("backlog drained %s after MongoDB returned", time.Since(back).Round(time.Millisecond))
	<-done
	sp.check(t)
	s.verify("MongoDB down 20s", "mongo-out", 1000, sp.acked(), sp.sent.Load(), check{full: true})
	waitFor(t, 10*time.Second, "lag back to 0", func() bool {
		return slices.Max(append(testenv.Metric(t, reps[0].Admin, "invitegate_reservation_lag_seconds"), 0)) == 0
	})
}

// TestRedisKillWithAOF: redis-server is killed with SIGKILL mid-spike and
// restarted on its append-only file (appendfsync always). Every
// acknowledged signup reaches MongoDB and capacity is still exact.
func TestRedisKillWithAOF(t *testing.T) {
	s := newStack(t)
	s.create("kill-redis", 1000)
	reps := s.start(2, "serve")
	sp := newSpike("kill-redis", publics(reps), 16)
	done := make(chan struct{})
	go func() { defer close(done); sp.run(t, emails("kr", 2500)) }()

	waitFor(t, 60*time.Second, "300 admissions", func() bool { return sp.admitted.Load() >= 300 })
	s.redis.Kill(t)
	time.Sleep(time.Second)
	s.redis.Restart(t)
	<-done
	sp.check(t)
	t.Logf("503s while Redis was down: %d", sp.unavailable.Load())
	if sp.unavailable.Load() == 0 {
		t.Error("no 503 while Redis was down: the kill missed the spike")
	}
	s.verify("kill -9 redis-server (AOF always)", "kill-redis", 1000, sp.acked(), sp.sent.Load(), check{full: true})
}

// TestRedisWipeReseeds: Redis loses everything while MongoDB holds 600
// registrations. The replicas rebuild from MongoDB: the 600 get 200 (not a
// new seat), and exactly 400 more are admitted.
func TestRedisWipeReseeds(t *testing.T) {
	s := newStack(t)
	s.create("wipe", 1000)
	reps := s.start(2, "serve")
	first := newSpike("wipe", publics(reps), 16)
	first.run(t, emails("w1", 600))
	first.check(t)
	s.verify("before the wipe", "wipe", 1000, first.acked(), first.sent.Load(), check{})

	if err := s.rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	second := newSpike("wipe", publics(reps), 16)
	second.run(t, append(emails("w1", 600), emails("w2", 2000)...))
	second.check(t)
	for _, em := range emails("w1", 600) {
		if second.final[em] != 200 {
			t.Fatalf("%s, registered before the wipe, answered %d after it; want 200", em, second.final[em])
		}
	}
	if n := second.admitted.Load(); n != 400 {
		t.Errorf("after the wipe %d new signups were admitted; want exactly 400", n)
	}
	s.verify("Redis wiped, reseeded", "wipe", 1000, second.acked(), first.sent.Load()+second.sent.Load(), check{full: true})
}

// TestAckMongoSurvivesRedisLoss: with INVITEGATE_ACK=mongo and no
// reconciler at all, a spike is answered, then Redis is wiped before
// anything else could copy it: every acknowledged signup is in MongoDB.
// The control run does the same with INVITEGATE_ACK=redis and must lose
// them, which shows the check can fail.
func TestAckMongoSurvivesRedisLoss(t *testing.T) {
	for _, tc := range []struct {
		ack      string
		wantLoss bool
	}{{"mongo", false}, {"redis", true}} {
		t.Run(tc.ack, func(t *testing.T) {
			s := newStack(t)
			s.create("ack", 1000)
			reps := s.start(2, "serve", "INVITEGATE_ACK="+tc.ack, "INVITEGATE_RECONCILER=false")
			sp := newSpike("ack", publics(reps), 16)
			sp.run(t, emails("ack", 2500))
			sp.check(t)
			if err := s.rdb.FlushAll(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
			acked := sp.acked()
			if !tc.wantLoss {
				s.verify("ack=mongo, Redis wiped after the spike", "ack", 1000, acked, sp.sent.Load(), check{noReconciler: true})
				// A 503 (past the bound) retried answers 200: count both.
				if len(acked) != 1000 {
					t.Errorf("acknowledged %d; want 1000", len(acked))
				}
				// Reseeded from MongoDB, the code is full: no seat is
				// handed out twice.
				more := newSpike("ack", publics(reps), 8)
				more.run(t, emails("ack-more", 200))
				more.check(t)
				if n := more.admitted.Load(); n != 0 {
					t.Errorf("after the wipe %d more were admitted on a full code", n)
				}
				return
			}
			n, err := s.store.Count(context.Background(), "ack")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("control, ack=redis without a reconciler, Redis wiped: acknowledged %d, persisted %d, lost %d", len(acked), n, len(acked)-n)
			if len(acked) == 0 || n >= len(acked) {
				t.Fatalf("control: acknowledged %d, persisted %d; the wipe should have lost signups", len(acked), n)
			}
		})
	}
}

// TestAckMongoBoundedWait: with INVITEGATE_ACK=mongo and MongoDB down, a
// signup is answered 503 with Retry-After within the configured bounds;
// once MongoDB is back the same email is acknowledged and stored.
func TestAckMongoBoundedWait(t *testing.T) {
	s := newStack(t)
	s.create("ack-wait", 10)
	rep := s.start(1, "serve", "INVITEGATE_ACK=mongo", "INVITEGATE_ACK_TIMEOUT=1s")[0]
	client := &http.Client{Timeout: 10 * time.Second}
	if st, err := postStatus(client, rep.Public, "ack-wait", "warm@example.com"); err != nil || st != 201 {
		t.Fatalf("warm-up: %d %v", st, err)
	}
	s.mongo.Kill(t)
	start := time.Now()
	resp, err := client.Post("http://"+rep.Public+"/invitations/ack-wait", "application/json", strings.NewReader(`{"email":"wait@example.com"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	took := time.Since(start)
	// Bound: request timeout (1s) + ack timeout (1s), plus slack for a
	// busy machine.
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || took > 5*time.Second {
		t.Fatalf("MongoDB down: status %d, Retry-After %q, after %s; want 503 with Retry-After within 2s+slack",
			resp.StatusCode, resp.Header.Get("Retry-After"), took)
	}
	t.Logf("MongoDB down: 503 after %s", took.Round(time.Millisecond))
	s.mongo.Restart(t)
	waitFor(t, 30*time.Second, "the retry to be acknowledged", func() bool {
		st, err := postStatus(client, rep.Public, "ack-wait", "wait@example.com")
		return err == nil && (st == 200 || st == 201)
	})
	reg, ok, err := s.store.Registration(context.Background(), "wait@example.com")
	if err != nil || !ok || reg.Invitation != "ack-wait" {
		t.Fatalf("after the acknowledged retry MongoDB has %+v (ok %v, err %v)", reg, ok, err)
	}
}

// TestRedisUnreachable: a hung Redis (SIGSTOP) and a dead one (SIGKILL)
// both turn signups into 503 with Retry-After within the request timeout,
// readiness turns 503, and the replica recovers by itself.
func TestRedisUnreachable(t *testing.T) {
	s := newStack(t)
	s.create("unreach", 1000)
	rep := s.start(1, "serve")[0]
	client := &http.Client{Timeout: 15 * time.Second}
	n := 0
	next := func() string {
		n++
		return "u" + strings.Repeat("x", n%3) + "-" + time.Now().Format("150405.000000") + "@example.com"
	}
	if st, err := postStatus(client, rep.Public, "unreach", next()); err != nil || st != 201 {
		t.Fatalf("before: %d %v", st, err)
	}
	for _, fault := range []struct {
		name   string
		inject func()
		heal   func()
	}{
		{"hung (SIGSTOP)", func() { s.redis.Pause(t) }, func() { s.redis.Resume(t) }},
		{"dead (SIGKILL)", func() { s.redis.Kill(t) }, func() { s.redis.Restart(t) }},
	} {
		fault.inject()
		results := make(chan string, 8)
		for i := 0; i < 8; i++ {
			em := next()
			go func() {
				start := time.Now()
				resp, err := client.Post("http://"+rep.Public+"/invitations/unreach", "application/json", strings.NewReader(`{"email":"`+em+`"}`))
				if err != nil {
					results <- err.Error()
					return
				}
				resp.Body.Close()
				took := time.Since(start)
				// Bound: INVITEGATE_REQUEST_TIMEOUT (1s) plus slack.
				if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || took > 4*time.Second {
					results <- fault.name + ": status " + resp.Status + " Retry-After " + resp.Header.Get("Retry-After") + " after " + took.String()
					return
				}
				results <- ""
			}()
		}
		for i := 0; i < 8; i++ {
			if r := <-results; r != "" {
				t.Fatal(r)
			}
		}
		if resp, err := http.Get("http://" + rep.Admin + "/readyz"); err != nil || resp.StatusCode != 503 {
			t.Fatalf("%s: readyz %v %v; want 503", fault.name, resp, err)
		}
		fault.heal()
		healed := time.Now()
		waitFor(t, 15*time.Second, "recovery after Redis "+fault.name, func() bool {
			st, err := postStatus(client, rep.Public, "unreach", next())
			return err == nil && st == 201
		})
		t.Logf("Redis %s: 8 of 8 answered 503 with Retry-After; first 201 %s after Redis returned",
			fault.name, time.Since(healed).Round(time.Millisecond))
	}
}
