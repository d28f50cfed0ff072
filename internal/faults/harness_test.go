package faults_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
)

func TestMain(m *testing.M) {
	testenv.ServeMongoIfChild()
	os.Exit(m.Run())
}

const shards = 4

// stack is one deployment made of real processes: a redis-server with AOF
// (appendfsync always), a MongoDB-wire server in a process of its own, and
// the invitegate processes a test starts.
type stack struct {
	t      *testing.T
	bin    string
	redis  *testenv.RedisServer       // the single node (nil on a Sentinel group or a cluster)
	group  *testenv.SentinelGroup     // with layout.sentinel
	rc     *testenv.ReplicatedCluster // with layout.cluster
	mongo  *testenv.MongoProcess
	store  *persist.Store
	rdb    redis.UniversalClient // follows the current primary (Sentinel) or slot owner (cluster)
	ns     string
	shards int
	env    []string
}

// layout is the Redis deployment newStackOn starts; the zero value is one
// redis-server with AOF (appendfsync always).
type layout struct {
	// sentinel: a primary and its replica (AOF, appendfsync always) watched
	// by three Sentinels (testenv.StartSentinelGroup).
	sentinel bool
	// cluster: a 3-master Redis Cluster with one replica per master
	// (testenv.StartReplicatedCluster).
	cluster bool
	// shards is K (default the package's shards).
	shards int
}

func newStack(t *testing.T) *stack { return newStackOn(t, layout{}) }

func newStackOn(t *testing.T, l layout) *stack {
	t.Helper()
	if testing.Short() {
		t.Skip("fault injection runs real processes")
	}
	if l.shards == 0 {
		l.shards = shards
	}
	s := &stack{
		t:      t,
		bin:    testenv.BuildInvitegate(t),
		mongo:  testenv.StartMongoProcess(t),
		ns:     "igv1",
		shards: l.shards,
	}
	var redisEnv []string
	switch {
	case l.sentinel:
		// 2 s rather than the group's 1 s: on a busy machine a Sentinel
		// that has not heard from a just-promoted primary for 1 s fails it
		// over again, back to the old primary once that is restarted.
		s.group = testenv.StartSentinelGroup(t, testenv.SentinelOptions{DownAfter: 2 * time.Second})
		s.rdb = redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.group.MasterName, SentinelAddrs: s.group.SentinelAddrs()})
		redisEnv = []string{"INVITEGATE_REDIS_ADDRS=" + strings.Join(s.group.SentinelAddrs(), ","),
			"INVITEGATE_REDIS_SENTINEL_MASTER=" + s.group.MasterName}
	case l.cluster:
		s.rc = testenv.StartReplicatedCluster(t)
		// Reloaded every second, as the service's client is: a master that
		// died and stays dead answers no MOVED.
		s.rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: s.rc.Addrs(), ClusterStateReloadInterval: time.Second})
		redisEnv = []string{"INVITEGATE_REDIS_ADDRS=" + strings.Join(s.rc.Addrs(), ","), "INVITEGATE_REDIS_CLUSTER=true"}
	default:
		s.redis = testenv.StartRedis(t, testenv.RedisOptions{AOF: true, AppendFsync: "always"})
		s.rdb = redis.NewClient(&redis.Options{Addr: s.redis.Addr})
		redisEnv = []string{"INVITEGATE_REDIS_ADDRS=" + s.redis.Addr}
	}
	t.Cleanup(func() { s.rdb.Close() })
	db := testenv.DBName(t)
	mc, err := mongo.Connect(options.Client().ApplyURI(s.mongo.URI).SetTimeout(10 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mc.Disconnect(context.Background()) })
	s.store = persist.NewStore(mc.Database(db), nil, nil)
	s.env = append(redisEnv,
		"INVITEGATE_MONGO_URI="+s.mongo.URI, "INVITEGATE_MONGO_DB="+db,
		"INVITEGATE_SHARDS="+strconv.Itoa(s.shards), "INVITEGATE_REDIS_NAMESPACE="+s.ns,
		"INVITEGATE_SHUTDOWN_GRACE=200ms", "INVITEGATE_SHUTDOWN_TIMEOUT=10s", "INVITEGATE_LOG_LEVEL=warn",
		"INVITEGATE_REQUEST_TIMEOUT=1s", "INVITEGATE_RECONCILER_CLAIM_IDLE=2s",
	)
	return s
}

func (s *stack) create(code string, max int) {
	s.t.Helper()
	if err := s.store.CreateInvitation(context.Background(), invite.Invitation{Code: code, MaxUses: max}); err != nil {
		s.t.Fatal(err)
	}
}

// start runs n invitegate processes of mode with the stack's environment
// plus env.
func (s *stack) start(n int, mode string, env ...string) []*testenv.Process {
	s.t.Helper()
	var ps []*testenv.Process
	for i := 0; i < n; i++ {
		p := testenv.NewProcess(s.t, s.bin, mode, append(append([]string{}, s.env...), env...)...)
		p.Start(s.t)
		ps = append(ps, p)
	}
	return ps
}

func publics(ps []*testenv.Process) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Public)
	}
	return out
}

// spike is a crowd of clients posting distinct emails to one code through
// the given replicas, the way landing pages do: a connection error or a 503
// is retried with the same email on the next replica, so every email ends
// with a definite answer.
type spike struct {
	code    string
	targets []string
	workers int
	pace    time.Duration // pause between one client's emails
	// giveUp: a client that gets a 503 (or no answer) gives up on its
	// email and never retries; the 503 is its final answer.
	giveUp bool
	// onAnswer, if set, sees every attempt: the replica asked, when the
	// request was sent and answered, and the status (0: no answer).
	onAnswer func(target, email string, sent, answered time.Time, status int)

	sent, retried, unavailable atomic.Int64
	progress                   atomic.Int64 // emails with a definite answer
	admitted                   atomic.Int64 // 201s so far
	mu                         sync.Mutex
	final                      map[string]int // email → its definite status
	unexpected                 []string
}

func newSpike(code string, targets []string, workers int) *spike {
	return &spike{code: code, targets: targets, workers: workers, final: map[string]int{}}
}

func (sp *spike) run(t *testing.T, emails []string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: sp.workers}}
	defer client.CloseIdleConnections()
	work := make(chan string)
	var wg sync.WaitGroup
	for w := 0; w < sp.workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for em := range work {
				sp.one(client, w, em)
				if sp.pace > 0 {
					time.Sleep(sp.pace)
				}
			}
		}()
	}
	for _, em := range emails {
		work <- em
	}
	close(work)
	wg.Wait()
}

func (sp *spike) one(client *http.Client, w int, em string) {
	deadline := time.Now().Add(90 * time.Second)
	for attempt := 0; ; attempt++ {
		target := sp.targets[(w+attempt)%len(sp.targets)]
		sp.sent.Add(1)
		sent := time.Now()
		status, err := postStatus(client, target, sp.code, em)
		if sp.onAnswer != nil {
			sp.onAnswer(target, em, sent, time.Now(), status)
		}
		if err == nil && status == http.StatusServiceUnavailable {
			sp.unavailable.Add(1)
		}
		if sp.giveUp && (err != nil || status == http.StatusServiceUnavailable) {
			sp.mu.Lock()
			sp.final[em] = status
			sp.mu.Unlock()
			sp.progress.Add(1)
			return
		}
		if err == nil && status != http.StatusServiceUnavailable {
			sp.mu.Lock()
			sp.final[em] = status
			switch status {
			case 200, 201, 409, 410:
			default:
				sp.unexpected = append(sp.unexpected, fmt.Sprintf("%s: %d", em, status))
			}
			sp.mu.Unlock()
			if status == 201 {
				sp.admitted.Add(1)
			}
			sp.progress.Add(1)
			return
		}
		if time.Now().After(deadline) {
			sp.mu.Lock()
			sp.unexpected = append(sp.unexpected, fmt.Sprintf("%s: no answer for 90s (last error %v)", em, err))
			sp.mu.Unlock()
			sp.progress.Add(1)
			return
		}
		sp.retried.Add(1)
		time.Sleep(50 * time.Millisecond)
	}
}

func postStatus(client *http.Client, target, code, em string) (int, error) {
	resp, err := client.Post("http://"+target+"/invitations/"+code, "application/json", strings.NewReader(`{"email":"`+em+`"}`))
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// acked returns the emails answered 2xx.
func (sp *spike) acked() map[string]bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	out := map[string]bool{}
	for em, st := range sp.final {
		if st == 200 || st == 201 {
			out[em] = true
		}
	}
	return out
}

// waitFor polls cond every 20ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func emails(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d@example.com", prefix, i)
	}
	return out
}

// check says what verify may expect.
type check struct {
	// full: demand exceeded capacity, so exactly max must be taken and
	// Redis' remaining + persisted == max.
	full bool
	// noReconciler: nothing drains the streams; do not wait for them.
	noReconciler bool
}

// verify checks I1–I4 for code once the reconciler has had time to write
// everything, and logs the scenario's counts. acked are the emails
// acknowledged (2xx) on code.
func (s *stack) verify(name, code string, capacity int, acked map[string]bool, sent int64, c check) {
	t := s.t
	t.Helper()
	ctx := context.Background()
	var stored map[string]bool
	lost := func() int {
		stored = map[string]bool{}
		err := s.store.ForEachRegistration(ctx, code, func(canonical, _ string) error {
			stored[canonical] = true
			return nil
		})
		if err != nil {
			return -1
		}
		n := 0
		for em := range acked {
			if !stored[em] {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(60 * time.Second)
	missing := lost()
	for (missing != 0 || (!c.noReconciler && s.backlog() != 0)) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		missing = lost()
	}
	over := max(0, len(stored)-capacity)
	t.Logf("%s: sent %d, acknowledged %d, persisted %d, over-admitted %d, lost %d",
		name, sent, len(acked), len(stored), over, missing)
	if missing != 0 {
		t.Errorf("I3: %d acknowledged signups are not in MongoDB", missing)
	}
	if over > 0 {
		t.Errorf("I1: %d registrations for a code of capacity %d", len(stored), capacity)
	}
	// I2: the registrations collection is keyed by canonical email, so one
	// email cannot be stored twice; each acknowledged email must be on the
	// code it was acknowledged for (checked above through stored).
	if c.full {
		if len(stored) != capacity {
			t.Errorf("I4: demand exceeded capacity but %d of %d seats were taken", len(stored), capacity)
		}
		rem, ok, err := reserve.New(s.rdb, reserve.Config{Namespace: s.ns, Shards: s.shards}).Remaining(ctx, code)
		if err != nil || !ok || rem+len(stored) != capacity {
			t.Errorf("I4: Redis remaining %d (ok %v, err %v) + persisted %d != %d", rem, ok, err, len(stored), capacity)
		}
	}
}

// backlog is the number of reservations in the streams not yet
// acknowledged by a reconciler (-1 if Redis cannot be asked).
func (s *stack) backlog() int64 {
	var n int64
	for sh := 0; sh < s.shards; sh++ {
		l, err := s.rdb.XLen(context.Background(), streamKey(s.ns, sh)).Result()
		if err != nil {
			return -1
		}
		n += l
	}
	return n
}

// streamKey is the reservation stream of shard (see internal/reserve/keys.go).
func streamKey(ns string, shard int) string { return fmt.Sprintf("{%s:%d}:x", ns, shard) }

func (sp *spike) check(t *testing.T) {
	t.Helper()
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if len(sp.unexpected) > 0 {
		t.Fatalf("%d unexpected answers, first: %s", len(sp.unexpected), sp.unexpected[0])
	}
}
