package app_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/invitegate/invitegate/internal/app"
	"github.com/invitegate/invitegate/internal/config"
	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/testenv"
)

// deployment is one Redis + MongoDB setup the service runs on.
type deployment struct {
	name    string
	cluster bool
	shards  int
}

var deployments = []deployment{
	{"redis/K=1", false, 1},
	{"redis/K=16", false, 16},
	{"cluster/K=1", true, 1},
	{"cluster/K=16", true, 16},
}

// env is a test deployment: its config and direct access to its stores.
type env struct {
	cfg   config.Config
	log   *logrus.Logger // nil: discarded
	db    *mongo.Database
	store *persist.Store
	rdb   redis.UniversalClient
}

func newEnv(tb testing.TB, d deployment) *env {
	tb.Helper()
	// The documented defaults, then what a test deployment changes.
	cfg, err := config.Load("test", nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.HTTPAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.RedisCluster = d.cluster
	cfg.RedisNamespace = testenv.KeyPrefix(tb)
	cfg.MongoURI, cfg.MongoDB = testenv.Mongo(tb), testenv.DBName(tb)
	cfg.Shards = d.shards
	cfg.RequestTimeout = 5 * time.Second
	cfg.UnknownCodeTTL = time.Second
	cfg.ShutdownGrace, cfg.ShutdownTimeout = 0, 10*time.Second
	cfg.LogLevel, cfg.LogFormat = "warn", "text"
	if d.cluster {
		cfg.RedisAddrs = testenv.SharedRedisCluster(tb)
	} else {
		cfg.RedisAddrs = []string{testenv.SharedRedis(tb)}
	}
	if err := cfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	mc, err := mongo.Connect(options.Client().ApplyURI(cfg.MongoURI))
	if err != nil {
		tb.Fatal(err)
	}
	db := mc.Database(cfg.MongoDB)
	tb.Cleanup(func() {
		db.Drop(context.Background())
		mc.Disconnect(context.Background())
	})
	rdb := app.NewRedis(cfg, 8)
	tb.Cleanup(func() { rdb.Close() })
	return &env{cfg: cfg, db: db, store: persist.NewStore(db, nil, nil), rdb: rdb}
}

func (e *env) create(tb testing.TB, code string, max int) {
	tb.Helper()
	if err := e.store.CreateInvitation(context.Background(), invite.Invitation{Code: code, MaxUses: max}); err != nil {
		tb.Fatal(err)
	}
}

// start runs one invitegate serve process in-process; stop shuts it down
// gracefully (as SIGTERM does) and waits.
func (e *env) start(tb testing.TB) (m *app.Main, stop func()) {
	tb.Helper()
	return e.startMode(tb, app.Serve)
}

// startMode is start for any mode (app.Reconcile runs no public API).
func (e *env) startMode(tb testing.TB, mode app.Mode) (m *app.Main, stop func()) {
	tb.Helper()
	log := e.log
	if log == nil {
		log = logrus.New()
		log.SetOutput(io.Discard)
	}
	m = &app.Main{Config: e.cfg, Mode: mode, Logger: log}
	ctx, cancel := context.WithCancel(context.Background())
	if err := m.Open(ctx); err != nil {
		cancel()
		tb.Fatalf("open: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	testenv.WaitFor(tb, 10*time.Second, "the service to become ready", func() bool { return testenv.Readyz(m.AdminAddr) == http.StatusOK })
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("run: %v", err)
			}
		})
	}
	tb.Cleanup(stop)
	return m, stop
}

var client = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{MaxConnsPerHost: 64, MaxIdleConnsPerHost: 64},
}

func post(tb testing.TB, base, code, email string) int {
	resp, err := client.Post("http://"+base+"/invitations/"+code, "application/json",
		bytes.NewBufferString(fmt.Sprintf(`{"email":%q}`, email)))
	if err != nil {
		tb.Errorf("POST %s: %v", code, err)
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// blast sends one POST per email concurrently, spread over the servers,
// and returns the status of each email.
func blast(tb testing.TB, servers []string, code string, emails []string) map[string]int {
	tb.Helper()
	return blastN(tb, 256, servers, code, emails)
}

// blastN is blast with at most n requests in flight.
func blastN(tb testing.TB, n int, servers []string, code string, emails []string) map[string]int {
	tb.Helper()
	var mu sync.Mutex
	out := make(map[string]int, len(emails))
	var wg sync.WaitGroup
	sem := make(chan struct{}, n)
	for i, em := range emails {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			st := post(tb, servers[i%len(servers)], code, em)
			mu.Lock()
			out[em] = st
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// raceCodes sends every email to c1, c2 and c3 at once (n in flight per
// code) and returns the code each email won. Every email must win exactly
// one; any other answer must be one of losers.
func raceCodes(tb testing.TB, n int, servers []string, race []string, losers ...int) map[string]string {
	tb.Helper()
	codes := []string{"c1", "c2", "c3"}
	var wg sync.WaitGroup
	results := make([]map[string]int, len(codes))
	for i, code := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = blastN(tb, n, servers, code, race)
		}()
	}
	wg.Wait()
	wins := map[string]string{}
	for i, code := range codes {
		for em, st := range results[i] {
			switch {
			case st == 201:
				if prev, ok := wins[em]; ok {
					tb.Fatalf("%s won %s and %s", em, prev, code)
				}
				wins[em] = code
			case !slices.Contains(losers, st):
				tb.Fatalf("%s on %s: status %d", em, code, st)
			}
		}
	}
	if len(wins) != len(race) {
		tb.Fatalf("%d emails won a code, want %d", len(wins), len(race))
	}
	return wins
}

func tally(statuses map[string]int) map[int]int {
	t := map[int]int{}
	for _, s := range statuses {
		t[s]++
	}
	return t
}

func emails(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d@example.com", prefix, i)
	}
	return out
}

// waitPersisted waits until MongoDB holds want registrations of code. It
// waits on the reconciler's progress, not on the clock: it fails only when
// for stallTimeout neither the count rose nor the reservations left in the
// streams went down. A loaded CI machine may persist slowly; a reconciler
// that stopped is still caught.
func (e *env) waitPersisted(tb testing.TB, code string, want int) {
	tb.Helper()
	const stallTimeout = 60 * time.Second
	ctx := context.Background()
	var n, backlog int64 = -1, -1
	var err error
	progress := time.Now()
	for {
		var c, b int64
		c, err = e.db.Collection(persist.RegistrationsCollection).CountDocuments(ctx, bson.D{{Key: "invitation", Value: code}})
		if err == nil && c == int64(want) {
			return
		}
		b, berr := e.backlog(ctx)
		if (err == nil && c > n) || (berr == nil && (backlog < 0 || b < backlog)) {
			progress = time.Now()
		}
		if err == nil {
			n = max(n, c)
		}
		if berr == nil {
			backlog = b
		}
		if time.Since(progress) > stallTimeout {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.Fatalf("%s: %d registrations in MongoDB (err %v), want %d; no progress for %s with %d reservations left in the streams", code, n, err, want, stallTimeout, backlog)
}

// backlog returns how many reservations the deployment's streams hold (not
// yet written to MongoDB).
func (e *env) backlog(ctx context.Context) (int64, error) {
	var total int64
	for s := 0; s < e.cfg.Shards; s++ {
		n, err := e.rdb.XLen(ctx, fmt.Sprintf("{%s:%d}:x", e.cfg.RedisNamespace, s)).Result()
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// TestInvariants drives real servers over HTTP on every deployment:
// a 5,000-email spike on a code of 1,000 through two replicas (I1, I3, I4),
// the same emails racing on three codes (I2), then Redis wiped and the
// service restarted (I5).
func TestInvariants(t *testing.T) {
	for _, d := range deployments {
		t.Run(d.name, func(t *testing.T) {
			ctx := context.Background()
			began := time.Now()
			e := newEnv(t, d)
			e.create(t, "spike", 1000)
			e.create(t, "c1", 1000)
			e.create(t, "c2", 1000)
			e.create(t, "c3", 1000)
			e.create(t, "half", 10)
			m1, stop1 := e.start(t)
			m2, stop2 := e.start(t)
			servers := []string{m1.PublicAddr, m2.PublicAddr}

			// I1 + I4: exactly capacity admitted, the rest told "full".
			spike := blast(t, servers, "spike", emails("spike", 5000))
			if got := tally(spike); got[201] != 1000 || got[410] != 4000 || len(got) != 2 {
				t.Fatalf("spike statuses %v, want 1000×201 and 4000×410", got)
			}
			t.Logf("spike done after %s", time.Since(began))
			// I2 under a race: the same 1,500 emails on three codes at once;
			// a loser is taken by another code, or this code filled first.
			wins := raceCodes(t, 256, servers, emails("race", 1500), 409, 410)
			// A registered email: 200 on its code, 409 on another, after full too.
			for _, s := range servers {
				if st := post(t, s, "spike", firstWith(spike, 201)); st != 200 {
					t.Fatalf("registered email again: %d, want 200", st)
				}
				if st := post(t, s, "c1", firstWith(spike, 201)); st != 409 {
					t.Fatalf("registered email on another code: %d, want 409", st)
				}
			}
			blast(t, servers, "half", emails("half", 4))

			// I3: everything acknowledged reaches MongoDB, once.
			e.waitPersisted(t, "spike", 1000)
			perCode := map[string]int{}
			for _, c := range wins {
				perCode[c]++
			}
			for _, c := range []string{"c1", "c2", "c3"} {
				e.waitPersisted(t, c, perCode[c])
			}
			e.waitPersisted(t, "half", 4)
			stored := e.registrations(t)
			for em, code := range wins {
				if stored[em] != code {
					t.Fatalf("%s in MongoDB on %q, want %s", em, stored[em], code)
				}
			}
			t.Logf("persisted and checked after %s", time.Since(began))
			for code, want := range map[string]int{"spike": 0, "half": 6} {
				if rem, _, err := m1.Reserver.Remaining(ctx, code); err != nil || rem != want {
					t.Fatalf("%s remaining = %d, %v; want %d", code, rem, err, want)
				}
			}

			// I5: wipe Redis, restart, everything is rebuilt from MongoDB.
			stop1()
			stop2()
			t.Logf("stopped after %s", time.Since(began))
			testenv.Wipe(t, e.rdb, e.cfg.RedisNamespace)
			m3, _ := e.start(t)
			t.Logf("restarted after %s", time.Since(began))
			for code, want := range map[string]int{"spike": 0, "half": 6} {
				if rem, _, err := m3.Reserver.Remaining(ctx, code); err != nil || rem != want {
					t.Fatalf("after wipe: %s remaining = %d, %v; want %d", code, rem, err, want)
				}
			}
			s := []string{m3.PublicAddr}
			registered := firstWith(spike, 201)
			for _, c := range []struct {
				code, email string
				want        int
			}{
				{"spike", registered, 200},
				{"c2", registered, 409},
				{"spike", "newcomer@example.com", 410},
				{"half", "half-0@example.com", 200},
				{"half", "newcomer@example.com", 201},
			} {
				if st := post(t, s[0], c.code, c.email); st != c.want {
					t.Fatalf("after wipe: %s on %s: %d, want %d", c.email, c.code, st, c.want)
				}
			}
			// The seats left on "half" are exactly what MongoDB says.
			rest := blast(t, s, "half", emails("late", 20))
			if got := tally(rest); got[201] != 5 || got[410] != 15 {
				t.Fatalf("after wipe, half: %v; want 5×201 and 15×410", got)
			}
			e.waitPersisted(t, "half", 10)
			t.Logf("done after %s", time.Since(began))
		})
	}
}

// registrations returns MongoDB's registrations: canonical email -> code.
func (e *env) registrations(tb testing.TB) map[string]string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := map[string]string{}
	err := e.store.ForEachRegistration(ctx, "", func(canonical, code string) error {
		if prev, ok := out[canonical]; ok {
			tb.Errorf("%s registered twice (%s, %s)", canonical, prev, code)
		}
		out[canonical] = code
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func firstWith(statuses map[string]int, want int) string {
	for em, st := range statuses {
		if st == want {
			return em
		}
	}
	return ""
}

// TestPprofOnlyWhenAskedAndOnlyOnAdmin: the profiler is off by default;
// INVITEGATE_PPROF serves it on the admin listener and never on the
// public one.
func TestPprofOnlyWhenAskedAndOnlyOnAdmin(t *testing.T) {
	status := func(url string) int {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	e := newEnv(t, deployments[0])
	m, stop := e.start(t)
	if got := status("http://" + m.AdminAddr + "/debug/pprof/"); got != http.StatusNotFound {
		t.Errorf("pprof off: admin /debug/pprof/ answered %d, want 404", got)
	}
	stop()

	e.cfg.Pprof = true
	m, _ = e.start(t)
	if got := status("http://" + m.AdminAddr + "/debug/pprof/"); got != http.StatusOK {
		t.Errorf("pprof on: admin /debug/pprof/ answered %d, want 200", got)
	}
	if got := status("http://" + m.AdminAddr + "/debug/pprof/profile?seconds=1"); got != http.StatusOK {
		t.Errorf("pprof on: a CPU profile answered %d, want 200", got)
	}
	if got := status("http://" + m.PublicAddr + "/debug/pprof/"); got != http.StatusNotFound {
		t.Errorf("pprof on: public /debug/pprof/ answered %d, want 404", got)
	}
	// The command line may carry passwords (--redis-password, --mongo-uri).
	if got := status("http://" + m.AdminAddr + "/debug/pprof/cmdline"); got == http.StatusOK {
		t.Errorf("pprof on: /debug/pprof/cmdline answered 200; it must not be served")
	}
}

// TestWarnsWhenRedisMayEvict: a Redis (a node, or any primary of a
// cluster) that may evict keys when full is named in a warning at start;
// with noeviction, Redis' default, nothing is said.
func TestWarnsWhenRedisMayEvict(t *testing.T) {
	setPolicy := func(addrs []string, policy string) {
		t.Helper()
		for _, a := range addrs {
			c := redis.NewClient(&redis.Options{Addr: a})
			err := c.ConfigSet(context.Background(), "maxmemory-policy", policy).Err()
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, d := range []deployment{deployments[0], deployments[3]} {
		t.Run(d.name, func(t *testing.T) {
			e := newEnv(t, d)
			var addrs []string
			if d.cluster {
				addrs = testenv.StartRedisCluster(t)
			} else {
				addrs = []string{testenv.StartRedis(t, testenv.RedisOptions{}).Addr}
			}
			e.cfg.RedisAddrs = addrs
			for _, tc := range []struct {
				policy string
				warned bool
			}{{"noeviction", false}, {"allkeys-lru", true}} {
				setPolicy(addrs[len(addrs)-1:], tc.policy) // one node is enough to be named
				var logs testenv.Buffer
				e.log = logrus.New()
				e.log.SetOutput(&logs)
				_, stop := e.start(t)
				stop()
				out := logs.String()
				if got := strings.Contains(out, "maxmemory_policy=allkeys-lru"); got != tc.warned {
					t.Errorf("policy %s: warned = %v, want %v; log:\n%s", tc.policy, got, tc.warned, out)
				}
				if tc.warned && !strings.Contains(out, addrs[len(addrs)-1]) {
					t.Errorf("the warning does not name the node %s:\n%s", addrs[len(addrs)-1], out)
				}
			}
		})
	}
}

// TestShutdownSequence: on shutdown /readyz turns 503 at once while the
// replica keeps serving through the grace period, also on a keep-alive
// connection that was idle when shutdown began (a balancer may send on it
// at any moment; closing it then can lose a request already read); those
// answers carry "Connection: close", and then the port closes.
func TestShutdownSequence(t *testing.T) {
	e := newEnv(t, deployments[0])
	e.cfg.ShutdownGrace = 1500 * time.Millisecond
	e.create(t, "bye", 100)
	m, stop := e.start(t)
	conn, err := net.Dial("tcp", m.PublicAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	signup := func(addr string) *http.Response {
		t.Helper()
		body := `{"email":"` + addr + `"}`
		fmt.Fprintf(conn, "POST /invitations/bye HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("signup %s on the kept-alive connection: %v", addr, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if resp := signup("before@example.com"); resp.StatusCode != 201 || resp.Close {
		t.Fatalf("before shutdown: %d, close=%v; want 201, connection kept", resp.StatusCode, resp.Close)
	}
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	testenv.WaitFor(t, time.Second, "/readyz to turn 503 after shutdown began", func() bool { return testenv.Readyz(m.AdminAddr) == http.StatusServiceUnavailable })
	if resp := signup("during@example.com"); resp.StatusCode != 201 || !resp.Close {
		t.Fatalf("during the grace period: %d, close=%v; want 201 with Connection: close", resp.StatusCode, resp.Close)
	}
	<-stopped
	if c, err := net.DialTimeout("tcp", m.PublicAddr, time.Second); err == nil {
		c.Close()
		t.Fatal("the public port still accepts after shutdown")
	}
	e.waitPersisted(t, "bye", 2)
}
