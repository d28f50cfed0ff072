package faults_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/testenv"
)

// A failover to a stale replica, on real processes: two invitegate serve
// processes, a MongoDB-wire server, and Redis as a Sentinel group (primary,
// replica, three Sentinels) or a Redis Cluster with one replica per master.
// Mid-spike the replica is stopped (SIGSTOP), the primary drops its replica
// links (CLIENT KILL TYPE replica) and takes reservations alone, then it is
// killed (SIGKILL), the replica continued (SIGCONT) and promoted (by the
// Sentinels, or by the cluster itself), and the spike goes on.
const (
	foCapacity = 500
	foEmails   = 2000
	// foTrigger is how many 201s the spike has before the fault.
	foTrigger = 150
	// foAlone is how long the primary takes writes without its replica, at
	// least (and until it took at least one reservation alone).
	foAlone = 300 * time.Millisecond
	// foAnswerBy bounds the wait, from the promotion, for the first answer
	// other than 503 of every API replica on every shard: a liveness
	// horizon (a replica or shard still silent then fails the test), not a
	// speed promise. How long the recovery takes is logged and measured in
	// docs/OPERATIONS.md: on a quiet machine about 1 s; under the -race
	// suite's load the embedded MongoDB-wire server alone has taken 10-20 s
	// to write the recovery's pending rows, so a clock bound here failed
	// CI at random without telling anything about the product.
	foAnswerBy = 60 * time.Second
)

// failoverCase is one variant of the fault.
type failoverCase struct {
	name string
	ack  string // INVITEGATE_ACK
	// giveUp: a client that gets a 503 never retries.
	giveUp bool
	// oldStaysDead: the killed primary is not started again. Otherwise it
	// is restarted once the replica was promoted, as a supervisor would,
	// and rejoins as the new primary's replica: with ack=replica the new
	// primary acknowledges nothing until it has a replica again.
	oldStaysDead bool
	// reconcilerBehind: the API replicas run no reconciler; the one
	// reconciler process is stopped (SIGSTOP) before the replica is, and
	// continued after the promotion, so nothing the primary takes alone
	// reaches MongoDB from it: what a lagging reconciler leaves to chance.
	reconcilerBehind bool
	// assert: the promises of ack=replica (nothing acknowledged lost, no
	// 201 past the cap) are checked; otherwise they are measured and
	// logged. MongoDB past the cap is an error in every case.
	assert bool
	// wantLoss: the control, which must lose acknowledged signups.
	wantLoss bool
}

// TestSentinelFailover: the failover through three Sentinels, with
// ack=replica (asserted), the same with clients that give up after a 503,
// and with ack=redis (measured: what a stale replica loses).
func TestSentinelFailover(t *testing.T) {
	for _, c := range []failoverCase{
		{name: "replica", ack: "replica", assert: true},
		{name: "replica-give-up", ack: "replica", giveUp: true, assert: true},
		{name: "redis", ack: "redis"},
		// The same with the reconciler behind: ack=replica still loses
		// nothing; ack=redis loses what the primary acknowledged alone,
		// which shows the loss check can fail.
		{name: "replica-reconciler-behind", ack: "replica", reconcilerBehind: true, assert: true},
		{name: "redis-reconciler-behind", ack: "redis", reconcilerBehind: true, wantLoss: true},
		{name: "replica-give-up-reconciler-behind", ack: "replica", giveUp: true, reconcilerBehind: true, assert: true},
	} {
		t.Run(c.name, func(t *testing.T) { runFailover(t, layout{sentinel: true}, c) })
	}
}

// TestClusterFailover: the failover of the Redis Cluster master owning
// shard 0 (K=16), with ack=replica (asserted), clients that give up after
// a 503, ack=redis (measured), and ack=redis with the old master never
// coming back, which must not leave its shards answering 503 (the service
// finds the promoted replica by reloading the slot map, with no MOVED to
// tell it).
func TestClusterFailover(t *testing.T) {
	for _, c := range []failoverCase{
		{name: "replica", ack: "replica", assert: true},
		{name: "replica-give-up", ack: "replica", giveUp: true, assert: true},
		{name: "redis", ack: "redis"},
		// ack=replica cannot admit on a master that has no replica left,
		// so the dead-for-good master runs with ack=redis.
		{name: "redis-old-master-dead", ack: "redis", oldStaysDead: true},
	} {
		t.Run(c.name, func(t *testing.T) { runFailover(t, layout{cluster: true, shards: 16}, c) })
	}
}

// victim is the primary a run kills and the replica that takes over.
type victim struct {
	primary, replica *testenv.RedisServer
	// shards are the logical shards the primary serves.
	shards []int
	// promoted returns once the replica is the primary clients are sent to.
	promoted func()
	// stillPrimary reports whether the promoted replica is still the
	// primary (false after a second failover).
	stillPrimary func() bool
}

func sentinelVictim(t *testing.T, s *stack) victim {
	p, r := s.group.Primary(t), s.group.Replica(t)
	v := victim{primary: p, replica: r}
	for sh := 0; sh < s.shards; sh++ {
		v.shards = append(v.shards, sh)
	}
	v.stillPrimary = func() bool { return s.group.Primary(t) == r }
	v.promoted = func() {
		if got := s.group.WaitForPromotion(t, p, 30*time.Second); got != r {
			t.Fatalf("the Sentinels promoted %s, want the replica %s", got.Addr, r.Addr)
		}
	}
	return v
}

// clusterVictim picks the master serving shard 0 (which also holds the
// locks) and its replica.
func clusterVictim(t *testing.T, s *stack) victim {
	ctx := context.Background()
	slots, err := s.rdb.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	ownerOf := func(sh int) string {
		slot, err := s.rdb.ClusterKeySlot(ctx, fmt.Sprintf("{%s:%d}", s.ns, sh)).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range slots {
			if int64(r.Start) <= slot && slot <= int64(r.End) {
				return r.Nodes[0].Addr
			}
		}
		t.Fatalf("no master serves slot %d", slot)
		return ""
	}
	addr := ownerOf(0)
	var v victim
	for _, m := range s.rc.Masters {
		if m.Addr == addr {
			v.primary = m
		}
	}
	v.replica = s.rc.ReplicaOf(addr)
	if v.primary == nil || v.replica == nil {
		t.Fatalf("shard 0's master %s is not a master the cluster started with a replica", addr)
	}
	for sh := 0; sh < s.shards; sh++ {
		if ownerOf(sh) == addr {
			v.shards = append(v.shards, sh)
		}
	}
	v.stillPrimary = func() bool {
		c := redis.NewClient(&redis.Options{Addr: v.replica.Addr, DisableIdentity: true, MaxRetries: -1})
		defer c.Close()
		info, err := c.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "role:master")
	}
	v.promoted = func() {
		c := redis.NewClient(&redis.Options{Addr: v.replica.Addr, DisableIdentity: true, MaxRetries: -1})
		defer c.Close()
		waitFor(t, 30*time.Second, "the cluster to promote "+v.replica.Addr, func() bool {
			info, err := c.Info(ctx, "replication").Result()
			return err == nil && strings.Contains(info, "role:master")
		})
	}
	return v
}

// probeAnswers asks every target, for every shard, with an email of that
// shard on code, until it answers something other than 503 (or until),
// reporting each answer to onAnswer. The spike alone may have sent its
// last email before every shard answers again (clients that give up burn
// through theirs on 503s). The channel closes when every probe is done.
func probeAnswers(targets []string, code string, shards int, until time.Time, onAnswer func(target, em string, sent, answered time.Time, status int)) <-chan struct{} {
	done := make(chan struct{})
	client := &http.Client{Timeout: 5 * time.Second}
	var wg sync.WaitGroup
	for ti, target := range targets {
		for sh := 0; sh < shards; sh++ {
			em := ""
			for n := 0; em == ""; n++ {
				if c := fmt.Sprintf("probe-%d-%d-%d@example.com", ti, sh, n); emailShard(c, shards) == sh {
					em = c
				}
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(until) {
					sent := time.Now()
					st, _ := postStatus(client, target, code, em)
					onAnswer(target, em, sent, time.Now(), st)
					if st != 0 && st != http.StatusServiceUnavailable {
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}()
		}
	}
	go func() { wg.Wait(); close(done) }()
	return done
}

// emailShard is the logical shard of a canonical email (FNV-1a mod K, as
// internal/reserve/keys.go's shardOf).
func emailShard(canonical string, k int) int {
	if k == 1 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(canonical))
	return int(h.Sum64() % uint64(k))
}

// reservationsAdded is how many reservations the node at addr ever appended
// to the streams of shards (XINFO STREAM entries-added), or -1.
func reservationsAdded(addr, ns string, shards []int) int64 {
	c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true, MaxRetries: -1,
		// A cluster replica redirects reads of its master's keys unless
		// asked READONLY; a node outside a cluster refuses READONLY.
		OnConnect: func(ctx context.Context, cn *redis.Conn) error {
			_ = cn.ReadOnly(ctx).Err()
			return nil
		}})
	defer c.Close()
	var n int64
	for _, sh := range shards {
		info, err := c.XInfoStream(context.Background(), streamKey(ns, sh)).Result()
		if err != nil {
			if strings.Contains(err.Error(), "no such key") {
				continue
			}
			return -1
		}
		n += info.EntriesAdded
	}
	return n
}

// linkDown reports whether the node at addr has seen its primary go (or is
// a primary itself), so it holds all it will ever get from the old one.
func linkDown(addr string) bool {
	c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true, MaxRetries: -1})
	defer c.Close()
	info, err := c.Info(context.Background(), "replication").Result()
	return err == nil && (strings.Contains(info, "master_link_status:down") || strings.Contains(info, "role:master"))
}

func runFailover(t *testing.T, l layout, c failoverCase) {
	s := newStackOn(t, l)
	const code = "failover"
	s.create(code, foCapacity)
	// A second code, for the probes that time answering again on every
	// API replica and shard whether or not the spike still runs.
	const probeCode = "failover-probe"
	s.create(probeCode, 1000)
	var reps []*testenv.Process
	var rec *testenv.Process
	if c.reconcilerBehind {
		reps = s.start(2, "serve", "INVITEGATE_ACK="+c.ack, "INVITEGATE_RECONCILER=false")
		rec = s.start(1, "reconcile", "INVITEGATE_ACK="+c.ack)[0]
	} else {
		reps = s.start(2, "serve", "INVITEGATE_ACK="+c.ack)
	}
	var v victim
	if l.cluster {
		v = clusterVictim(t, s)
	} else {
		v = sentinelVictim(t, s)
	}

	// Every answer, for the time to answer again: per API replica and
	// shard, the first answer other than 503 to a request sent after the
	// promotion.
	var (
		mu           sync.Mutex
		promotedAt   time.Time
		firstAnswer  = map[string]time.Time{}
		firstCreated time.Time
	)
	sp := newSpike(code, publics(reps), 8)
	sp.pace = 20 * time.Millisecond
	sp.giveUp = c.giveUp
	sp.onAnswer = func(target, em string, sent, answered time.Time, status int) {
		mu.Lock()
		defer mu.Unlock()
		if promotedAt.IsZero() || sent.Before(promotedAt) || status == 0 || status == http.StatusServiceUnavailable {
			return
		}
		key := target + " shard " + strconv.Itoa(emailShard(em, s.shards))
		if _, ok := firstAnswer[key]; !ok {
			firstAnswer[key] = answered
		}
		if status == http.StatusCreated && firstCreated.IsZero() {
			firstCreated = answered
		}
	}
	done := make(chan struct{})
	go func() { defer close(done); sp.run(t, emails("fo", foEmails)) }()

	waitFor(t, 60*time.Second, strconv.Itoa(foTrigger)+" admissions", func() bool { return sp.admitted.Load() >= foTrigger })
	if rec != nil {
		rec.Pause(t)
	}
	v.replica.Pause(t)
	if n := v.primary.KillReplicaLinks(t); n < 1 {
		t.Fatalf("CLIENT KILL TYPE replica closed %d links; the replica was not attached", n)
	}
	cut := time.Now()
	createdAtCut := sp.admitted.Load()
	// What the primary holds at the cut, read before the newcomers below
	// arrive: read after, it could already count all of theirs, and the
	// spike's own clients may then be only retrying, adding nothing more.
	addedAtCut := reservationsAdded(v.primary.Addr, s.ns, v.shards)
	if addedAtCut < 0 {
		t.Fatalf("cannot read the streams of %s", v.primary.Addr)
	}
	// Newcomers keep arriving: the spike's own clients may all be busy
	// retrying emails answered 503 (with ack=replica every admission waits
	// for the stopped replica), and the primary must take new reservations
	// alone, the ones the promoted replica will miss.
	burst := newSpike(code, publics(reps), 16)
	burst.giveUp, burst.onAnswer = c.giveUp, sp.onAnswer
	burstDone := make(chan struct{})
	go func() { defer close(burstDone); burst.run(t, emails("fo-new", 64)) }()
	var addedAtKill int64
	waitFor(t, 15*time.Second, "the primary to take a reservation alone", func() bool {
		addedAtKill = reservationsAdded(v.primary.Addr, s.ns, v.shards)
		return time.Since(cut) >= foAlone && addedAtKill > addedAtCut
	})
	v.primary.Kill(t)
	killed := time.Now()
	createdAlone := sp.admitted.Load() + burst.admitted.Load() - createdAtCut
	v.replica.Resume(t)
	waitFor(t, 10*time.Second, "the replica to see its primary gone", func() bool { return linkDown(v.replica.Addr) })
	onReplica := reservationsAdded(v.replica.Addr, s.ns, v.shards)
	if onReplica < 0 {
		t.Fatalf("cannot read the streams of %s", v.replica.Addr)
	}
	missed := addedAtKill - onReplica
	if missed < 1 {
		t.Fatalf("the replica to be promoted misses %d reservations; the fault did not make it stale", missed)
	}
	v.promoted()
	mu.Lock()
	promotedAt = time.Now()
	mu.Unlock()
	probed := probeAnswers(publics(reps), probeCode, s.shards, promotedAt.Add(foAnswerBy), sp.onAnswer)
	if rec != nil {
		rec.Resume(t)
	}
	// When the restarted old primary is a replica again (with ack=replica
	// the new primary acknowledges nothing before): watched until the
	// spike is over.
	rejoinCtx, stopRejoin := context.WithCancel(context.Background())
	rejoined := make(chan time.Duration, 1)
	if !c.oldStaysDead {
		v.primary.Restart(t)
		go func() {
			c := redis.NewClient(&redis.Options{Addr: v.primary.Addr, DisableIdentity: true, MaxRetries: -1})
			defer c.Close()
			for rejoinCtx.Err() == nil {
				info, err := c.Info(rejoinCtx, "replication").Result()
				if err == nil && strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up") {
					rejoined <- time.Since(promotedAt)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			rejoined <- -1
		}()
	} else {
		rejoined <- -1
	}

	<-done
	<-burstDone
	<-probed
	sp.check(t)
	burst.check(t)
	stopRejoin()
	rejoinText := "not while the spike ran"
	if rejoin := <-rejoined; rejoin >= 0 {
		rejoinText = rejoin.Round(time.Millisecond).String()
	}
	// Everything still in the streams reaches MongoDB: wait until they are
	// empty, failing only if they stop draining.
	last, lastMove := s.backlog(), time.Now()
	for b := last; b != 0; b = s.backlog() {
		if b != last {
			last, lastMove = b, time.Now()
		}
		if time.Since(lastMove) > 30*time.Second {
			t.Fatalf("the streams stopped draining at a backlog of %d", b)
		}
		time.Sleep(50 * time.Millisecond)
	}

	ctx := context.Background()
	stored := map[string]bool{}
	if err := s.store.ForEachRegistration(ctx, code, func(canonical, _ string) error {
		stored[canonical] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	count, err := s.store.Count(ctx, code)
	if err != nil {
		t.Fatal(err)
	}
	acked := sp.acked()
	for em := range burst.acked() {
		acked[em] = true
	}
	lost := 0
	for em := range acked {
		if !stored[em] {
			lost++
		}
	}
	created := int(sp.admitted.Load() + burst.admitted.Load())
	mu.Lock()
	var recovery time.Duration
	var silent []string
	for _, target := range publics(reps) {
		for sh := 0; sh < s.shards; sh++ {
			key := target + " shard " + strconv.Itoa(sh)
			at, ok := firstAnswer[key]
			if !ok {
				silent = append(silent, key)
				continue
			}
			recovery = max(recovery, at.Sub(promotedAt))
		}
	}
	firstCreatedAfter := firstCreated.Sub(promotedAt)
	if firstCreated.IsZero() {
		firstCreatedAfter = -1
	}
	mu.Unlock()

	// A repeat of every email MongoDB holds is 200: the claims are all back
	// in Redis, none of them is admitted a second time.
	readmitted, refused := repeatStored(t, publics(reps), code, stored)
	// What MongoDB's own cap refused, and what the reconcilers dropped as
	// lost by the failover (never acknowledged), over every process.
	writers := reps
	if rec != nil {
		writers = append(append([]*testenv.Process(nil), reps...), rec)
	}
	var capRefused, vanished float64
	for _, p := range writers {
		for _, v := range testenv.Metric(t, p.Admin, `invitegate_reconciler_rows_total{result="refused"}`) {
			capRefused += v
		}
		for _, v := range testenv.Metric(t, p.Admin, `invitegate_reconciler_rows_total{result="vanished"}`) {
			vanished += v
		}
	}

	t.Logf("%s: 201s %d (over the cap of %d: %d), in MongoDB %d, acknowledged %d, acknowledged lost %d, "+
		"stored emails admitted again on a repeat %d (refused %d); the primary took %d reservations alone in %s (%d answered 201), "+
		"the promoted replica missed %d; promoted %s after the kill; every API replica and shard answering again %s after the promotion "+
		"(first 201 %s after it, the old primary back as a replica %s after it); 503s %d; refused by MongoDB's cap %v, dropped as lost by the failover %v",
		c.name, created, foCapacity, max(0, created-foCapacity), len(stored), len(acked), lost, readmitted, refused,
		addedAtKill-addedAtCut, killed.Sub(cut).Round(time.Millisecond), createdAlone, missed,
		promotedAt.Sub(killed).Round(time.Millisecond), recovery.Round(time.Millisecond),
		firstCreatedAfter.Round(time.Millisecond), rejoinText, sp.unavailable.Load()+burst.unavailable.Load(), capRefused, vanished)

	// What every mode promises: one registration per email, and MongoDB
	// never past max_uses, whatever the stale replica admitted.
	if count != len(stored) {
		t.Errorf("I2: MongoDB counts %d registrations on %s for %d distinct emails", count, code, len(stored))
	}
	if len(stored) > foCapacity {
		t.Errorf("I1: MongoDB holds %d registrations for a code of %d", len(stored), foCapacity)
	}
	// A second failover (a Sentinel that lost sight of the new primary
	// promotes the restarted old one, with what it took alone) is logged:
	// it brings back what the control must lose.
	flipped := !v.stillPrimary()
	if flipped {
		t.Logf("%s: Redis failed over a second time, away from the promoted replica", c.name)
	}
	if c.wantLoss && lost == 0 && !flipped {
		t.Errorf("control: the primary acknowledged signups alone that nothing wrote to MongoDB, yet none is lost")
	}
	if len(silent) > 0 {
		t.Errorf("no answer other than 503 after the promotion from %s", strings.Join(silent, ", "))
	}
	if !c.assert {
		return
	}
	if lost != 0 {
		t.Errorf("I3: %d acknowledged signups are not in MongoDB", lost)
	}
	if created > foCapacity {
		t.Errorf("I1: %d answers 201 for a code of %d", created, foCapacity)
	}
	if readmitted != 0 || refused != 0 {
		t.Errorf("I2: of the emails MongoDB holds, %d were admitted again and %d refused on a repeat; want 200 for each", readmitted, refused)
	}
}

// repeatStored posts every email in stored again and returns how many were
// admitted anew (201) and how many were refused as if new (410) instead of
// answered 200; any other answer fails the test.
func repeatStored(t *testing.T, targets []string, code string, stored map[string]bool) (readmitted, refused int) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	work := make(chan string)
	var (
		mu        sync.Mutex
		unexpects []string
		wg        sync.WaitGroup
	)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := w
			for em := range work {
				i++
				st, err := 0, error(nil)
				// A 503 (a replica not back yet) is retried, as a user would.
				for attempt := 0; attempt < 100; attempt++ {
					st, err = postStatus(client, targets[(i+attempt)%len(targets)], code, em)
					if err == nil && st != http.StatusServiceUnavailable {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				mu.Lock()
				switch {
				case err == nil && st == http.StatusOK:
				case err == nil && st == http.StatusCreated:
					readmitted++
				case err == nil && st == http.StatusGone:
					refused++
				default:
					unexpects = append(unexpects, fmt.Sprintf("%d %v", st, err))
				}
				mu.Unlock()
			}
		}()
	}
	ems := make([]string, 0, len(stored))
	for em := range stored {
		ems = append(ems, em)
	}
	slices.Sort(ems)
	for _, em := range ems {
		work <- em
	}
	close(work)
	wg.Wait()
	if len(unexpects) > 0 {
		t.Errorf("a repeat of an email MongoDB holds answered %d times other than 200, 201 or 410, first: %s", len(unexpects), unexpects[0])
	}
	return readmitted, refused
}
