// Package testenv starts the real servers invitegate's tests run against:
// redis-server processes (single nodes and a 3-node Redis Cluster) and an
// embedded FerretDB as the MongoDB-wire server. Tests isolate themselves
// with KeyPrefix and DBName instead of wiping shared servers.
//
// A missing redis-server fails the test with an install hint; it is never
// skipped silently.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/invitegate/invitegate/internal/embedded"
)

// RedisOptions configure a redis-server.
type RedisOptions struct {
	AOF         bool
	AppendFsync string // "always" or "everysec" (default)
	Cluster     bool
}

// RedisServer is a redis-server child process.
type RedisServer struct {
	Addr string
	Dir  string
	port int
	opt  RedisOptions
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// StartRedis starts a redis-server on a free loopback port with its own
// directory; it is killed when the test ends.
func StartRedis(tb testing.TB, opt RedisOptions) *RedisServer {
	tb.Helper()
	dir, err := os.MkdirTemp("", "redis-")
	if err != nil {
		tb.Fatal(err)
	}
	r, err := startRedis(dir, opt)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		r.stop()
		os.RemoveAll(dir)
	})
	return r
}

func startRedis(dir string, opt RedisOptions) (*RedisServer, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf("redis-server not found on PATH: install it (apt-get install -y redis-server); the tests need a real Redis")
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort(opt.Cluster)
		if err != nil {
			return nil, err
		}
		r := &RedisServer{Addr: "127.0.0.1:" + strconv.Itoa(port), Dir: dir, port: port, opt: opt}
		if lastErr = r.launch(); lastErr == nil {
			return r, nil
		}
	}
	return nil, lastErr
}

// freePort returns a loopback port that is free now; for a cluster node the
// bus port (+10000) must be free too.
func freePort(cluster bool) (int, error) {
	for i := 0; i < 50; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !cluster {
			return port, nil
		}
		if port > 55535 {
			continue
		}
		bus, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000))
		if err != nil {
			continue
		}
		bus.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free port pair found")
}

func (r *RedisServer) launch() error {
	fsync := r.opt.AppendFsync
	if fsync == "" {
		fsync = "everysec"
	}
	aof := "no"
	if r.opt.AOF {
		aof = "yes"
	}
	args := []string{
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--dir", r.Dir,
		"--save", "", "--appendonly", aof, "--appendfsync", fsync, "--protected-mode", "no",
		"--daemonize", "no", "--logfile", "redis.log",
	}
	if r.opt.Cluster {
		args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
	}
	cmd := exec.Command("redis-server", args...)
	cmd.Dir = r.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	r.cmd, r.done = cmd, exited
	c := redis.NewClient(&redis.Options{Addr: r.Addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("redis-server exited at start: %s", r.logTail())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.stop()
	return fmt.Errorf("redis-server on %s did not answer PING: %s", r.Addr, r.logTail())
}

func (r *RedisServer) logTail() string {
	b, _ := os.ReadFile(filepath.Join(r.Dir, "redis.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return strings.Join(lines, "\n")
}

func (r *RedisServer) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Kill()
		<-r.done
	}
}

// Kill stops the server with SIGKILL and waits until it is gone.
func (r *RedisServer) Kill(tb testing.TB) {
	tb.Helper()
	r.stop()
}

// Restart starts the server again on the same port and directory (so an
// AOF is replayed) and waits until it answers.
func (r *RedisServer) Restart(tb testing.TB) {
	tb.Helper()
	var err error
	for i := 0; i < 50; i++ {
		if err = r.launch(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("restart redis-server: %v", err)
}

var (
	sharedRedisOnce sync.Once
	sharedRedis     *RedisServer
	sharedRedisErr  error
)

// SharedRedis returns the address of one redis-server shared by the test
// process; tests keep apart with KeyPrefix.
func SharedRedis(tb testing.TB) string {
	tb.Helper()
	sharedRedisOnce.Do(func() {
		dir, err := os.MkdirTemp("", "redis-shared-")
		if err != nil {
			sharedRedisErr = err
			return
		}
		sharedRedis, sharedRedisErr = startRedis(dir, RedisOptions{})
	})
	if sharedRedisErr != nil {
		tb.Fatal(sharedRedisErr)
	}
	return sharedRedis.Addr
}

var (
	sharedClusterOnce sync.Once
	sharedCluster     []string
	sharedClusterErr  error
)

// SharedRedisCluster returns the addresses of one 3-node Redis Cluster
// shared by the test process.
func SharedRedisCluster(tb testing.TB) []string {
	tb.Helper()
	sharedClusterOnce.Do(func() {
		sharedCluster, _, sharedClusterErr = startCluster()
	})
	if sharedClusterErr != nil {
		tb.Fatal(sharedClusterErr)
	}
	return sharedCluster
}

// StartRedisCluster starts a 3-node Redis Cluster of its own, stopped when
// the test ends.
func StartRedisCluster(tb testing.TB) []string {
	tb.Helper()
	addrs, nodes, err := startCluster()
	tb.Cleanup(func() {
		for _, n := range nodes {
			n.stop()
			os.RemoveAll(n.Dir)
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	return addrs
}

// startCluster starts three masters, splits the 16384 slots between them,
// introduces them with CLUSTER MEET and waits until every node reports
// cluster_state:ok and a cluster client reaches every node.
func startCluster() ([]string, []*RedisServer, error) {
	var nodes []*RedisServer
	var addrs []string
	for i := 0; i < 3; i++ {
		dir, err := os.MkdirTemp("", "redis-cluster-")
		if err != nil {
			return nil, nodes, err
		}
		n, err := startRedis(dir, RedisOptions{Cluster: true})
		if err != nil {
			return nil, nodes, err
		}
		nodes = append(nodes, n)
		addrs = append(addrs, n.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ranges := [][2]int{{0, 5460}, {5461, 10922}, {10923, 16383}}
	for i, n := range nodes {
		c := redis.NewClient(&redis.Options{Addr: n.Addr})
		err := c.ClusterAddSlotsRange(ctx, ranges[i][0], ranges[i][1]).Err()
		if err == nil && i > 0 {
			err = c.ClusterMeet(ctx, "127.0.0.1", strconv.Itoa(nodes[0].port)).Err()
		}
		c.Close()
		if err != nil {
			return nil, nodes, fmt.Errorf("cluster setup on %s: %w", n.Addr, err)
		}
	}
	for {
		if ok := clusterReady(ctx, addrs); ok {
			return addrs, nodes, nil
		}
		select {
		case <-ctx.Done():
			return nil, nodes, fmt.Errorf("redis cluster on %v did not become ready: %s", addrs, nodes[0].logTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func clusterReady(ctx context.Context, addrs []string) bool {
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		info, err := c.ClusterInfo(ctx).Result()
		c.Close()
		if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:3") {
			return false
		}
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer cc.Close()
	for i := 0; i < 30; i++ {
		k := fmt.Sprintf("{probe%d}", i)
		if err := cc.Set(ctx, k, "1", time.Minute).Err(); err != nil {
			return false
		}
	}
	return true
}

var (
	mongoOnce sync.Once
	mongoURI  string
	mongoErr  error
)

// Mongo returns the URI of an embedded FerretDB (SQLite) shared by the test
// process; tests keep apart with DBName.
func Mongo(tb testing.TB) string {
	tb.Helper()
	mongoOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ferretdb-")
		if err != nil {
			mongoErr = err
			return
		}
		mongoURI, _, mongoErr = embedded.StartFerretDB(context.Background(), dir, "127.0.0.1:0", nil)
	})
	if mongoErr != nil {
		tb.Fatal(mongoErr)
	}
	return mongoURI
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9]+`)

// DBName returns a database name unique to this test.
func DBName(tb testing.TB) string {
	name := unsafeChars.ReplaceAllString(tb.Name(), "_")
	if len(name) > 24 {
		name = name[len(name)-24:]
	}
	return "t" + randHex(4) + "_" + strings.Trim(name, "_")
}

// KeyPrefix returns a Redis key namespace unique to this test.
func KeyPrefix(tb testing.TB) string { return "t" + randHex(4) }

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
