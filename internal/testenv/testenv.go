// Package testenv starts the real servers invitegate's tests run against:
// redis-server child processes (single nodes, 3-master Redis Clusters with
// or without a replica per master, and Sentinel groups: a primary, its
// replica and three Sentinels) and an embedded FerretDB as the
// MongoDB-wire server. Shared servers live
// for the whole test process; tests keep apart with KeyPrefix and DBName
// instead of wiping them.
//
// A missing redis-server fails the test with an install hint; it is never
// skipped silently. Under -short (make test-unit) every helper that starts
// or connects to a real server or process skips the test instead, saying
// what it needed, so the unit tier needs nothing installed and tests need
// no -short check of their own. Only _test files may import this package.
package testenv

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/invitegate/invitegate/internal/embedded"
)

const (
	redisStartTimeout   = 10 * time.Second
	clusterReadyTimeout = 20 * time.Second
	// startAttempts bounds retries when another process takes the port
	// between our probe and redis-server's bind.
	startAttempts = 5
	logName       = "redis-server.log"
)

// RedisOptions configure a redis-server started by StartRedis.
type RedisOptions struct {
	// AOF turns on the append-only file (appendonly yes).
	AOF bool
	// AppendFsync is "always", "everysec" or "no"; empty means "everysec".
	AppendFsync string
	// Cluster starts the node with cluster-enabled yes. StartRedis does not
	// assign slots; use StartRedisCluster for a working cluster.
	Cluster bool
	// ReplicaOf makes the server a replica of that host:port (replicaof)
	// from its start; StartSentinelGroup builds a whole group.
	ReplicaOf string

	// sentinel, when set, runs the server as a Sentinel (redis-server
	// sentinel.conf --sentinel) instead of a data node.
	sentinel *sentinelConf
}

// RedisServer is a redis-server child process on 127.0.0.1. Its stdout and
// stderr (the redis log) go to redis-server.log in Dir.
type RedisServer struct {
	// Addr is host:port, stable across Restart.
	Addr string
	// Dir is the server's working and data directory, stable across Restart.
	Dir string

	port int
	opt  RedisOptions

	proc
}

// StartRedis starts a redis-server of its own on a free loopback port with
// its own directory, waits until it answers PING, and kills it when the
// test ends (the directory is kept, and logged, if the test failed). It
// fails the test if redis-server is missing or does not come up.
func StartRedis(tb testing.TB, opt RedisOptions) *RedisServer {
	tb.Helper()
	SkipIfShort(tb, "a redis-server of its own")
	r, err := startRedis(opt)
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	tb.Cleanup(func() { r.discard(tb) })
	return r
}

// Kill stops the server with SIGKILL and waits until the process is gone.
// Killing a stopped server does nothing.
func (r *RedisServer) Kill(tb testing.TB) {
	tb.Helper()
	r.kill()
}

// Restart starts the server again on the same port and directory, so with
// AOF on the data written before Kill is replayed. It returns once the
// server answers PING and has finished loading; if the server is still
// running it is killed first. It fails the test if the server does not come
// back (for instance because another process took the port meanwhile).
func (r *RedisServer) Restart(tb testing.TB) {
	tb.Helper()
	r.kill()
	var err error
	for i := 0; i < startAttempts; i++ {
		if err = r.launch(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("testenv: restart redis-server on %s: %v", r.Addr, err)
}

// shared returns what start, a sync.OnceValues, made for the whole test
// process: the test is skipped under -short (it needs what), and fails if
// start failed, on this call or an earlier one.
func shared[T any](tb testing.TB, what string, start func() (T, error)) T {
	tb.Helper()
	SkipIfShort(tb, what)
	v, err := start()
	if err != nil {
		tb.Fatalf("testenv: %s: %v", what, err)
	}
	return v
}

// SkipIfShort skips the test under -short (make test-unit) because it
// needs what, a real server or process the unit tier does not start. The
// helpers below call it themselves; a test calls it only for what it starts
// without them (nginx, chromium, promtool, the go tool).
func SkipIfShort(tb testing.TB, what string) {
	tb.Helper()
	if testing.Short() {
		tb.Skipf("-short: needs %s; make test runs it", what)
	}
}

// sharedRedis starts the shared redis-server, once per test process.
var sharedRedis = sync.OnceValues(func() (*RedisServer, error) { return startRedis(RedisOptions{}) })

// SharedRedis returns the address of the one redis-server (no persistence)
// shared by every test in the process; it lives until the process exits.
// Tests keep apart with KeyPrefix. It fails the test if the server could
// not be started, on this call or an earlier one.
func SharedRedis(tb testing.TB) string {
	tb.Helper()
	return shared(tb, "the shared redis-server", sharedRedis).Addr
}

// sharedCluster builds the shared Redis Cluster, once per test process,
// and returns its nodes' addresses.
var sharedCluster = sync.OnceValues(func() ([]string, error) {
	nodes, _, err := startCluster(false)
	if err != nil {
		for _, n := range nodes {
			n.kill()
		}
		return nil, err
	}
	return addrsOf(nodes), nil
})

// SharedRedisCluster returns the addresses of the one 3-master Redis Cluster
// (no replicas) shared by every test in the process; it lives until the
// process exits. The cluster is ready: every node reports cluster_state:ok
// and agrees on who owns which slots. It fails the test if the cluster
// could not be built, on this call or an earlier one.
func SharedRedisCluster(tb testing.TB) []string {
	tb.Helper()
	return slices.Clone(shared(tb, "the shared Redis Cluster", sharedCluster))
}

// SharedRedisClient returns a client of the shared redis-server, or of the
// shared Redis Cluster, closed when the test ends.
func SharedRedisClient(tb testing.TB, cluster bool) redis.UniversalClient {
	tb.Helper()
	var c redis.UniversalClient
	if cluster {
		c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: SharedRedisCluster(tb)})
	} else {
		c = redis.NewClient(&redis.Options{Addr: SharedRedis(tb)})
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// StartRedisCluster is SharedRedisCluster with processes of its own, killed
// when the test ends.
func StartRedisCluster(tb testing.TB) []string {
	tb.Helper()
	SkipIfShort(tb, "a Redis Cluster of its own")
	nodes, _, err := startCluster(false)
	for _, n := range nodes {
		tb.Cleanup(func() { n.discard(tb) })
	}
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	return addrsOf(nodes)
}

// ReplicatedCluster is a Redis Cluster of three masters, each with one
// replica, started by StartReplicatedCluster.
type ReplicatedCluster struct {
	// Masters are the nodes started as masters, Replicas[i] the replica of
	// Masters[i]; the roles change when a replica takes over.
	Masters, Replicas []*RedisServer
}

// StartReplicatedCluster starts a 3-master Redis Cluster in which each
// master has one replica, on processes of its own killed when the test
// ends. It returns once every replica is in sync and the cluster serves
// every slot. A replica takes over by itself when its master is gone for
// the cluster-node-timeout (2 s). It fails the test if the cluster cannot
// be built.
func StartReplicatedCluster(tb testing.TB) *ReplicatedCluster {
	tb.Helper()
	SkipIfShort(tb, "a Redis Cluster with replicas")
	masters, reps, err := startCluster(true)
	for _, n := range append(append([]*RedisServer(nil), masters...), reps...) {
		tb.Cleanup(func() { n.discard(tb) })
	}
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	return &ReplicatedCluster{Masters: masters, Replicas: reps}
}

// Addrs are the masters' addresses, the seed nodes for a ClusterClient.
func (c *ReplicatedCluster) Addrs() []string { return addrsOf(c.Masters) }

// ReplicaOf returns the replica started for the master at addr, or nil.
func (c *ReplicatedCluster) ReplicaOf(addr string) *RedisServer {
	for i, m := range c.Masters {
		if m.Addr == addr {
			return c.Replicas[i]
		}
	}
	return nil
}

// WaitReplicated waits until every replica has processed its master's
// whole replication stream as of this call; it fails the test after 10 s.
func (c *ReplicatedCluster) WaitReplicated(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, r := range c.Replicas {
		if err := poll(ctx, func() error { return replicaInSync(ctx, c.Masters[i].Addr, r.Addr) }); err != nil {
			tb.Fatalf("testenv: %v", err)
		}
	}
}

// sharedMongo starts the shared FerretDB, once per test process, and
// returns its URI.
var sharedMongo = sync.OnceValues(func() (string, error) {
	root, err := processDir()
	if err != nil {
		return "", err
	}
	uri, _, err := embedded.StartFerretDB(context.Background(), filepath.Join(root, "ferretdb"), "127.0.0.1:0", nil)
	return uri, err
})

// Mongo returns the mongodb:// URI of the one embedded FerretDB (SQLite
// backend) shared by every test in the process; it lives until the process
// exits. Tests keep apart with DBName. It fails the test if the server
// could not be started, on this call or an earlier one.
func Mongo(tb testing.TB) string {
	tb.Helper()
	return shared(tb, "the embedded FerretDB", sharedMongo)
}

var nonWord = regexp.MustCompile(`[^A-Za-z0-9]+`)

// DBName returns a database name unique to this call: the last characters
// of the sanitized test name, an underscore and 8 random hex digits. It
// matches ^[A-Za-z0-9_]{1,34}$, valid for MongoDB and FerretDB.
func DBName(tb testing.TB) string {
	tb.Helper()
	name := strings.Trim(nonWord.ReplaceAllString(tb.Name(), "_"), "_")
	if len(name) > 24 {
		name = strings.TrimLeft(name[len(name)-24:], "_")
	}
	if name == "" {
		name = "t"
	}
	return name + "_" + randHex(tb, 4)
}

// MongoDatabase returns a database of its own (DBName) on the shared
// MongoDB-wire server (Mongo), dropped and disconnected when the test
// ends. It fails the test if the client cannot be made.
func MongoDatabase(tb testing.TB) *mongo.Database {
	tb.Helper()
	c, err := mongo.Connect(options.Client().ApplyURI(Mongo(tb)))
	if err != nil {
		tb.Fatal(err)
	}
	db := c.Database(DBName(tb))
	tb.Cleanup(func() {
		db.Drop(context.Background())
		c.Disconnect(context.Background())
	})
	return db
}

// KeyPrefix returns a short Redis key namespace unique to this call: "t"
// and 8 random hex digits. It carries no hash tag; callers add their own.
func KeyPrefix(tb testing.TB) string {
	tb.Helper()
	return "t" + randHex(tb, 4)
}

func randHex(tb testing.TB, n int) string {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatalf("testenv: random: %v", err)
	}
	return hex.EncodeToString(b)
}

// --- process directories ---

// processDir returns a temporary directory owned by this test process. The
// shared servers keep their data there until the process exits, which no
// cleanup hook sees, so directories left by dead processes are removed on
// first use instead.
var processDir = sync.OnceValues(func() (string, error) {
	removeStaleProcessDirs()
	return os.MkdirTemp("", fmt.Sprintf("invitegate-testenv-%d-", os.Getpid()))
})

func removeStaleProcessDirs() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), "invitegate-testenv-*"))
	for _, m := range matches {
		rest := strings.TrimPrefix(filepath.Base(m), "invitegate-testenv-")
		pidStr, _, ok := strings.Cut(rest, "-")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 {
			continue
		}
		// ESRCH only: a live process, or one we may not signal, keeps its dir.
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(m)
		}
	}
}

// --- redis-server processes ---

func redisServerPath() (string, error) {
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", errors.New("redis-server not found on PATH; the tests need a real Redis: install it (apt-get install -y redis-server)")
	}
	return p, nil
}

// startRedis starts a server in a fresh directory under the process
// directory, retrying on another port if it loses a race for one. On
// failure nothing is left running; the directory stays for its log.
func startRedis(opt RedisOptions) (*RedisServer, error) {
	switch opt.AppendFsync {
	case "":
		opt.AppendFsync = "everysec"
	case "always", "everysec", "no":
	default:
		return nil, fmt.Errorf("RedisOptions.AppendFsync %q: want always, everysec or no", opt.AppendFsync)
	}
	if _, err := redisServerPath(); err != nil {
		return nil, err
	}
	root, err := processDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(root, "redis-")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < startAttempts; attempt++ {
		port, err := freePort(opt.Cluster)
		if err != nil {
			return nil, err
		}
		r := &RedisServer{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: dir, port: port, opt: opt}
		if lastErr = r.launch(); lastErr == nil {
			return r, nil
		}
		// A node that lost a race leaves nodes.conf behind; start clean.
		_ = os.Remove(filepath.Join(dir, "nodes.conf"))
	}
	return nil, fmt.Errorf("redis-server did not start in %d attempts: %w", startAttempts, lastErr)
}

// freePort finds a port on 127.0.0.1 nothing listens on, for a server
// started after it returns. A port from the kernel's ephemeral range
// (what listening on port 0 gives) can be taken in between by any
// outgoing connection of any process, and a child then fails with
// "address already in use"; so ports come from below that range, picked
// at random so that test processes running side by side rarely try the
// same one, and checked free by listening on them. With cluster, port+10000
// (Redis Cluster's bus port) must be free and below the range too.
func freePort(cluster bool) (int, error) {
	lo, hi := 20000, ephemeralLow()
	if cluster {
		lo, hi = 10000, min(20000, hi-10000)
	}
	if hi-lo < 1000 {
		return 0, fmt.Errorf("no room for test ports below the ephemeral range (from %d)", ephemeralLow())
	}
	for i := 0; i < 200; i++ {
		port := lo + mrand.IntN(hi-lo)
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		if cluster {
			bus, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000))
			if err != nil {
				ln.Close()
				continue
			}
			bus.Close()
		}
		ln.Close()
		return port, nil
	}
	return 0, errors.New("no free port found on 127.0.0.1 below the ephemeral range")
}

// ephemeralLow is the first port of the kernel's ephemeral range
// (ip_local_port_range), 32768 where it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 21000 {
		return 32768
	}
	return n
}

// launch starts redis-server on r.port in r.Dir and waits until it answers
// PING and has loaded its data. On failure nothing is left running.
func (r *RedisServer) launch() error {
	bin, err := redisServerPath()
	if err != nil {
		return err
	}
	aof := "no"
	if r.opt.AOF {
		aof = "yes"
	}
	args := []string{
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--dir", r.Dir,
		"--save", "", "--appendonly", aof, "--appendfsync", r.opt.AppendFsync,
		"--protected-mode", "no", "--daemonize", "no", "--logfile", "",
		// A replica's first sync starts at once instead of after Redis'
		// 5 s wait for more replicas to share it.
		"--repl-diskless-sync-delay", "0",
	}
	if r.opt.sentinel != nil {
		conf, err := r.opt.sentinel.write(r.Dir, r.port)
		if err != nil {
			return err
		}
		args = []string{conf, "--sentinel"}
	}
	if r.opt.ReplicaOf != "" {
		host, port, err := net.SplitHostPort(r.opt.ReplicaOf)
		if err != nil {
			return fmt.Errorf("RedisOptions.ReplicaOf %q: %w", r.opt.ReplicaOf, err)
		}
		args = append(args, "--replicaof", host, port)
	}
	if r.opt.Cluster {
		args = append(args,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000", "--cluster-announce-ip", "127.0.0.1")
	}
	// Appended, so a restart keeps the log of the previous run above it.
	logf, err := os.OpenFile(filepath.Join(r.Dir, logName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	fmt.Fprintf(logf, "=== testenv: %s %q\n", bin, args)

	cmd := exec.Command(bin, args...)
	cmd.Dir = r.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// The server must not outlive the test binary, even if it crashes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	done, err := r.start(cmd)
	if err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}

	if err := waitRedisReady(r.Addr, done, redisStartTimeout, r.opt.sentinel == nil); err != nil {
		r.kill()
		return fmt.Errorf("redis-server on %s: %w\n%s", r.Addr, err, r.logTail())
	}
	return nil
}

var (
	spawnOnce sync.Once
	spawnReqs chan spawnReq
)

type spawnReq struct {
	cmd *exec.Cmd
	err chan error
}

// startOnSpawnThread starts cmd from a goroutine locked to its OS thread
// for the life of the process. Linux sends Pdeathsig when the thread that
// forked the child exits, not the process, and Go ends a thread whenever a
// goroutine still locked to it exits; forking from a thread that never exits
// makes the children die with the process and not before.
func startOnSpawnThread(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread must live on
			for req := range spawnReqs {
				req.err <- req.cmd.Start()
			}
		}()
	})
	req := spawnReq{cmd: cmd, err: make(chan error, 1)}
	spawnReqs <- req
	return <-req.err
}

// waitRedisReady polls with a bare PING so the polling leaves no go-redis
// dial errors in the test log. redis-server answers -LOADING to PING while
// it replays the AOF, so +PONG also means loading has finished; INFO
// persistence confirms it on a data node (a Sentinel has no such section).
func waitRedisReady(addr string, exited <-chan struct{}, timeout time.Duration, data bool) error {
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for {
		select {
		case <-exited:
			return errors.New("exited during startup")
		default:
		}
		reply, err := rawPing(addr)
		// A Sentinel with a password answers NOAUTH: it is up.
		if err == nil && (reply == "+PONG" || strings.HasPrefix(reply, "-NOAUTH")) {
			break
		}
		if err != nil {
			last = err.Error()
		} else {
			last = reply
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v (last PING: %s)", timeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !data {
		return nil
	}
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DisableIdentity: true})
	defer c.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := c.Info(ctx, "persistence").Result()
		cancel()
		if err == nil && infoField(info, "loading") == "0" && infoField(info, "async_loading") != "1" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still loading after %v: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// infoField returns the value of field in an INFO reply, or "".
func infoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

func rawPing(addr string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	// Short: a timeout only costs another poll, and a port held by a
	// process that accepts but never answers must not stall startup.
	_ = conn.SetDeadline(time.Now().Add(250 * time.Millisecond))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}

// discard kills the server at the end of a test and removes its directory,
// unless the test failed: then the directory is kept for its log and data.
func (r *RedisServer) discard(tb testing.TB) {
	r.kill()
	if tb.Failed() {
		tb.Logf("testenv: redis-server %s kept its directory %s (log: %s)", r.Addr, r.Dir, logName)
		return
	}
	_ = os.RemoveAll(r.Dir)
}

// logTail returns the last lines of the server's log for failure messages.
func (r *RedisServer) logTail() string {
	b, err := os.ReadFile(filepath.Join(r.Dir, logName))
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return "--- " + filepath.Join(r.Dir, logName) + " (tail) ---\n" + strings.Join(lines, "\n")
}

// --- Redis Cluster ---

// slotRanges splits the 16384 slots between the three masters.
var slotRanges = [3][2]int{{0, 5460}, {5461, 10922}, {10923, 16383}}

// startCluster starts three cluster-enabled masters (and, with replicas,
// one replica of each), gives each master a third of the slots with
// CLUSTER ADDSLOTSRANGE, joins them with CLUSTER MEET, attaches each
// replica with CLUSTER REPLICATE, and waits until the cluster is usable and
// every replica is in sync. It returns the nodes started so far (masters,
// then replicas) even on error, so the caller can kill them.
func startCluster(replicas bool) (masters, reps []*RedisServer, err error) {
	for range slotRanges {
		n, err := startRedis(RedisOptions{Cluster: true})
		if err != nil {
			return masters, reps, fmt.Errorf("redis cluster node: %w", err)
		}
		masters = append(masters, n)
	}
	if replicas {
		for range slotRanges {
			n, err := startRedis(RedisOptions{Cluster: true})
			if err != nil {
				return masters, reps, fmt.Errorf("redis cluster replica: %w", err)
			}
			reps = append(reps, n)
		}
	}
	all := append(append([]*RedisServer(nil), masters...), reps...)

	ctx, cancel := context.WithTimeout(context.Background(), clusterReadyTimeout)
	defer cancel()
	ids := make([]string, len(all))
	for i, n := range all {
		c := redis.NewClient(&redis.Options{Addr: n.Addr, DisableIdentity: true})
		id, err := c.ClusterMyID(ctx).Result()
		if err == nil {
			ids[i] = id
			if i < len(masters) {
				err = c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", slotRanges[i][0], slotRanges[i][1]).Err()
			}
		}
		if err == nil && i > 0 {
			err = c.ClusterMeet(ctx, "127.0.0.1", strconv.Itoa(masters[0].port)).Err()
		}
		c.Close()
		if err != nil {
			return masters, reps, fmt.Errorf("redis cluster setup on %s: %w\n%s", n.Addr, err, n.logTail())
		}
	}
	// A replica can follow its master once it has heard of it by gossip.
	for i, n := range reps {
		if err := poll(ctx, func() error {
			c := redis.NewClient(&redis.Options{Addr: n.Addr, DisableIdentity: true})
			defer c.Close()
			return c.ClusterReplicate(ctx, ids[i]).Err()
		}); err != nil {
			return masters, reps, fmt.Errorf("redis cluster: %s replicating %s: %w\n%s", n.Addr, masters[i].Addr, err, n.logTail())
		}
	}

	if err := poll(ctx, func() error { return clusterReady(ctx, masters, reps, ids) }); err != nil {
		var tails []string
		for _, n := range all {
			tails = append(tails, n.logTail())
		}
		return masters, reps, fmt.Errorf("redis cluster %v not ready after %v: %v\n%s",
			addrsOf(all), clusterReadyTimeout, err, strings.Join(tails, "\n"))
	}
	return masters, reps, nil
}

// poll calls check every 100 ms until it returns nil or ctx ends; then it
// returns check's last error.
func poll(ctx context.Context, check func() error) error {
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// clusterReady returns nil once every node reports cluster_state:ok and
// knows every other, every node maps the three slot ranges to the expected
// master (and its replica), every replica is in sync with its master, and a
// ClusterClient can write and read a key on every master.
func clusterReady(ctx context.Context, masters, reps []*RedisServer, ids []string) error {
	for _, n := range append(append([]*RedisServer(nil), masters...), reps...) {
		if err := nodeAgrees(ctx, n.Addr, masters, reps, ids); err != nil {
			return err
		}
	}
	for i, r := range reps {
		if err := replicaInSync(ctx, masters[i].Addr, r.Addr); err != nil {
			return err
		}
	}

	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrsOf(masters), DisableIdentity: true})
	defer cc.Close()
	covered := map[string]bool{}
	for i := 0; len(covered) < len(masters); i++ {
		if i == 100 {
			return fmt.Errorf("probe keys reached only %d masters", len(covered))
		}
		key := fmt.Sprintf("{testenv-probe-%d}", i)
		slot, err := cc.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			return fmt.Errorf("CLUSTER KEYSLOT: %w", err)
		}
		owner := masters[ownerOf(int(slot))].Addr
		if covered[owner] {
			continue
		}
		if err := cc.Set(ctx, key, "1", time.Minute).Err(); err != nil {
			return fmt.Errorf("cluster SET %s: %w", key, err)
		}
		if err := cc.Get(ctx, key).Err(); err != nil {
			return fmt.Errorf("cluster GET %s: %w", key, err)
		}
		covered[owner] = true
	}
	return nil
}

// nodeAgrees checks one node's CLUSTER INFO and CLUSTER SLOTS: master i
// serves range i, followed by replica i when there are replicas.
func nodeAgrees(ctx context.Context, addr string, masters, reps []*RedisServer, ids []string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	defer c.Close()
	info, err := c.ClusterInfo(ctx).Result()
	if err != nil {
		return fmt.Errorf("%s: CLUSTER INFO: %w", addr, err)
	}
	known := strconv.Itoa(len(masters) + len(reps))
	for _, want := range [][2]string{{"cluster_state", "ok"}, {"cluster_known_nodes", known}, {"cluster_slots_assigned", "16384"}} {
		if got := infoField(info, want[0]); got != want[1] {
			return fmt.Errorf("%s: CLUSTER INFO has %s:%s, want %s", addr, want[0], got, want[1])
		}
	}
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		return fmt.Errorf("%s: CLUSTER SLOTS: %w", addr, err)
	}
	if len(slots) != len(slotRanges) {
		return fmt.Errorf("%s: CLUSTER SLOTS has %d ranges, want %d", addr, len(slots), len(slotRanges))
	}
	for _, s := range slots {
		i := ownerOf(s.Start)
		want := []string{masters[i].Addr}
		if len(reps) > 0 {
			want = append(want, reps[i].Addr)
		}
		var got []string
		for _, n := range s.Nodes {
			got = append(got, n.Addr)
		}
		if s.Start != slotRanges[i][0] || s.End != slotRanges[i][1] || len(s.Nodes) == 0 ||
			s.Nodes[0].ID != ids[i] || strings.Join(got, ",") != strings.Join(want, ",") {
			return fmt.Errorf("%s: CLUSTER SLOTS has %d-%d on %+v, want %d-%d on %s %v",
				addr, s.Start, s.End, s.Nodes, slotRanges[i][0], slotRanges[i][1], ids[i], want)
		}
	}
	return nil
}

// replicaInSync returns nil once the replica at addr has its link to the
// primary up and has processed the primary's whole replication stream as
// of this call.
func replicaInSync(ctx context.Context, primary, replica string) error {
	p := redis.NewClient(&redis.Options{Addr: primary, DisableIdentity: true})
	defer p.Close()
	pinfo, err := p.Info(ctx, "replication").Result()
	if err != nil {
		return fmt.Errorf("%s: INFO replication: %w", primary, err)
	}
	want, _ := strconv.ParseInt(infoField(pinfo, "master_repl_offset"), 10, 64)
	r := redis.NewClient(&redis.Options{Addr: replica, DisableIdentity: true})
	defer r.Close()
	rinfo, err := r.Info(ctx, "replication").Result()
	if err != nil {
		return fmt.Errorf("%s: INFO replication: %w", replica, err)
	}
	if link := infoField(rinfo, "master_link_status"); link != "up" {
		return fmt.Errorf("%s: master_link_status:%s, want up", replica, link)
	}
	if host := infoField(rinfo, "master_host") + ":" + infoField(rinfo, "master_port"); host != primary {
		return fmt.Errorf("%s: replicates %s, want %s", replica, host, primary)
	}
	if got, _ := strconv.ParseInt(infoField(rinfo, "slave_repl_offset"), 10, 64); got < want {
		return fmt.Errorf("%s: at offset %d, primary %s at %d", replica, got, primary, want)
	}
	return nil
}

func ownerOf(slot int) int {
	for i, r := range slotRanges {
		if slot >= r[0] && slot <= r[1] {
			return i
		}
	}
	return 0
}

func addrsOf(nodes []*RedisServer) []string {
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.Addr
	}
	return addrs
}
