package bench_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	vegeta "github.com/tsenart/vegeta/v12/lib"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/invitegate/invitegate/internal/invite"
	"github.com/invitegate/invitegate/internal/persist"
	"github.com/invitegate/invitegate/internal/reserve"
	"github.com/invitegate/invitegate/internal/testenv"
)

func TestMain(m *testing.M) {
	testenv.ServeMongoIfChild()
	serveFloorIfChild()
	os.Exit(m.Run())
}

// sizes of one benchmark run.
type sizes struct {
	capacity    int           // max_uses of every code
	spike       int           // distinct emails in the spike, and again once sold out
	rounds      int           // closed-loop comparisons run this often, interleaved; the median is reported
	retry       int           // registered emails submitting again (capacity per code)
	rates       []int         // fixed rates, requests/s
	rateFor     time.Duration // length of each fixed-rate run
	baseline    int           // distinct emails in the MongoDB-only spike
	workers     int           // closed-loop clients
	baseWorkers int           // closed-loop clients of the baseline (its best concurrency)
	drainAfter  time.Duration // longest wait for the reconciler before checking
}

// full is what docs/BENCHMARKS.md reports (INVITEGATE_BENCH=full).
var full = sizes{
	capacity: 1000, spike: 100_000, rounds: 3, retry: 10_000,
	rates: []int{2000, 5000, 10000}, rateFor: 30 * time.Second,
	baseline: 5_000, workers: 64, baseWorkers: 8, drainAfter: 2 * time.Minute,
}

// smoke runs every scenario on small sizes inside `make test`: it proves
// the harness works and checks the invariants after each scenario; its
// timings mean nothing (the race detector is on).
var smoke = sizes{
	capacity: 100, spike: 2000, rounds: 1, retry: 300,
	rates: []int{200}, rateFor: time.Second,
	baseline: 200, workers: 16, baseWorkers: 4, drainAfter: time.Minute,
}

// TestViralSpike is `make bench`. See the package documentation.
func TestViralSpike(t *testing.T) {
	if testing.Short() {
		t.Skip("the benchmark harness runs real processes")
	}
	sz := smoke
	if os.Getenv("INVITEGATE_BENCH") == "full" {
		sz = full
	}
	for env, p := range map[string]*int{
		"INVITEGATE_BENCH_WORKERS": &sz.workers, "INVITEGATE_BENCH_SPIKE": &sz.spike,
		"INVITEGATE_BENCH_ROUNDS": &sz.rounds, "INVITEGATE_BENCH_BASELINE": &sz.baseline,
	} {
		if n, err := strconv.Atoi(os.Getenv(env)); err == nil && n > 0 {
			*p = n
		}
	}
	if v := os.Getenv("INVITEGATE_BENCH_RATES"); v != "" {
		sz.rates = nil
		for _, f := range strings.Split(v, ",") {
			if n, err := strconv.Atoi(f); err == nil && n > 0 {
				sz.rates = append(sz.rates, n)
			}
		}
	}
	bin := testenv.BuildInvitegate(t)
	mongoSrv := testenv.StartMongoProcess(t)
	// In production MongoDB runs on machines of its own; here it shares the
	// two cores with the service, Redis and the load generator. It runs at
	// a lower priority, so its bursts (the reconciler's inserts while codes
	// fill) take idle CPU first; INVITEGATE_BENCH_MONGO_NICE=0 turns it off.
	nice := 10
	if v, err := strconv.Atoi(os.Getenv("INVITEGATE_BENCH_MONGO_NICE")); err == nil {
		nice = v
	}
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, mongoSrv.Pid(), nice); err != nil {
		t.Logf("could not lower the MongoDB-wire server's priority: %v", err)
	}
	var tab table
	var rounds, rounds16, roundsR, roundsM series
	sections := benchSections(t)
	if sections["k1"] {
		benchK1(t, bin, mongoSrv, sz, &tab, &rounds)
	}
	if sections["k16"] {
		benchK16(t, bin, mongoSrv, sz, &tab, &rounds16)
	}
	if sections["baseline"] {
		// The baseline: a spike with seats taken in MongoDB alone.
		sm := newStack(t, bin, mongoSrv, "mongo", 1, sz)
		base := sm.codes(t, "spike", 1)
		sm.start(t)
		tab.add(sm.run(t, "baseline spike (RESERVER=mongo)", sm.svc, load{prefix: "spike", codes: base, n: sz.baseline, workers: sz.baseWorkers}))
	}
	if sections["replica"] {
		benchAckReplica(t, bin, mongoSrv, sz, &tab, &roundsR)
	}
	if sections["mongo"] {
		benchAckMongo(t, bin, mongoSrv, sz, &tab, &roundsM)
	}

	tab.print(os.Stdout)
	for _, r := range append(append(rounds.all(), rounds16.all()...), append(append(roundsR.all(), roundsM.all()...), tab.rows...)...) {
		if r.check != "ok" {
			t.Errorf("%s: %s", r.name, r.check)
		}
	}
}

// benchSectionNames are the parts of TestViralSpike, in the order they run.
var benchSectionNames = []string{"k1", "k16", "baseline", "replica", "mongo"}

// benchSections returns the sections INVITEGATE_BENCH_ONLY names
// (comma-separated, e.g. "replica" or "k1,baseline"); empty: all of them.
func benchSections(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	v := os.Getenv("INVITEGATE_BENCH_ONLY")
	if v == "" {
		for _, n := range benchSectionNames {
			out[n] = true
		}
		return out
	}
	for _, n := range strings.Split(v, ",") {
		n = strings.TrimSpace(n)
		if !slices.Contains(benchSectionNames, n) {
			t.Fatalf("INVITEGATE_BENCH_ONLY: unknown section %q, want some of %v", n, benchSectionNames)
		}
		out[n] = true
	}
	return out
}

// benchK1 is K=1 on one redis-server. The throughput comparison runs in
// rounds, the floor and the service taking turns, each round on a fresh
// code; the median round is reported, so one noisy moment on a shared
// machine does not decide a ratio.
func benchK1(t *testing.T, bin string, mongoSrv *testenv.MongoProcess, sz sizes, tab *table, rounds *series) {
	s := newStack(t, bin, mongoSrv, "redis", 1, sz)
	spikes, plainSpikes := s.roundCodes(t, "spike"), s.roundCodes(t, "plain")
	// The same spike on a code with a confirmation window: each 202 holds
	// a seat with the same one reserve.lua call. The window outlasts the
	// run, so no hold expires before verify counts them.
	confirms := s.roundCodesWindow(t, "confirm", confirmWindow)
	retry := s.codes(t, "retry", max(1, sz.retry/sz.capacity))
	rated := map[int][]string{}
	for _, rate := range sz.rates {
		rated[rate] = s.codes(t, fmt.Sprintf("rate%d", rate), 3)
	}
	s.start(t)
	// The same service without pipelining: one round trip per signup, as
	// the floor makes.
	plain := s.startService(t, "INVITEGATE_REDIS_PIPELINE=false")
	floor := s.startFloor(t)
	for i := range sz.rounds {
		s.floorRound(t, rounds, floor, fmt.Sprintf("floor%d", i))
		s.spikeRound(t, rounds, s.svc, "K=1", "", i, spikes[i])
		s.spikeRound(t, rounds, s.svc, "K=1, confirm code", "c", i, confirms[i])
		s.spikeRound(t, rounds, plain, "K=1, no pipelining", "plain", i, plainSpikes[i])
	}
	rounds.medians(tab)
	s.fillAndRetry(t, tab, s.svc, "K=1", "fill", retry)
	for _, rate := range sz.rates {
		tab.add(s.run(t, fmt.Sprintf("floor @ %d/s", rate), floor, load{prefix: fmt.Sprintf("floorat%d", rate), codes: []string{"floor"}, rate: rate}))
		tab.add(s.run(t, fmt.Sprintf("3 codes K=1 @ %d/s", rate), s.svc, load{prefix: fmt.Sprintf("rate%d", rate), codes: rated[rate], rate: rate}))
	}

}

// benchK16 is K=16 on a redis-server of its own: a spike that moves tokens
// between shards, then sold out, where a rejection must still cost one
// round trip.
func benchK16(t *testing.T, bin string, mongoSrv *testenv.MongoProcess, sz sizes, tab *table, rounds16 *series) {
	s16 := newStack(t, bin, mongoSrv, "redis", 16, sz)
	spikes16 := s16.roundCodes(t, "spike")
	s16.start(t)
	floor16 := s16.startFloor(t)
	for i := range sz.rounds {
		s16.floorRound(t, rounds16, floor16, fmt.Sprintf("floor%d", i))
		s16.spikeRound(t, rounds16, s16.svc, "K=16", "", i, spikes16[i])
	}
	rounds16.medians(tab)
}

// benchAckReplica measures INVITEGATE_ACK=replica against its control: two
// services on one primary with one replica (both appendfsync always),
// followed through three Sentinels, the same load, only INVITEGATE_ACK
// differing. The floor runs against the primary.
func benchAckReplica(t *testing.T, bin string, mongoSrv *testenv.MongoProcess, sz sizes, tab *table, rounds *series) {
	s := newStack(t, bin, mongoSrv, "sentinel", 1, sz)
	spikes, acked := s.roundCodes(t, "rspike"), s.roundCodes(t, "aspike")
	fills := max(1, sz.retry/sz.capacity)
	retry := s.codes(t, "rretry", fills)
	retryAcked := s.codes(t, "aretry", fills)
	s.start(t)
	ack := s.startService(t, "INVITEGATE_ACK=replica")
	floor := s.startFloor(t)
	for i := range sz.rounds {
		s.floorRound(t, rounds, floor, fmt.Sprintf("rfloor%d", i))
		s.spikeRound(t, rounds, s.svc, "K=1, with a replica, ack=redis", "r", i, spikes[i])
		s.spikeRound(t, rounds, ack, "K=1, ack=replica", "a", i, acked[i])
	}
	rounds.medians(tab)
	s.fillAndRetry(t, tab, s.svc, "K=1, with a replica, ack=redis", "rfill", retry)
	s.fillAndRetry(t, tab, ack, "K=1, ack=replica", "afill", retryAcked)
}

// confirmWindow is the confirmation window of the benchmark's confirm
// codes: far longer than a run, so every hold is still live when checked.
const confirmWindow = 30 * time.Minute

// roundCodes creates a fresh code for each round: <prefix><i>-0.
func (s *stack) roundCodes(t *testing.T, prefix string) [][]string {
	t.Helper()
	return s.roundCodesWindow(t, prefix, 0)
}

// roundCodesWindow is roundCodes for codes with a confirmation window
// (0: none).
func (s *stack) roundCodesWindow(t *testing.T, prefix string, window time.Duration) [][]string {
	t.Helper()
	out := make([][]string, s.sz.rounds)
	for i := range out {
		out[i] = s.codesWindow(t, fmt.Sprintf("%s%d", prefix, i), 1, window)
	}
	return out
}

// floorRound adds to rounds one round of the floor: sz.spike signups of
// new emails (prefix) on its one code.
func (s *stack) floorRound(t *testing.T, rounds *series, floor server, prefix string) {
	t.Helper()
	rounds.add(s.run(t, "floor", floor, load{prefix: prefix, codes: []string{"floor"}, n: s.sz.spike}))
}

// spikeRound adds to rounds round i of a spike on codes, scenario "spike
// <what>" (sz.spike new emails <stem>spike<i>-…), then as many more once
// the codes are full, "sold out <what>" (<stem>late<i>-…).
func (s *stack) spikeRound(t *testing.T, rounds *series, srv server, what, stem string, i int, codes []string) {
	t.Helper()
	rounds.add(s.run(t, "spike "+what, srv, load{prefix: fmt.Sprintf("%sspike%d", stem, i), codes: codes, n: s.sz.spike}))
	rounds.add(s.run(t, "sold out "+what, srv, load{prefix: fmt.Sprintf("%slate%d", stem, i), codes: codes, n: s.sz.spike}))
}

// fillAndRetry adds to tab the fill of codes, "fill <n> codes <what>"
// (sz.retry signups), then the very same signups again, "retry storm
// <what>".
func (s *stack) fillAndRetry(t *testing.T, tab *table, srv server, what, prefix string, codes []string) {
	t.Helper()
	tab.add(s.run(t, fmt.Sprintf("fill %d codes %s", len(codes), what), srv, load{prefix: prefix, codes: codes, n: s.sz.retry}))
	tab.add(s.run(t, "retry storm "+what, srv, load{prefix: prefix, codes: codes, n: s.sz.retry, repeat: true}))
}

// benchAckMongo measures INVITEGATE_ACK=mongo against the default on the
// same stores: each round a spike of twice a code's capacity (2,000 emails
// on a code of 1,000 at full size) on a fresh code per service. Every
// admission waits for MongoDB's group commit; the outcomes column shows
// whether any was answered 503.
func benchAckMongo(t *testing.T, bin string, mongoSrv *testenv.MongoProcess, sz sizes, tab *table, rounds *series) {
	s := newStack(t, bin, mongoSrv, "redis", 1, sz)
	plain := make([][]string, sz.rounds)
	acked := make([][]string, sz.rounds)
	for i := range sz.rounds {
		plain[i] = s.codes(t, fmt.Sprintf("mplain%d", i), 1)
		acked[i] = s.codes(t, fmt.Sprintf("macked%d", i), 1)
	}
	s.start(t)
	// A namespace of its own: its streams and consumer group are its own,
	// so the ack=redis service's reconciler does not write its entries
	// alongside its group commit.
	ack := s.startService(t, "INVITEGATE_ACK=mongo", "INVITEGATE_REDIS_NAMESPACE=igmongo")
	var ratios []float64
	for i := range sz.rounds {
		r := s.run(t, "spike 2 × capacity K=1, ack=redis", s.svc, load{prefix: fmt.Sprintf("mplain%d", i), codes: plain[i], n: 2 * sz.capacity})
		m := s.run(t, "spike 2 × capacity K=1, ack=mongo", ack, load{prefix: fmt.Sprintf("macked%d", i), codes: acked[i], n: 2 * sz.capacity})
		rounds.add(r)
		rounds.add(m)
		ratios = append(ratios, m.rps/r.rps)
	}
	rounds.medians(tab)
	sort.Float64s(ratios)
	t.Logf("spike 2 × capacity, ack=mongo / ack=redis: %.2f (median of the rounds' ratios %.2f)", ratios[len(ratios)/2], ratios)
}

// series collects the rounds of closed-loop runs by scenario name.
type series struct {
	names []string
	runs  map[string][]row
}

func (se *series) add(r row) {
	if se.runs == nil {
		se.runs = map[string][]row{}
	}
	if _, ok := se.runs[r.name]; !ok {
		se.names = append(se.names, r.name)
	}
	se.runs[r.name] = append(se.runs[r.name], r)
}

// medians adds each scenario's median run (by requests/s) to tab, in the
// order the scenarios first ran. A scenario's ratio to the floor is the
// median of its rounds' ratios, each against the floor run of the same
// round: a paired comparison, so drift of the machine between rounds
// cancels out.
func (se *series) medians(tab *table) {
	for _, name := range se.names {
		runs := se.runs[name]
		m := median(runs, func(r row) float64 { return r.rps })
		if len(runs) > 1 {
			var all []string
			for _, r := range runs {
				all = append(all, fmt.Sprintf("%.0f", r.rps))
			}
			m.note = "median of " + strings.Join(all, ", ")
		}
		if floors := se.runs["floor"]; name != "floor" && len(floors) == len(runs) {
			var ratios []row
			for i, r := range runs {
				ratios = append(ratios, row{rps: r.rps / floors[i].rps})
			}
			m.vsFloor = median(ratios, func(r row) float64 { return r.rps }).rps
		}
		tab.add(m)
	}
}

// median returns the run with the median key (the lower one of an even
// count: the conservative choice).
func median(runs []row, key func(row) float64) row {
	sorted := append([]row(nil), runs...)
	sort.Slice(sorted, func(i, j int) bool { return key(sorted[i]) < key(sorted[j]) })
	return sorted[(len(sorted)-1)/2]
}

func (se *series) all() []row {
	var out []row
	for _, name := range se.names {
		out = append(out, se.runs[name]...)
	}
	return out
}

// server is a process answering the signup API.
type server struct {
	addr  string
	pid   func() int
	admin string // admin listener; "" for the floor
}

// stack is one deployment: a redis-server of its own (none for
// RESERVER=mongo; a primary, a replica and three Sentinels for "sentinel"),
// a database of its own on the shared MongoDB-wire server,
// and one invitegate serve with the production defaults. Its invitations
// are created before the service starts (start), so none is answered from
// a snapshot of codes taken before it existed.
type stack struct {
	sz       sizes
	mongo    *testenv.MongoProcess
	redis    *testenv.RedisServer
	rdb      *redis.Client // the harness's own, for INFO and the backlog
	shards   int
	store    *persist.Store
	bin      string
	env      []string
	procs    []*testenv.Process
	svc      server
	storePid func() int

	caps     map[string]int             // code → max_uses
	windows  map[string]time.Duration   // code → confirmation window (absent: none)
	demand   map[string]int             // code → distinct new emails sent
	admitted map[string]map[string]bool // code → emails answered 201
	held     map[string]map[string]bool // code → emails answered 202 (codes with a window)
}

func newStack(t *testing.T, bin string, mongoSrv *testenv.MongoProcess, reserver string, shards int, sz sizes) *stack {
	t.Helper()
	s := &stack{
		sz: sz, mongo: mongoSrv, shards: shards, caps: map[string]int{}, windows: map[string]time.Duration{},
		demand: map[string]int{}, admitted: map[string]map[string]bool{}, held: map[string]map[string]bool{},
	}
	db := testenv.DBName(t)
	mc, err := mongo.Connect(options.Client().ApplyURI(mongoSrv.URI).SetTimeout(30 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mc.Disconnect(context.Background()) })
	s.store = persist.NewStore(mc.Database(db), nil, nil)
	env := []string{
		"INVITEGATE_MONGO_URI=" + mongoSrv.URI, "INVITEGATE_MONGO_DB=" + db,
		"INVITEGATE_SHARDS=" + strconv.Itoa(shards),
		"INVITEGATE_SHUTDOWN_GRACE=0s", "INVITEGATE_PPROF=true",
		// Required once an invitation has a confirmation window (the
		// confirmation links); without SMTP no email is sent.
		"INVITEGATE_PUBLIC_URL=http://localhost", "INVITEGATE_CONFIRM_SECRET=" + benchConfirmSecret,
	}
	s.storePid = mongoSrv.Pid
	switch reserver {
	case "redis":
		s.redis = testenv.StartRedis(t, testenv.RedisOptions{AOF: true, AppendFsync: "always"})
		env = append(env, "INVITEGATE_REDIS_ADDRS="+s.redis.Addr)
	case "sentinel":
		g := testenv.StartSentinelGroup(t, testenv.SentinelOptions{AppendFsync: "always"})
		s.redis = g.Nodes[0]
		env = append(env, "INVITEGATE_REDIS_ADDRS="+strings.Join(g.SentinelAddrs(), ","), "INVITEGATE_REDIS_SENTINEL_MASTER="+g.MasterName)
		reserver = "redis"
	}
	env = append(env, "INVITEGATE_RESERVER="+reserver)
	if s.redis != nil {
		// The store whose CPU is counted is the primary.
		s.storePid = s.redis.Pid
		s.rdb = redis.NewClient(&redis.Options{Addr: s.redis.Addr})
		t.Cleanup(func() { s.rdb.Close() })
	}
	s.bin, s.env = bin, env
	return s
}

// start runs the stack's service; it answers once it is ready.
func (s *stack) start(t *testing.T) {
	t.Helper()
	s.svc = s.startService(t)
}

// startService runs one more invitegate serve on the stack, with env on
// top of the stack's.
func (s *stack) startService(t *testing.T, env ...string) server {
	t.Helper()
	p := testenv.NewProcess(t, s.bin, "serve", append(append([]string{}, s.env...), env...)...)
	p.Start(t)
	s.procs = append(s.procs, p)
	return server{addr: p.Public, pid: p.Pid, admin: p.Admin}
}

// startFloor runs the floor against the stack's redis-server.
func (s *stack) startFloor(t *testing.T) server {
	t.Helper()
	addr := testenv.FreeAddr(t)
	c := testenv.NewChild(t, "floor", floorEnv+"="+addr+"|"+s.redis.Addr)
	c.Restart(t)
	return server{addr: addr, pid: c.Pid}
}

// benchConfirmSecret seals the bench services' confirmation links.
const benchConfirmSecret = "invitegate-bench-confirm-secret-0123456789abcdef"

// codes creates n invitations prefix-0 .. prefix-(n-1) of the run's
// capacity.
func (s *stack) codes(t *testing.T, prefix string, n int) []string {
	t.Helper()
	return s.codesWindow(t, prefix, n, 0)
}

// codesWindow is codes with a confirmation window (0: none).
func (s *stack) codesWindow(t *testing.T, prefix string, n int, window time.Duration) []string {
	t.Helper()
	var out []string
	for i := 0; i < n; i++ {
		code := fmt.Sprintf("%s-%d", prefix, i)
		if err := s.store.CreateInvitation(context.Background(), invite.Invitation{Code: code, MaxUses: s.sz.capacity, ConfirmWindow: window}); err != nil {
			t.Fatal(err)
		}
		s.caps[code] = s.sz.capacity
		s.admitted[code] = map[string]bool{}
		if window > 0 {
			s.windows[code] = window
			s.held[code] = map[string]bool{}
		}
		out = append(out, code)
	}
	return out
}

// load is what one scenario sends: a new email per request
// (prefix-<i>@example.com, i counting from 0) to codes in turn; the same
// prefix and codes give the same emails on the same codes again.
type load struct {
	prefix  string
	codes   []string
	n       int  // closed loop: this many requests from sz.workers clients
	rate    int  // open loop: this many requests/s for sz.rateFor
	repeat  bool // the emails are registered already: expect 200 each
	workers int  // closed-loop clients if not sz.workers
}

// run sends l to srv, measures it and, for the service, checks the
// invariants afterwards.
//
// Closed loop: each of sz.workers clients waits for its answer before the
// next request, so the rate is what the system sustains. Open loop: vegeta
// sends at the fixed rate whether or not earlier requests were answered
// (adding workers as needed), so latency is measured without coordinated
// omission.
func (s *stack) run(t *testing.T, name string, srv server, l load) row {
	t.Helper()
	var atk *vegeta.Attacker
	var pace vegeta.ConstantPacer
	var d time.Duration
	if l.rate > 0 {
		// At most 1000 connections, as a proxy in front keeps a bounded
		// pool towards each replica; a request waiting for one is still
		// timed from when it was due.
		atk = vegeta.NewAttacker(vegeta.Connections(1000), vegeta.MaxConnections(1000), vegeta.Timeout(10*time.Second))
		pace, d = vegeta.ConstantPacer{Freq: l.rate, Per: time.Second}, s.sz.rateFor
	} else {
		w := s.sz.workers
		if l.workers > 0 {
			w = l.workers
		}
		atk = vegeta.NewAttacker(vegeta.Workers(uint64(w)), vegeta.MaxWorkers(uint64(w)), vegeta.Connections(w), vegeta.Timeout(10*time.Second))
	}
	var next atomic.Int64
	hdr := http.Header{"Content-Type": {"application/json"}}
	targets := func(tg *vegeta.Target) error {
		i := next.Add(1) - 1
		if l.n > 0 && i >= int64(l.n) {
			return vegeta.ErrNoTargets
		}
		tg.Method = http.MethodPost
		tg.URL = "http://" + srv.addr + "/invitations/" + l.codes[i%int64(len(l.codes))]
		tg.Body = []byte(`{"email":"` + l.prefix + "-" + strconv.FormatInt(i, 10) + `@example.com"}`)
		tg.Header = hdr
		return nil
	}

	profiled := make(chan struct{})
	if dir := os.Getenv("INVITEGATE_BENCH_PROFILE"); dir != "" && srv.admin != "" {
		go func() {
			defer close(profiled)
			s.profile(t, srv.admin, filepath.Join(dir, strings.NewReplacer(" ", "_", "/", "_", "@", "at").Replace(name)+".pprof"))
		}()
	} else {
		close(profiled)
	}
	pid, storePid := srv.pid(), s.storePid()
	resetPeakRSS(pid)
	cpu0, store0 := cpuSeconds(pid), cpuSeconds(storePid)
	scripts0, reads0 := s.redisCounters(t)
	r := row{name: name, codes: map[int]int{}, failures: map[string]int{}}
	var m vegeta.Metrics
	var bySecond [][]time.Duration // open loop: latencies by second of the run
	start := time.Now()
	for res := range atk.Attack(targets, pace, d, name) {
		if res.Code == 0 && res.Error == vegeta.ErrNoTargets.Error() {
			continue
		}
		m.Add(res)
		if l.rate > 0 {
			sec := int(res.Timestamp.Sub(start) / time.Second)
			for len(bySecond) <= sec {
				bySecond = append(bySecond, nil)
			}
			bySecond[sec] = append(bySecond[sec], res.Latency)
		}
		r.codes[int(res.Code)]++
		if res.Code >= 500 {
			var p struct{ Type string }
			_ = json.Unmarshal(res.Body, &p)
			r.failures[strings.TrimPrefix(p.Type, "https://invitegate.dev/problems/")]++
		}
		if res.Code == http.StatusCreated {
			var a struct{ Invitation, Email string }
			if err := json.Unmarshal(res.Body, &a); err != nil {
				t.Fatalf("%s: 201 body %q: %v", name, res.Body, err)
			}
			r.newEmails = append(r.newEmails, [2]string{a.Invitation, a.Email})
		}
		if res.Code == http.StatusAccepted {
			var a struct {
				Invitation, Email, Status string
				ExpiresAt                 string `json:"expires_at"`
			}
			if err := json.Unmarshal(res.Body, &a); err != nil {
				t.Fatalf("%s: 202 body %q: %v", name, res.Body, err)
			}
			if a.Status != "pending_confirmation" || a.ExpiresAt == "" {
				r.badHeld++
			}
			r.heldEmails = append(r.heldEmails, [2]string{a.Invitation, a.Email})
		}
	}
	wall := time.Since(start)
	m.Close()
	<-profiled
	r.requests = int(m.Requests)
	r.rps = float64(m.Requests) / wall.Seconds()
	r.p50, r.p95, r.p99, r.max = m.Latencies.P50, m.Latencies.P95, m.Latencies.P99, m.Latencies.Max
	r.rssMB = peakRSSMB(pid)
	r.cpu = (cpuSeconds(pid) - cpu0) / float64(r.requests) * 1000
	r.storeCPU = (cpuSeconds(storePid) - store0) / float64(r.requests) * 1000
	scripts, reads := s.redisCounters(t)
	r.scripts = float64(scripts-scripts0) / float64(r.requests)
	r.reads = float64(reads-reads0) / float64(r.requests)
	if srv.admin != "" {
		r.check = s.verify(t, &r, l.codes, l.prefix, l.repeat)
	} else if n := r.codes[http.StatusCreated] + r.codes[0]; n != r.requests {
		r.check = fmt.Sprintf("the floor answered %v", r.codes)
	} else {
		r.check = "ok"
	}
	t.Logf("%s: %d requests in %v, %.0f/s, %v: %s", name, r.requests, wall.Round(time.Millisecond), r.rps, r.codes, r.check)
	if len(bySecond) > 0 {
		// Where the tail comes from: each second's p99.
		var parts []string
		for i, ls := range bySecond {
			sort.Slice(ls, func(a, b int) bool { return ls[a] < ls[b] })
			if len(ls) > 0 {
				parts = append(parts, fmt.Sprintf("%d:%s", i, ms(ls[len(ls)*99/100])))
			}
		}
		t.Logf("%s: p99 by second: %s", name, strings.Join(parts, " "))
	}
	return r
}

// verify checks the invariants in MongoDB once the reconciler has written
// what Redis admitted: every email answered 201 is registered with the
// code it was answered for and nothing else is (I3, and nothing invented),
// no code holds more than max_uses (I1), no email was admitted twice (I2),
// a code that got at least max_uses definite answers is exactly full, and
// a repeat of registered emails is answered 200 every time. On a code with
// a confirmation window the same holds of its live holds instead (see
// verifyHolds), and a 201 there (or a 202 on a code without one) is wrong.
// It returns "ok" or what is wrong.
func (s *stack) verify(t *testing.T, r *row, codes []string, prefix string, repeat bool) string {
	t.Helper()
	var problems []string
	unknown := r.codes[0]
	for st, n := range r.codes {
		if st >= 500 {
			unknown += n
		}
	}
	for _, ce := range r.newEmails {
		code, em := ce[0], ce[1]
		if s.admitted[code] == nil {
			problems = append(problems, fmt.Sprintf("201 for unknown code %q", code))
			continue
		}
		if s.windows[code] > 0 {
			problems = append(problems, fmt.Sprintf("%s answered 201 on %s, which has a confirmation window", em, code))
		}
		if s.admitted[code][em] {
			problems = append(problems, fmt.Sprintf("%s admitted twice to %s", em, code))
		}
		s.admitted[code][em] = true
	}
	for _, ce := range r.heldEmails {
		code, em := ce[0], ce[1]
		if s.held[code] == nil {
			problems = append(problems, fmt.Sprintf("202 for %q, not a code with a confirmation window", code))
			continue
		}
		if s.held[code][em] {
			problems = append(problems, fmt.Sprintf("%s held twice on %s", em, code))
		}
		s.held[code][em] = true
	}
	if r.badHeld > 0 {
		problems = append(problems, fmt.Sprintf("%d answers 202 without status pending_confirmation and expires_at", r.badHeld))
	}
	if repeat && r.codes[http.StatusOK] != r.requests {
		problems = append(problems, fmt.Sprintf("registered emails answered %v, want 200 each", r.codes))
	}
	// The targeter takes the codes in turn, so each got an equal share.
	definite := (r.codes[http.StatusCreated] + r.codes[http.StatusAccepted] + r.codes[http.StatusGone]) / len(codes)
	ctx := context.Background()
	deadline := time.Now().Add(s.sz.drainAfter)
	// Every reservation Redis holds reaches MongoDB before the counts are
	// compared, including any the answers did not show.
	if err := s.drained(ctx, deadline); err != nil {
		return err.Error()
	}
	for _, code := range codes {
		if s.windows[code] > 0 {
			if err := s.verifyHolds(ctx, r, code, prefix, definite, &unknown, deadline, &problems); err != nil {
				return err.Error()
			}
			continue
		}
		adm := s.admitted[code]
		n, err := s.store.Count(ctx, code)
		for err == nil && n < len(adm) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			n, err = s.store.Count(ctx, code)
		}
		if err != nil {
			return err.Error()
		}
		registered := map[string]bool{}
		if err := s.store.ForEachRegistration(ctx, code, func(canonical, c string) error {
			registered[canonical] = true
			return nil
		}); err != nil {
			return err.Error()
		}
		for em := range adm {
			if !registered[em] {
				problems = append(problems, fmt.Sprintf("%s answered 201 for %s but not in MongoDB", em, code))
				break
			}
		}
		// A request that timed out (503, or no answer) may still have been
		// admitted: the client was promised nothing, and its retry would
		// get 200. Anything else registered was invented.
		for em := range registered {
			if adm[em] {
				continue
			}
			if !strings.HasPrefix(em, prefix+"-") || unknown == 0 {
				problems = append(problems, fmt.Sprintf("%s: %s registered but never answered 201", code, em))
				break
			}
			unknown--
			adm[em] = true
			r.unknownAdmitted++
		}
		if len(registered) > s.caps[code] {
			problems = append(problems, fmt.Sprintf("%s: %d registered, over max_uses %d", code, len(registered), s.caps[code]))
		}
		if !repeat && definite >= s.caps[code] && len(registered) != s.caps[code] {
			problems = append(problems, fmt.Sprintf("%s: %d of %d seats taken after %d definite answers", code, len(registered), s.caps[code], definite))
		}
		r.admitted += len(adm)
		r.capacity += s.caps[code]
	}
	if len(problems) > 0 {
		return strings.Join(problems, "; ")
	}
	return "ok"
}

// verifyHolds is verify for code, which has a confirmation window: once
// the reconciler has written them, every email answered 202 is a live hold
// of code in MongoDB and nothing else is (but for requests answered 5xx or
// not at all, counted down in unknown), no email holds two seats, no more
// than max_uses are held, exactly max_uses once definite answers (202 and
// 410) reached it, and nothing is registered (no one confirmed).
func (s *stack) verifyHolds(ctx context.Context, r *row, code, prefix string, definite int, unknown *int, deadline time.Time, problems *[]string) error {
	held := s.held[code]
	live, err := s.store.LiveHolds(ctx, code, time.Now())
	for err == nil && len(live) < len(held) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		live, err = s.store.LiveHolds(ctx, code, time.Now())
	}
	if err != nil {
		return err
	}
	holds := map[string]bool{}
	for _, h := range live {
		if holds[h.Canonical] {
			*problems = append(*problems, fmt.Sprintf("%s: %s has two live holds", code, h.Canonical))
		}
		holds[h.Canonical] = true
	}
	for em := range held {
		if !holds[em] {
			*problems = append(*problems, fmt.Sprintf("%s answered 202 for %s but no live hold in MongoDB", em, code))
			break
		}
	}
	for em := range holds {
		if held[em] {
			continue
		}
		if !strings.HasPrefix(em, prefix+"-") || *unknown == 0 {
			*problems = append(*problems, fmt.Sprintf("%s: %s held but never answered 202", code, em))
			break
		}
		*unknown--
		held[em] = true
		r.unknownAdmitted++
	}
	registered := 0
	if err := s.store.ForEachRegistration(ctx, code, func(canonical, c string) error {
		registered++
		return nil
	}); err != nil {
		return err
	}
	if registered > 0 {
		*problems = append(*problems, fmt.Sprintf("%s: %d registered, want none before any confirmation", code, registered))
	}
	if len(live) > s.caps[code] {
		*problems = append(*problems, fmt.Sprintf("%s: %d live holds, over max_uses %d", code, len(live), s.caps[code]))
	}
	if definite >= s.caps[code] && len(live) != s.caps[code] {
		*problems = append(*problems, fmt.Sprintf("%s: %d of %d seats held after %d definite answers", code, len(live), s.caps[code], definite))
	}
	r.admitted += len(held)
	r.capacity += s.caps[code]
	return nil
}

// profile saves a 5 s CPU profile of the service to path
// (INVITEGATE_BENCH_PROFILE=dir): go tool pprof -top path.
func (s *stack) profile(t *testing.T, admin, path string) {
	resp, err := http.Get("http://" + admin + "/debug/pprof/profile?seconds=5")
	if err != nil {
		t.Errorf("profile: %v", err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		err = os.WriteFile(path, b, 0o644)
	}
	if err != nil {
		t.Errorf("profile: %v", err)
	}
}

// redisCounters are what the stack's redis-server has done so far: script
// calls (EVALSHA and EVAL; commands a script runs inside are not counted)
// and read events, one per time it read a client's socket, however many
// pipelined commands it found there. Zero without Redis.
func (s *stack) redisCounters(t *testing.T) (scripts, reads int64) {
	t.Helper()
	if s.rdb == nil {
		return 0, 0
	}
	info, err := s.rdb.Info(context.Background(), "stats", "commandstats").Result()
	if err != nil {
		t.Fatalf("redis INFO: %v", err)
	}
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "total_reads_processed:"); ok {
			reads, _ = strconv.ParseInt(v, 10, 64)
		}
		for _, c := range []string{"cmdstat_evalsha:calls=", "cmdstat_eval:calls="} {
			if v, ok := strings.CutPrefix(line, c); ok {
				v, _, _ = strings.Cut(v, ",")
				n, _ := strconv.ParseInt(v, 10, 64)
				scripts += n
			}
		}
	}
	return scripts, reads
}

// drained waits until no reservation waits in the stack's Redis streams
// for the reconciler (nothing to wait for without Redis).
func (s *stack) drained(ctx context.Context, deadline time.Time) error {
	if s.rdb == nil {
		return nil
	}
	r := reserve.New(s.rdb, reserve.Config{Namespace: "igv1", Shards: s.shards})
	for {
		var total int64
		for sh := 0; sh < s.shards; sh++ {
			n, _, err := r.Backlog(ctx, sh)
			if err != nil {
				return err
			}
			total += n
		}
		if total == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d reservations still not in MongoDB after %s", total, s.sz.drainAfter)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// resetPeakRSS makes /proc/<pid>/status' VmHWM start again from the current
// RSS (Linux: clear_refs 5), so each scenario reports its own peak.
func resetPeakRSS(pid int) {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// peakRSSMB is VmHWM of pid in MB (0 if unreadable).
func peakRSSMB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// cpuSeconds is pid's user + system CPU time so far (0 if unreadable).
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: state is the first; utime and stime are 12th and 13th.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// row is one scenario's measurements.
type row struct {
	name               string
	requests           int
	rps                float64
	p50, p95, p99, max time.Duration
	codes              map[int]int    // status → count; 0: no answer (timeout, connection error)
	failures           map[string]int // 5xx problem type → count
	newEmails          [][2]string    // {code, email} answered 201
	heldEmails         [][2]string    // {code, email} answered 202 (seat held until confirmed)
	badHeld            int            // 202 answers without status pending_confirmation and expires_at
	admitted, capacity int            // registered over the scenario's codes, their max_uses (service only)
	unknownAdmitted    int            // of those, requests answered 5xx or not at all that were admitted
	rssMB              float64        // peak RSS of the serving process
	cpu, storeCPU      float64        // CPU seconds per 1,000 requests: serving process, its store
	scripts, reads     float64        // per request: Redis script calls, Redis socket reads (0 without Redis)
	check              string         // "ok" or what is wrong
	note               string
	vsFloor            float64 // median of per-round ratios to the floor; 0: not compared
}

type table struct{ rows []row }

func (tb *table) add(r row) { tb.rows = append(tb.rows, r) }

func (tb *table) find(name string) (row, bool) {
	for _, r := range tb.rows {
		if r.name == name {
			return r, true
		}
	}
	return row{}, false
}

// print writes the table as Markdown, then the ratios the targets in
// docs/BENCHMARKS.md are stated in.
func (tb *table) print(w *os.File) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| scenario | requests | req/s | p50 | p95 | p99 | max | outcomes | admitted / capacity | peak RSS | CPU s per 1k req: server | store | per req: Redis scripts | Redis reads | invariants |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|")
	for _, r := range tb.rows {
		adm := "–"
		if r.capacity > 0 {
			adm = fmt.Sprintf("%d / %d", r.admitted, r.capacity)
			if r.unknownAdmitted > 0 {
				adm += fmt.Sprintf(" (%d of them answered 5xx or not at all)", r.unknownAdmitted)
			}
		}
		rps := fmt.Sprintf("%.0f", r.rps)
		if r.note != "" {
			rps += " (" + r.note + ")"
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %.0f MB | %.3f | %.3f | %.2f | %.2f | %s |\n",
			r.name, r.requests, rps, ms(r.p50), ms(r.p95), ms(r.p99), ms(r.max), outcomes(r.codes, r.failures), adm, r.rssMB, r.cpu, r.storeCPU, r.scripts, r.reads, r.check)
	}
	fmt.Fprintln(w)
	for _, r := range tb.rows {
		if r.vsFloor > 0 {
			fmt.Fprintf(w, "%s / floor: %.2f (median of the rounds' ratios)\n", r.name, r.vsFloor)
		}
	}
	if sp, ok := tb.find("spike K=1"); ok {
		if base, ok := tb.find("baseline spike (RESERVER=mongo)"); ok {
			fmt.Fprintf(w, "spike K=1 / baseline: %.1f\n", sp.rps/base.rps)
		}
	}
	for _, r := range tb.rows {
		rate, ok := strings.CutPrefix(r.name, "3 codes K=1 @ ")
		if !ok {
			continue
		}
		if f, ok := tb.find("floor @ " + rate); ok {
			bound := max(10*time.Millisecond, 2*f.p99)
			fmt.Fprintf(w, "@ %s: service p99 %s, bound max(10 ms, 2 × floor p99 %s) = %s, errors %d\n",
				rate, ms(r.p99), ms(f.p99), ms(bound), r.requests-r.codes[http.StatusCreated]-r.codes[http.StatusGone])
		}
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

// outcomes lists status counts in status order, "201×1000 410×99000",
// then what the 5xx were: "(overloaded×3)".
func outcomes(codes map[int]int, failures map[string]int) string {
	var parts []string
	for st := 0; st < 600; st++ {
		if n := codes[st]; n > 0 {
			label := strconv.Itoa(st)
			if st == 0 {
				label = "no answer"
			}
			parts = append(parts, fmt.Sprintf("%s×%d", label, n))
		}
	}
	var kinds []string
	for k, n := range failures {
		kinds = append(kinds, fmt.Sprintf("%s×%d", k, n))
	}
	sort.Strings(kinds)
	if len(kinds) > 0 {
		parts = append(parts, "("+strings.Join(kinds, " ")+")")
	}
	return strings.Join(parts, " ")
}
